"""Conversion output pinned byte for byte: a refactoring must not change what is written.

The per-image MedianCut path (Pillow, NumPy, zstd) is pinned by its SHA-256; the DCQ path, whose
float arithmetic may differ between CPU kinds, is pinned by being identical across two runs and
against the same conversion through the Python API.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from common import gradient_npz

import dcqformat
from dcqformat.conversion import ConvertConfig, convert

PINNED = {
    # 2026-11-24: META's quantizer config gained dither, bytes_per_image, resize, center_crop,
    # max_size, palette_seconds and palette_losses; then mae_size and mae_weights; then drop_by
    # (each time the digest without the new keys was the one before, checked); 2026-12-02:
    # dequantizer and dequantizer_seconds (checked the same way); 2026-12-03: palette_corrections
    # (without it the digests are the previous ones: 7084e890... and e0747f6b..., checked)
    "packed": "b22e4ffcfb2b139bcc80a42435a375a64cbdcd82c1b1f680ef163584a1f09aaf",
    "zstd": "732746768fec70c117f81ba85697750cb3bcdff20dc8d66f86ccff69ce04a2a1",
}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return gradient_npz(tmp_path_factory.mktemp("pinned") / "src.npz", n=24, side=12, step=20, noise=30,
                        classes=["a", "b", "c"], seed=1234)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(path) -> str:
    """SHA-256 of every section but META, and of META without ``provenance`` (which names the
    source path and the tool versions of the run)."""
    with dcqformat.open(path) as r:
        parts = [tag + r._buf[s.offset : s.offset + s.length].tobytes()
                 for tag, s in sorted(r.header.sections.items()) if tag != b"META"]
        meta = {k: v for k, v in r.meta.items() if k != "provenance"}
    return hashlib.sha256(b"".join(parts) + json.dumps(meta, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("codec", ["packed", "zstd"])
def test_mediancut_conversion_is_pinned(source, tmp_path, codec):
    out = tmp_path / f"{codec}.dcq"
    convert(str(source), out, ConvertConfig(method="mediancut", bits=2, codec=codec, seed=0), progress=False)
    assert _digest(out) == PINNED[codec]


def test_python_api_takes_keyword_options(source, tmp_path):
    out = tmp_path / "kw.dcq"
    summary = dcqformat.convert(str(source), out, method="mediancut", bits=2, codec="packed", progress=False)
    assert summary.written == 24 and _digest(out) == PINNED["packed"]
    with pytest.raises(ValueError, match="clusters"):
        dcqformat.convert(str(source), tmp_path / "bad.dcq", clusters=0, progress=False)
    with pytest.raises(ValueError, match="unknown setting"):
        dcqformat.convert(str(source), tmp_path / "bad.dcq", colours=4, progress=False)


def test_dcq_conversion_is_deterministic(source, tmp_path):
    cfg = ConvertConfig(bits=2, clusters=3, model_epochs=1, refine_steps=2, seed=5)
    convert(str(source), tmp_path / "a.dcq", cfg, progress=False)
    convert(str(source), tmp_path / "b.dcq", cfg, progress=False)
    assert _sha(tmp_path / "a.dcq") == _sha(tmp_path / "b.dcq")


def test_a_map_style_dataset_converts_like_its_arrays(source, tmp_path):
    """dcqformat.convert takes any dataset of (image, label): PIL images, HWC arrays, CHW float tensors."""
    import torch
    from PIL import Image

    with np.load(source) as z:
        x, y = z["x"], z["y"]

    class Folderish:
        classes = ["a", "b", "c"]

        def __init__(self, kind):
            self.kind = kind

        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            if i == 5:
                raise OSError("disk hiccup")
            image = {"pil": Image.fromarray(x[i]), "array": x[i],
                     "tensor": torch.from_numpy(x[i]).permute(2, 0, 1).float() / 255}[self.kind]
            return image, int(y[i])

    digests = set()
    for kind in ("pil", "array", "tensor"):
        out = tmp_path / f"{kind}.dcq"
        summary = dcqformat.convert(Folderish(kind), out, method="mediancut", progress=False)
        assert summary.written == 23 and summary.reported == 1 and "dataset[5]" in summary.problems[0][1]
        with dcqformat.open(out) as r:
            assert r.classes == ["a", "b", "c"] and r.labels.tolist() == [int(v) for k, v in enumerate(y) if k != 5]
            digests.add(r.decode_batch(np.arange(23)).tobytes())
    assert len(digests) == 1  # the same pixels whatever form the images came in
