"""Patch dropping end to end: `dcq convert --drop-patches`, the MAE in the file, and
reconstruction in DCQDataset (workers), the device decoder, the WebDataset pipeline and export."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import dcqformat
from dcqformat import DcqError
from dcqformat.cli import sample_data
from dcqformat.conversion import ConvertConfig, convert
from dcqformat.decode import bitpack
from dcqformat.decode.inpaint import OMEGA, iterations, smooth_fill
from dcqformat.loaders import DCQDataset, RandomCrop
from dcqformat.mae import load_mae

FAST = {"model_epochs": 1, "model_images": 200, "refine_steps": 2, "refine_images": 4, "clusters": 4,
        "mae_epochs": 4, "mae_images": 200, "mae_size": "tiny"}


@pytest.fixture(scope="module")
def dropped_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("drop")
    photos = sample_data.load_photo_crops(48)
    x = np.stack([im[:32, :32] for im in photos.images])
    np.savez(d / "x.npz", x=x, y=photos.labels)
    summary = convert(str(d / "x.npz"), d / "d.dcq", ConvertConfig(drop_patches=0.25, drop_by="both", **FAST),
                      progress=False)
    plain = convert(str(d / "x.npz"), d / "p.dcq", ConvertConfig(**FAST), progress=False)
    return d, x, summary, plain


def hidden_pixels(r, i):
    h, w = r.shapes[i]
    return bitpack.dropped_pixels(r.mask(i), *r.patch_size, h, w)


def test_convert_drops_a_quarter_by_fill_and_attention_and_embeds_the_mae(dropped_file):
    d, x, summary, plain = dropped_file
    r = dcqformat.open(d / "d.dcq", verify=True)
    assert r.patch_size == (4, 4) and len(r) == len(x)
    for i in range(len(r)):
        assert r.mask(i).shape == (8, 8) and r.mask(i).sum() == 16
    assert r.meta["drop"]["fraction"] == 0.25 and r.meta["mae"]["config"]["patch"] == 4
    assert r.meta["drop"]["by"] == "both" and "Grad-CAM++" in r.meta["drop"]["importance"]
    assert r.weights_blob() is not None and summary.mae["steps"] > 0
    # the payload shrinks by the dropped quarter (the MAE weights come on top)
    payload = sum(len(r.payload(i)) for i in range(len(r)))
    assert payload == len(r) * 3 * 16 * 2 // 8 * 16
    with dcqformat.open(d / "p.dcq") as p:
        assert sum(len(p.payload(i)) for i in range(len(p))) * 3 == payload * 4
    # the summary weighs what dropping saved against what the masks and the MAE cost
    assert summary.dropped_pixels == len(r) * 16 * 16 and summary.mask_bytes == len(r) * 8
    assert summary.mae_bytes == len(r.weights_blob()) and plain.drop_balance(2) is None
    saved = len(r) * (16 * 16 * 2 // 8 - 8)
    assert summary.drop_balance(2).startswith(f"{saved:,} B of pixels saved")
    assert f"from about {summary.mae_bytes * len(r) / saved:,.0f} images" in summary.drop_balance(2)


@pytest.mark.parametrize("mode", ["mae", "smooth", "mean", "none"])
def test_dataset_modes_keep_visible_pixels(dropped_file, mode):
    d, x, _, _ = dropped_file
    r = dcqformat.open(d / "d.dcq")
    ds = DCQDataset(d / "d.dcq", reconstruct=mode, layout="HWC")
    items = ds.__getitems__(list(range(8)))
    for i, item in enumerate(items):
        img = item[0].numpy()
        hidden = hidden_pixels(r, i)
        plain = r.decode(i)  # zeros where dropped
        assert np.array_equal(img[~hidden], plain[~hidden])
        assert len(item) == 2
        if mode == "none":
            mask = ds.get_batch([i], masks=True)[2][0]
            assert torch.equal(mask, torch.from_numpy(hidden)) and not img[hidden].any()
        elif mode == "mean":
            kept = plain[~hidden].astype(np.float64).mean(0)
            assert np.abs(img[hidden].astype(np.float64) - kept).max() <= 0.5 + 1e-9
        elif mode == "smooth":
            planes = np.ascontiguousarray(plain.transpose(2, 0, 1))[None]
            want = smooth_fill(planes, hidden[None], iterations(4), OMEGA)[0].transpose(1, 2, 0)
            assert np.array_equal(img, want)
        else:
            assert img[hidden].any()  # filled with something


def test_mae_mode_is_the_files_mae_and_snap_uses_the_palette(dropped_file):
    """(How well a trained MAE fills is tested in test_mae.py; this file's MAE had 4 steps.)"""
    d, _, _, _ = dropped_file
    r = dcqformat.open(d / "d.dcq")
    idx = np.arange(10)
    out = DCQDataset(d / "d.dcq").get_batch(idx)[0]
    model = load_mae(d / "d.dcq")
    grids = torch.from_numpy(np.stack([r.mask(i) for i in idx]))
    assert torch.equal(out, model.fill(torch.from_numpy(r.decode_batch(idx, layout="NCHW")), grids))
    snapped = DCQDataset(d / "d.dcq", snap=True, layout="HWC").get_batch(np.arange(4))[0].numpy()
    for i in range(4):
        colours = {tuple(c) for c in r.palettes[r.palette_ids[i]]}
        assert {tuple(c) for c in snapped[i].reshape(-1, 3)} <= colours


def test_augment_float_and_workers(dropped_file):
    d, _, _, _ = dropped_file
    ds = DCQDataset(d / "d.dcq", augment=RandomCrop(32, padding=4, flip=0.5), mean=[0.5] * 3, std=[0.25] * 3)
    loader = DataLoader(ds, batch_size=16, num_workers=2, shuffle=True)
    seen = 0
    for images, labels in loader:
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32)
        seen += len(labels)
    assert seen == len(ds)
    nolearn = DCQDataset(d / "d.dcq", reconstruct="none", augment=RandomCrop(32, padding=4, flip=0.5))
    img, _, mask = nolearn.get_batch(np.arange(4), torch.Generator().manual_seed(0), masks=True)
    assert all(len(item) == 2 for item in nolearn.__getitems__([0, 1]))  # items stay (image, label)
    assert mask.shape == (4, 32, 32) and not img.permute(0, 2, 3, 1)[mask].any()


