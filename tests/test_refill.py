"""The refill path's fast parts: none/mean cropped straight from index maps (equal to refilling
decoded images, then cropping), the cache of refilled images shared by DataLoader workers, and
the MAE's size chosen from the data."""

import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import dcqformat
from dcqformat.decode import decode_images, resample_planes
from dcqformat.loaders import DCQDataset, RandomCrop, RandomResizedCrop
from dcqformat.loaders.cache import RefillCache
from dcqformat.loaders.reconstruct import Reconstructor, refill_and_crop
from dcqformat.loaders.tables import channel_tables
from dcqformat.mae import MAE, MAEConfig, mae_to_bytes
from dcqformat.mae.sizing import SIZES, mae_config, saved_bytes, size_name, weight_bytes
from dcqformat.quantize.drop import drop_mask, fill_errors


@pytest.fixture(scope="module")
def masked_file(tmp_path_factory):
    """Random 3-bit maps of two sizes, most samples with dropped patches, a few without."""
    path = tmp_path_factory.mktemp("refill") / "m.dcq"
    rng = np.random.default_rng(0)
    with dcqformat.DcqWriter(path, bits=3, palettes=rng.integers(0, 256, (3, 8, 3), dtype=np.uint8),
                             patch_size=4) as w:
        for i in range(40):
            h, w_ = (16, 12) if i % 3 else (9, 14)
            grid = (-(-h // 4), -(-w_ // 4))
            dropped = rng.random(grid) < 0.3 if i % 5 else None
            w.add(rng.integers(0, 8, (h, w_), dtype=np.uint8), palette=i % 3, label=i % 4, dropped=dropped)
    return path


def generic(r, idx, rec, tables, boxes, flips, size, bilinear, chw):
    """Refill decoded images, then crop them: the path every mode can take."""
    s = r.streams(idx)
    out = []
    for k in range(len(idx)):
        part = s.take(np.array([k]))
        h, w = part.size()
        full = decode_images(part, r.palette_set, np.empty((1, 3, h, w), np.uint8), True)
        filled = rec.fill(torch.from_numpy(full), torch.from_numpy(part.grids(rec.patch))).numpy()
        out.append(resample_planes(filled, tables, boxes[k : k + 1], flips[k : k + 1], size, bilinear, chw)[0])
    return np.stack(out)


@pytest.mark.parametrize("mode", ["none", "mean"])
@pytest.mark.parametrize("bilinear, chw, normalise", [(False, True, False), (True, False, True), (False, False, True),
                                                      (True, True, False)])
def test_indexed_path_equals_refill_then_crop(masked_file, mode, bilinear, chw, normalise):
    r = dcqformat.open(masked_file)
    idx = np.arange(len(r))
    rec = Reconstructor(mode, weights=None, patch=(4, 4))
    tables = channel_tables(3, [0.4, 0.5, 0.6] if normalise else None, [0.2, 0.3, 0.25] if normalise else None,
                            normalise)
    aug = RandomResizedCrop(10, scale=(0.3, 1.0)) if bilinear else RandomCrop(10, padding=3, flip=0.5)
    boxes, flips = aug.windows(r.field("height")[idx], r.field("width")[idx], torch.Generator().manual_seed(1))
    got, hidden = refill_and_crop(r.streams(idx), r.palette_set, rec, tables, boxes, flips, (10, 10), bilinear, chw,
                                  masks=True)
    assert (hidden is None) == (mode == "mean")
    want = generic(r, idx, rec, tables, boxes, flips, (10, 10), bilinear, chw)
    np.testing.assert_array_equal(got, want)
    if mode == "none":  # the output's dropped pixels: the pixel masks cropped the same way
        masks = []
        for i in idx.tolist():
            m = np.zeros((1, 1, *r.shapes[i]), np.uint8)
            if r.mask(i) is not None:
                m[0, 0] = r.mask(i).repeat(4, 0).repeat(4, 1)[: r.shapes[i][0], : r.shapes[i][1]]
            masks.append(resample_planes(m, channel_tables(1, None, None, False), boxes[i : i + 1], flips[i : i + 1],
                                     (10, 10), False, True)[0, 0] != 0)
        np.testing.assert_array_equal(hidden, np.stack(masks))


def test_cache_keeps_refills_within_its_bound(tmp_path):
    shapes = np.array([[4, 5, 3], [6, 2, 3], [4, 5, 3], [8, 8, 3]])
    cache = RefillCache(shapes, limit=60 + 36, directory=tmp_path)  # room for the first two only
    assert cache.count == 2 and os.path.getsize(cache.path) == 2 + 60 + 36
    images = [np.full((3, h, w), i + 1, np.uint8) for i, (h, w, _) in enumerate(shapes)]
    out = np.zeros((1, 3, 4, 5), np.uint8)
    assert not cache.get(np.array([0]), out).any()
    cache.put(np.array([0]), images[0][None])
    cache.put(np.array([2]), images[2][None])  # past the bound: not kept
    assert cache.get(np.array([0]), out).tolist() == [True] and (out == 1).all()
    assert cache.get(np.array([2]), out).tolist() == [False]
    with pytest.raises(ValueError, match="expected"):
        cache.put(np.array([1]), images[0][None])
    path = cache.path
    cache.close()
    assert not os.path.exists(path)


def test_cache_is_shared_by_workers_and_equals_refilling(tmp_path, masked_file, monkeypatch):
    monkeypatch.setenv("DCQ_CACHE_DIR", str(tmp_path))
    r = dcqformat.open(masked_file)
    same = np.flatnonzero((r.shapes == [16, 12]).all(1))
    ds = DCQDataset(masked_file, reconstruct="smooth")
    assert ds.refill_cache is not None and os.path.dirname(ds.refill_cache.path) == str(tmp_path)
    loader = DataLoader(ds, batch_size=8, num_workers=2, sampler=same.tolist())
    first = torch.cat([x for x, _ in loader])
    flags = np.fromfile(ds.refill_cache.path, np.uint8, count=len(r))
    assert flags[same].all() and not flags[np.setdiff1d(np.arange(len(r)), same)].any()  # written by the workers
    again = torch.cat([x for x, _ in loader])  # read back from the cache
    plain = DCQDataset(masked_file, reconstruct="smooth", refill_cache=False)
    assert plain.refill_cache is None
    assert torch.equal(first, again) and torch.equal(first, plain.get_batch(same)[0])
    path = ds.refill_cache.path
    del ds, loader
    import gc

    gc.collect()
    assert not os.path.exists(path)  # the dataset that made it is gone
    assert DCQDataset(masked_file, reconstruct="mean").refill_cache is None  # cheap modes need none


def test_mae_size_follows_the_data():
    kw = {"height": 32, "width": 32, "channels": 3, "patch": 4, "fraction": 0.25, "bits": 2}
    def auto(images, codec="packed", drop_by="fill"):
        config = mae_config("auto", images=images, codec=codec, drop_by=drop_by, **kw)
        return None if config is None else size_name(config)

    assert auto(2000) is None and auto(10000) == "tiny" and auto(50000) == "small"
    # the entropy codecs code the smooth patches that the fill criterion drops in few bits, so
    # dropping them saves less there, and buys a smaller model than dropping attended-to ones
    assert auto(1_281_167, "ctx") == "small" and auto(1_281_167, "ctx", "attention") == "large"
    assert auto(50000, "ctx") is None and auto(50000, "ctx", "attention") == "tiny"
    assert size_name(mae_config("small", images=10, codec="ctx", **kw)) == "small"
    assert mae_config("none", images=10**9, codec="packed", **kw) is None
    for name in SIZES:
        config = mae_config(name, images=1, codec="packed", **kw)
        assert config is not None and config.prior == 1
        assert weight_bytes(config) == len(mae_to_bytes(MAE(config), "int8"))
        assert weight_bytes(config, "float16") > 1.7 * weight_bytes(config)
    # the tiny model pays for itself from a few hundred CIFAR-sized images (packed 2-bit, 25% dropped)
    tiny = mae_config("tiny", images=1, codec="packed", **kw)
    assert tiny is not None and weight_bytes(tiny) / saved_bytes(1, 32, 32, 4, 0.25, 2, "packed") < 1000


def test_few_images_get_no_mae_and_refill_smoothly(tmp_path):
    """auto on 60 images: no model would pay, so none is trained or stored; the loaders refill
    with the harmonic fill, and the file is smaller than without dropping."""
    from dcqformat.cli import sample_data
    from dcqformat.conversion import convert

    photos = sample_data.load_photo_crops(32)
    np.savez(tmp_path / "x.npz", x=np.stack(photos.images)[:60], y=photos.labels[:60])
    fast = {"model_epochs": 1, "refine_steps": 1, "clusters": 3, "progress": False}
    dropped = convert(str(tmp_path / "x.npz"), tmp_path / "d.dcq", drop_patches=0.25, **fast)
    plain = convert(str(tmp_path / "x.npz"), tmp_path / "p.dcq", **fast)
    with dcqformat.open(tmp_path / "d.dcq") as r:
        assert r.weights_blob() is None and "mae" not in r.meta and r.patch_size == (4, 4)
        assert r.meta["drop"]["by"] == "fill"  # the default: the patches the fill restores best
        order = np.argsort(r.source_indices)
        errors = fill_errors(list(np.stack(photos.images)[:60]), 4)
        for i in range(len(r)):
            mask = r.mask(int(order[i]))
            assert mask.sum() == 16 and np.array_equal(mask, drop_mask(errors[i], 0.25))
    assert dropped.mae_bytes == 0 and not dropped.mae and dropped.file_bytes < plain.file_bytes
    ds = DCQDataset(tmp_path / "d.dcq")
    assert ds.reconstructor is not None and ds.reconstructor.mode == "smooth"
    assert ds.get_batch(np.arange(8))[0].shape == (8, 3, 32, 32)


def test_auto_keeps_no_mae_that_does_not_beat_the_fill(tmp_path, monkeypatch):
    """auto's MAE must refill held-out images at least MIN_GAIN_DB better than the harmonic fill:
    one that has barely trained is not stored; a size asked for is, with the check's figures."""
    from dcqformat.cli import sample_data
    from dcqformat.conversion import convert
    from dcqformat.quantize import attention

    photos = sample_data.load_photo_crops(40)
    np.savez(tmp_path / "x.npz", x=np.stack(photos.images), y=photos.labels)
    tiny = mae_config("tiny", images=1, height=32, width=32, channels=3, patch=4, fraction=0.25, bits=2,
                      codec="packed")
    monkeypatch.setattr(attention, "mae_config", lambda *a, **k: tiny)  # as if the dataset were large
    fast = {"model_epochs": 1, "refine_steps": 1, "clusters": 3, "mae_epochs": 1, "progress": False,
            "drop_patches": 0.25}
    auto = convert(str(tmp_path / "x.npz"), tmp_path / "a.dcq", **fast)
    asked = convert(str(tmp_path / "x.npz"), tmp_path / "t.dcq", mae_size="tiny", **fast)
    assert auto.mae_bytes == 0 and dcqformat.open(tmp_path / "a.dcq").weights_blob() is None
    meta = dcqformat.open(tmp_path / "t.dcq").meta["mae"]
    assert asked.mae_bytes > 0 and meta["holdout_images"] == 4
    assert abs(meta["holdout_psnr"] - meta["holdout_fill_psnr"]) < attention.MIN_GAIN_DB


def test_prior_model_starts_at_the_harmonic_fill():
    """An untrained prior-1 MAE's head is zero: it returns the harmonic fill exactly."""
    torch.manual_seed(0)
    model = MAE(MAEConfig(dim=32, heads=2, depth=1, decoder_dim=32, prior=1)).eval()
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    dropped = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.3
    want = Reconstructor("smooth", weights=None, patch=(4, 4)).fill(images.clone(), dropped)
    assert torch.equal(model.fill(images, dropped), want)


def test_none_masks_of_8_bit_files(tmp_path):
    """8-bit maps (every index in use): the "none" masks still mark the dropped pixels."""
    path = tmp_path / "e.dcq"
    rng = np.random.default_rng(1)
    dropped = rng.random((3, 4, 4)) < 0.4
    with dcqformat.DcqWriter(path, bits=8, palettes=rng.integers(0, 256, (1, 256, 3), dtype=np.uint8),
                             patch_size=4) as w:
        for d in dropped:
            w.add(rng.integers(0, 256, (16, 16), dtype=np.uint8), palette=0, label=0, dropped=d)
    ds = DCQDataset(path, reconstruct="none", layout="HWC")
    images, _, masks = ds.get_batch(np.arange(3), masks=True)
    want = torch.from_numpy(dropped.repeat(4, 1).repeat(4, 2))
    assert torch.equal(masks, want) and not images[want].any()
