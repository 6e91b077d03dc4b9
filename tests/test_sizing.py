"""Real photos (issue 18, item 3): --resize / --center-crop / --max-size applied while reading,
JPEGs decoded at reduced scale, bounded memory, and the loaders' RandomResizedCrop on the result."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dcqformat
from dcqformat.loaders import DCQDataset, RandomResizedCrop
from dcqformat.pipeline.imaging import shrink
from dcqformat.pipeline.sources import Sizing, to_array


def photo(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A smooth random 'photo' (gradients and blobs), cheap to make at any size."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).convert(mode)


def test_sizing_rules():
    assert Sizing(short_side=224).target(4000, 3000) == (299, 224)
    assert Sizing(short_side=224).target(100, 50) == (448, 224)  # the short side is set, up or down
    assert Sizing(max_side=500).target(4000, 3000) == (500, 375)
    assert Sizing(max_side=500).target(300, 200) == (300, 200)  # never up
    assert Sizing(short_side=224, max_side=256).target(4000, 1000) == (256, 64)
    img = photo(640, 480, 0)
    assert Sizing(short_side=64, center_crop=True).apply(img).size == (64, 64)
    assert not Sizing() and Sizing(max_side=3)


def test_jpeg_decodes_at_reduced_scale():
    buf = io.BytesIO()
    photo(4000, 3000, 1).save(buf, format="JPEG", quality=90)
    out = to_array(buf.getvalue(), 3, "drop", Sizing(short_side=224, center_crop=True))
    assert out.shape == (224, 224, 3)
    full = to_array(buf.getvalue(), 3, "drop")  # the same crop from the full decode is close
    ref = np.asarray(Sizing(short_side=224, center_crop=True).apply(Image.fromarray(full)))
    assert np.abs(out.astype(int) - ref.astype(int)).mean() < 4


def test_shrink_bounds_pixels_and_keeps_aspect():
    img = np.asarray(photo(1000, 500, 2))
    small = shrink(img, 160 * 160)
    assert small.shape[0] * small.shape[1] <= 160 * 160 and abs(small.shape[1] / small.shape[0] - 2) < 0.05
    assert shrink(img[:10, :10], 100) is not None and shrink(img[:5, :5], 100).shape == (5, 5, 3)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """An ImageFolder of large JPEGs of varying sizes and aspects, one grayscale, one tiny."""
    root = tmp_path_factory.mktemp("photos")
    sizes = [(1600, 1200), (1200, 1600), (2000, 900), (800, 600), (30, 20), (1400, 1000)]
    for k, (w, h) in enumerate(sizes * 2):
        d = root / f"class{k % 3}"
        d.mkdir(exist_ok=True)
        photo(w, h, k, "L" if k == 3 else "RGB").save(d / f"{k}.jpg", quality=85)
    return root


def test_convert_resizes_on_the_way_in_and_loaders_crop(photos, tmp_path):
    out = tmp_path / "crop.dcq"
    s = dcqformat.convert(str(photos), out, bits=2, resize=64, center_crop=True, clusters=4, model_epochs=1,
                          progress=False)
    assert s.written == 12
    r = dcqformat.open(out, verify=True)
    assert set(r.field("height").tolist()) == {64} and set(r.field("width").tolist()) == {64}
    assert r.metadata.raw["quantizer"]["config"]["resize"] == 64
    keep = tmp_path / "keep.dcq"
    dcqformat.convert(str(photos), keep, method="mediancut", bits=2, max_size=100, progress=False)
    r = dcqformat.open(keep)
    sides = sorted(zip(r.field("width").tolist(), r.field("height").tolist()))
    assert (30, 20) in sides and (100, 75) in sides and (75, 100) in sides and (100, 45) in sides
    ds = DCQDataset(keep, augment=RandomResizedCrop(48, flip=0.5), mean=[0.5] * 3, std=[0.25] * 3)
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=12, num_workers=2)))
    assert x.shape == (12, 3, 48, 48) and x.dtype == torch.float32 and len(y) == 12


# The child's own peak RSS in kB. Not getrusage's ru_maxrss: Linux carries the parent's RSS at
# fork over to the child across exec, so from a large pytest process it reports pytest's size.
PEAK_KB = "[int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]"


def test_large_photos_convert_in_bounded_memory(tmp_path):
    """Six 6000x4000 JPEGs through DCQ with --resize 224: the process's peak RSS stays under 1.5 GB
    (decoded at full size, one would be 72 MB; the image cache, refinement and assignment would
    follow the full size too)."""
    root = tmp_path / "big" / "a"
    root.mkdir(parents=True)
    for k in range(6):
        photo(6000, 4000, 10 + k).save(root / f"{k}.jpg", quality=80)
    code = (f"import dcqformat; s = dcqformat.convert({str(root.parent)!r}, {str(tmp_path / 'big.dcq')!r}, "
            f"bits=2, resize=224, clusters=2, model_epochs=1, progress=False); print(s.written, {PEAK_KB})")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    written, peak_kb = map(int, run.stdout.split())
    assert written == 6 and peak_kb < 1.5 * 2**20, f"peak RSS {peak_kb / 2**20:.2f} GB"
    r = dcqformat.open(tmp_path / "big.dcq")
    assert set(r.field("height").tolist()) == {224} and set(r.field("width").tolist()) == {336}


def test_cli_flags(photos, tmp_path):
    bad = subprocess.run([sys.executable, "-m", "dcqformat", "convert", str(photos), str(tmp_path / "x.dcq"),
                          "--center-crop"], capture_output=True, text=True)
    assert bad.returncode == 2 and "center_crop" in bad.stderr.replace("-", "_")
    ok = subprocess.run([sys.executable, "-m", "dcqformat", "convert", str(photos), str(tmp_path / "y.dcq"),
                         "--method", "mediancut", "--resize", "32", "--center-crop", "--quiet"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert Path(tmp_path / "y.dcq").exists()


def _caltech() -> Path | None:
    here = Path(__file__).resolve().parents[2]
    for c in (Path("../shared/data/caltech101/train"), here / "shared/data/caltech101/train"):
        if c.is_dir():
            return c
    return None


@pytest.mark.skipif(_caltech() is None, reason="needs ../shared/data/caltech101")
def test_caltech_photos_at_224(tmp_path):
    """Real photos of varying sizes (some grayscale) with --resize 224: converted in a stated
    memory bound (1.5 GB peak RSS, torch included), every image 224 px on its shorter side, and
    read back with RandomResizedCrop."""
    out = tmp_path / "cal.dcq"
    code = (f"import dcqformat; s = dcqformat.convert({str(_caltech())!r}, {str(out)!r}, bits=2, "
            "resize=224, limit=60, clusters=4, model_epochs=1, codec='ctx', progress=False); "
            f"print(s.written, s.reported, {PEAK_KB})")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    written, reported, peak_kb = map(int, run.stdout.split())
    assert written + reported == 60 and written > 50 and peak_kb < 1.5 * 2**20
    r = dcqformat.open(out, verify=True)
    assert (np.minimum(r.field("height"), r.field("width")) == 224).all()
    ds = DCQDataset(out, augment=RandomResizedCrop(160, flip=0.5))
    x, _ = next(iter(torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, num_workers=2)))
    assert x.shape == (16, 3, 160, 160) and x.dtype == torch.uint8
