"""Patch dropping and the MAE: masks from attention, the model, its storage, its training."""

import json

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


@pytest.mark.parametrize("precision, tol", [("float16", 2e-3), ("int8", None)])
def test_weights_round_trip(precision, tol):
    torch.manual_seed(0)
    model = MAE(MAEConfig(dim=48, heads=2, depth=1)).eval()
    blob = mae_to_bytes(model, precision)
    again = mae_from_bytes(blob)
    assert again.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        # int8: within half a step of the tensor's scale (max |w| / 127); vectors stay float16
        atol = tol if tol is not None and a.ndim >= 2 else float(a.abs().max()) / 254 * 1.001 if a.ndim >= 2 else 2e-3
        assert torch.allclose(a, b, atol=atol, rtol=2e-3 if a.ndim < 2 else 0), k
    assert b"pickle" not in blob[:200]
    with pytest.raises(DcqError, match="MAE"):
        mae_from_bytes(__import__("safetensors.numpy").numpy.save({"x": np.zeros(3, np.float32)}))


def test_int8_weights_are_a_quarter_of_float32_and_refill_alike():
    torch.manual_seed(0)
    model = MAE(MAEConfig()).eval()
    f16, i8 = mae_to_bytes(model, "float16"), mae_to_bytes(model, "int8")
    values = sum(p.numel() for p in model.parameters())
    assert len(f16) > 2 * values and len(i8) < 1.1 * values
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    dropped = random_drop(4, 64, 0.25, torch.Generator().manual_seed(0)).reshape(4, 8, 8)
    a, b = mae_from_bytes(f16).fill(images, dropped), mae_from_bytes(i8).fill(images, dropped)
    assert (a.int() - b.int()).abs().float().mean() < 2.0


def test_float16_format_1_still_reads():
    """Files written before int8 weights (format dcq-mae/1, every tensor F16) read unchanged."""
    from safetensors.numpy import save

    model = MAE(MAEConfig(dim=48, heads=2, depth=1)).eval()
    tensors = {k: v.numpy().astype(np.float16) for k, v in model.state_dict().items()}
    info = json.dumps({"format": "dcq-mae/1", "config": model.config.to_dict()}, sort_keys=True)
    again = mae_from_bytes(save(tensors, metadata={"dcq-mae": info}))
    assert torch.allclose(again.embed.weight, model.embed.weight, atol=2e-3)
    int8 = mae_to_bytes(model, "int8").replace(b"dcq-mae/2", b"dcq-mae/1")
    with pytest.raises(DcqError, match="expected dtype F16, found I8"):
        mae_from_bytes(int8)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_int8_scale_is_refused(scale):
    from safetensors.numpy import load, save

    model = MAE(MAEConfig(dim=48, heads=2, depth=1)).eval()
    blob = mae_to_bytes(model, "int8")
    tensors = load(blob)
    tensors["embed.weight.scale"] = np.array(scale, np.float32)
    info = json.dumps({"format": "dcq-mae/2", "config": model.config.to_dict()}, sort_keys=True)
    with pytest.raises(DcqError, match="embed.weight.scale"):
        mae_from_bytes(save(tensors, metadata={"dcq-mae": info}))
    del tensors["embed.weight.scale"]
    with pytest.raises(DcqError, match="embed.weight.scale"):
        mae_from_bytes(save(tensors, metadata={"dcq-mae": info}))


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
