"""Patch dropping and the MAE: masks from attention, the model, its storage, its training."""

import json

import numpy as np
import pytest
import torch

from dcqformat import DcqError
from dcqformat.mae import MAE, MAEConfig, mae_from_bytes, mae_to_bytes, random_drop, train_mae
from dcqformat.quantize.drop import drop_mask, drop_scores, fill_errors, native_patch


def test_drop_mask_takes_the_least_attended_patches():
    cam = np.zeros((10, 12), np.float32)
    cam[:4, :4] = 1.0  # patch (0, 0) most attended
    cam[8:, 8:] = 0.5  # the clipped corner patch (2, 2), averaged over its own 2x4 pixels
    cam[4:8, 4:8] = 0.25
    scores = drop_scores("attention", cam, None, 4)
    mask = drop_mask(scores, 0.5)
    assert mask.shape == (3, 3) and mask.sum() == 5
    assert not mask[0, 0] and not mask[2, 2] and not mask[1, 1]
    assert mask.reshape(-1).tolist() == [False, True, True, True, False, True, True, False, False]
    assert drop_mask(scores, 0.0).sum() == 0
    assert native_patch(32, 32) == 4 and native_patch(224, 224) == 16


def _textured(h, w, c, rough):
    """A smooth ramp, with noise on the patches listed in ``rough`` (4 px patches)."""
    y, x = np.mgrid[:h, :w]
    img = np.repeat(((y * 3 + x * 2) % 256)[..., None], c, 2).astype(np.float64)
    rng = np.random.default_rng(0)
    for gy, gx in rough:
        img[gy * 4:(gy + 1) * 4, gx * 4:(gx + 1) * 4] += rng.normal(0, 40, (4, 4, c))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(32, 32, 3), (18, 13, 1)])
def test_fill_error_scores_rough_patches_high_and_smooth_ones_zero(shape):
    rough = [(0, 0), (1, 2), (3, 1)]
    img = _textured(*shape, rough)
    err = fill_errors([img, img[..., ::-1].copy()], 4)[0]
    assert err.shape == (-(-shape[0] // 4), -(-shape[1] // 4))
    smooth = np.ones_like(err, bool)
    for gy, gx in rough:
        smooth[gy, gx] = False
    assert err[~smooth].min() > 20 * max(float(np.median(err[smooth])), 1.0)
    # the fill of a patch alone reads only its own border: a rough patch raises its neighbours'
    # error only where they touch it, so the dropped set is the smooth interior
    mask = drop_mask(drop_scores("fill", None, err, 4), 0.25)
    assert not mask[~smooth].any()


def test_fill_error_of_large_patches_is_scored_at_a_quarter_scale():
    img = np.zeros((64, 48, 3), np.uint8)
    img[16:32, 16:32] = np.random.default_rng(1).integers(0, 255, (16, 16, 3))
    err = fill_errors([img], 16)[0]
    assert err.shape == (4, 3) and np.argmax(err) == 1 * 3 + 1 and (np.delete(err.reshape(-1), 4) < err[1, 1]).all()


def test_both_weighs_the_fill_error_by_attention():
    err = np.array([[1.0, 1.0], [0.0, 4.0]], np.float32)
    cam = np.zeros((8, 8), np.float32)
    cam[:4, :4] = 3.0  # patch (0, 0) is looked at
    scores = drop_scores("both", cam, err, 4)
    assert scores[1, 0] == 0  # restored exactly: cheap whatever the attention
    assert scores[0, 0] > scores[0, 1]  # same error, more attention
    assert drop_mask(scores, 0.5).reshape(-1).tolist() == [False, True, True, False]


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


def test_training_uses_each_images_own_mask_flipped_with_it(monkeypatch):
    """With ``masks``, every step hides each image's own patches, mirrored when the image is."""
    n = 40
    imgs = np.zeros((n, 8, 8, 3), np.uint8)
    for i in range(n):
        imgs[i, :, :4], imgs[i, :, 4:] = i, 200 + i  # the left half names the image, and shows a flip
    masks = np.random.default_rng(0).random((n, 2, 2)) < 0.5
    seen = []
    original = MAE.loss

    def spy(self, x, dropped, prior=None):
        seen.append((x.detach().clone(), dropped.clone()))
        return original(self, x, dropped, prior)

    monkeypatch.setattr(MAE, "loss", spy)
    train_mae(imgs, 0.25, MAEConfig(dim=16, heads=2, depth=1, decoder_dim=16), epochs=3, batch=8, seed=1, masks=masks)
    flips = 0
    for x, dropped in seen:
        for row, d in zip(x, dropped):
            left = round(float(row[0, 0, 0]) * 255)
            flipped = left >= 200
            own = masks[left - 200 if flipped else left]
            flips += flipped
            assert d.reshape(2, 2).numpy().tolist() == (own[:, ::-1] if flipped else own).tolist()
    assert 0 < flips < sum(len(x) for x, _ in seen)


def test_holdout_psnr_of_an_untrained_prior_model_is_the_fills():
    """The head starts at zero: an untrained prior model refills exactly like the harmonic fill,
    so it gains 0 dB on held-out images (and auto would not keep it)."""
    from dcqformat.mae.train import holdout_psnr

    torch.manual_seed(0)
    model = MAE(MAEConfig(dim=16, heads=2, depth=1, decoder_dim=16, prior=1)).eval()
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    masks = rng.random((12, 4, 4)) < 0.3
    fill_db, mae_db = holdout_psnr(model, imgs, masks, batch=5)
    assert fill_db == mae_db and 0 < fill_db < 30