def test_device_decoder_equals_the_cpu_path(dropped_file):
    d, _, _, _ = dropped_file
    for mode in ("mae", "smooth", "mean", "none"):
        ds = DCQDataset(d / "d.dcq", reconstruct=mode)
        batch = next(iter(DataLoader(ds.packed_view(), batch_size=12)))
        packed, pids, grids, labels = batch
        out = ds.device_decoder(dtype=torch.uint8)(packed, pids, grids)
        cpu = DCQDataset(d / "d.dcq", reconstruct=mode).get_batch(np.arange(12))[0]
        assert torch.equal(out, cpu), mode


def test_file_without_mae_and_reuse(dropped_file, tmp_path):
    d, _, _, _ = dropped_file
    cfg = ConvertConfig(drop_patches=0.5, mae=str(d / "d.dcq"), **FAST)
    convert(str(d / "x.npz"), tmp_path / "r.dcq", cfg, progress=False)
    with dcqformat.open(tmp_path / "r.dcq") as r, dcqformat.open(d / "d.dcq") as src:
        assert r.weights_blob() == src.weights_blob() and r.mask(0).sum() == 32
    with pytest.raises(DcqError, match="4 px patches, the drop masks use 8"):  # an MAE must fit the masks
        convert(str(d / "x.npz"), tmp_path / "bad.dcq", ConvertConfig(drop_patches=0.25, patch_size=8,
                                                                      mae=str(d / "d.dcq"), **FAST), progress=False)
    # a masked file without weights: 'mae' says what is missing; the default refills smoothly
    w = dcqformat.DcqWriter(tmp_path / "m.dcq", bits=2, palettes=np.zeros((1, 4, 3), np.uint8), patch_size=4)
    w.add(np.zeros((8, 8), np.uint8), palette=0, label=0, dropped=np.array([[1, 0], [0, 0]], bool))
    w.close()
    with pytest.raises(DcqError, match="MAE weights"):
        DCQDataset(tmp_path / "m.dcq", reconstruct="mae")
    assert DCQDataset(tmp_path / "m.dcq").reconstructor.mode == "smooth"
    assert DCQDataset(tmp_path / "m.dcq", reconstruct="mean")[0][0].shape == (3, 8, 8)


def test_cli_convert_info_export_reconstruct(dropped_file, tmp_path):
    d, _, _, _ = dropped_file
    r = subprocess.run([sys.executable, "-m", "dcqformat", "convert", str(d / "x.npz"), str(tmp_path / "c.dcq"),
                        "--drop-patches", "0.25", "--mae", str(d / "d.dcq"), "--epochs", "1", "--refine-steps", "1",
                        "--clusters", "3", "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = subprocess.run([sys.executable, "-m", "dcqformat", "info", str(tmp_path / "c.dcq")],
                          capture_output=True, text=True, timeout=120)
    assert "drop" in info.stdout and "MAE" in info.stdout, info.stdout
    out = subprocess.run([sys.executable, "-m", "dcqformat", "export", str(tmp_path / "c.dcq"),
                          str(tmp_path / "e.npz")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    exported = np.load(tmp_path / "e.npz")["x"]
    with dcqformat.open(tmp_path / "c.dcq") as f:
        hidden = hidden_pixels(f, 0)
        assert exported[0][hidden].any() and np.array_equal(exported[0][~hidden], f.decode(0)[~hidden])


def test_webdataset_pipeline_refills_like_the_dataset(dropped_file, tmp_path):
    from dcqformat.loaders.wds import BatchDecoder, dcq_pipeline, parse_dcqi, write_shards

    d, _, _, _ = dropped_file
    side, shards = write_shards(d / "d.dcq", str(tmp_path / "s-%06d.tar"), maxcount=20)
    with dcqformat.open(side) as sc:
        assert sc.patch_size == (4, 4) and sc.weights_blob() is not None
    r = dcqformat.open(d / "d.dcq")
    from dcqformat.loaders.wds import encode_dcqi

    samples = [(parse_dcqi(encode_dcqi(r, i)), int(r.labels[i])) for i in range(12)]
    for mode in ("mae", "smooth", "mean", "none"):
        got = BatchDecoder(side, reconstruct=mode)(samples)
        want = DCQDataset(d / "d.dcq", reconstruct=mode).get_batch(np.arange(12))
        assert all(torch.equal(a, b) for a, b in zip(got, want)), mode
    pipe = dcq_pipeline(str(tmp_path / "s-{000000..000002}.tar"), side, batch_size=16, shuffle=0,
                        augment=RandomCrop(32, padding=4, flip=0.5), mean=[0.5] * 3, std=[0.25] * 3)
    n = sum(len(y) for _, y in DataLoader(pipe, batch_size=None, num_workers=2))
    assert n == len(r) and len(shards) == 3
