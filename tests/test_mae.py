"""Patch dropping and the MAE: masks from attention, the model, its storage, its training."""

import numpy as np
import pytest
import torch

from dcqformat import DcqError
from dcqformat.mae import MAE, MAEConfig, mae_from_bytes, mae_to_bytes, random_drop, train_mae
from dcqformat.quantize.drop import drop_mask, native_patch


def test_drop_mask_takes_the_least_attended_patches():
    cam = np.zeros((10, 12), np.float32)
    cam[:4, :4] = 1.0  # patch (0, 0) most attended
    cam[8:, 8:] = 0.5  # the clipped corner patch (2, 2), averaged over its own 2x4 pixels
    cam[4:8, 4:8] = 0.25
    mask = drop_mask(cam, 4, 0.5)
    assert mask.shape == (3, 3) and mask.sum() == 5
    assert not mask[0, 0] and not mask[2, 2] and not mask[1, 1]
    assert mask.reshape(-1).tolist() == [False, True, True, True, False, True, True, False, False]
    assert drop_mask(cam, 4, 0.0).sum() == 0
    assert native_patch(32, 32) == 4 and native_patch(224, 224) == 16


def test_random_drop_counts():
    d = random_drop(50, 64, 0.25, torch.Generator().manual_seed(0))
    assert (d.sum(1) == 16).all() and d.float().mean(0).min() > 0  # every position gets dropped sometimes


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (3, 1, 13, 18)])
def test_fill_keeps_visible_pixels_and_ignores_hidden_ones(shape):
    torch.manual_seed(0)
    model = MAE(MAEConfig(channels=shape[1])).eval()
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    gh, gw = model.grid(*shape[2:])
    dropped = random_drop(shape[0], gh * gw, 0.4, torch.Generator().manual_seed(1)).reshape(-1, gh, gw)
    out = model.fill(images, dropped)
    pixel = dropped.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None, : shape[2], : shape[3]].expand(shape)
    assert torch.equal(out[~pixel], images[~pixel])
    # what the hidden pixels held does not matter: the encoder never sees them
    scrambled = torch.where(pixel, torch.randint(0, 256, shape, dtype=torch.uint8), images)
    assert torch.equal(model.fill(scrambled, dropped), out)


def test_weights_round_trip_as_float16_safetensors():
    torch.manual_seed(0)
    model = MAE(MAEConfig(dim=48, heads=2, depth=1)).eval()
    blob = mae_to_bytes(model)
    again = mae_from_bytes(blob)
    assert again.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.allclose(a, b, atol=2e-3, rtol=2e-3), k
    assert b"pickle" not in blob[:200]
    with pytest.raises(DcqError, match="MAE"):
        mae_from_bytes(__import__("safetensors.numpy").numpy.save({"x": np.zeros(3, np.float32)}))


def test_training_learns_to_fill_better_than_the_mean():
    """Images of smooth gradients: a trained MAE predicts hidden patches far better than the
    mean colour of the visible ones."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16] / 15.0
    a, b, c = rng.random((3, 600, 1, 1))
    imgs = np.stack([a * yy + (1 - a) * xx, b * xx, c * (1 - yy)], -1) * 255
    imgs = imgs.astype(np.uint8)
    model, report = train_mae(imgs, 0.25, MAEConfig(dim=48, heads=2, depth=2, decoder_dim=32), epochs=40,
                              batch=64, lr=3e-3, seed=0)
    assert report.steps == report.steps_planned and report.last_loss < report.first_loss / 3
    test = torch.from_numpy(imgs[:64]).permute(0, 3, 1, 2).contiguous()
    dropped = random_drop(64, 16, 0.25, torch.Generator().manual_seed(5)).reshape(64, 4, 4)
    filled = model.fill(test, dropped)
    pixel = dropped.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None].expand_as(test)
    mae_err = (filled.float() - test.float())[pixel].pow(2).mean()
    means = (test.float() * ~pixel).sum((2, 3), keepdim=True) / (~pixel).sum((2, 3), keepdim=True)
    mean_err = (means.expand_as(test) - test.float())[pixel].pow(2).mean()
    assert mae_err < mean_err / 3, (float(mae_err), float(mean_err))
