"""Per-image palette corrections (PCOR, spec §3.1): the section both ways, every decode path,
corrupt sections, the fit, and a conversion that uses them."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import dcqformat
from dcqformat import CorruptFile, DcqWriter
from dcqformat import _layout as L
from dcqformat.conversion import ConvertConfig, convert
from dcqformat.format.multifile import open_set
from dcqformat.format.palettes import pack_deltas, parse_corrections
from dcqformat.loaders import DCQDataset, RandomResizedCrop
from dcqformat.loaders.wds import dcq_pipeline, write_shards
from dcqformat.pipeline.options import OptionError
from dcqformat.quantize.corrections import correct, fit_corrections


def write(path, bits=2, channels=3, n=9, step=7, codec="packed", seed=0, size=(6, 7)):
    """A file whose samples carry random corrections; returns its expected decoded images."""
    rng = np.random.default_rng(seed)
    k = 1 << bits
    pal = rng.integers(0, 256, (3, k, channels), dtype=np.uint8)
    pal[0, 0] = 254  # corrections clip at both ends
    pal[1, 0] = 2
    want = []
    with DcqWriter(path, bits=bits, channels=channels, palettes=pal, correction_step=step, codec=codec) as w:
        for i in range(n):
            idx = rng.integers(0, k, size)
            delta = rng.integers(-8, 8, (k, channels)) if i % 4 else None  # None: no correction (zeros)
            w.add(idx, palette=i % 3, label=i, correction=delta)
            own = np.clip(pal[i % 3].astype(int) + step * (0 if delta is None else delta), 0, 255).astype(np.uint8)
            want.append(own[idx])
    return np.stack(want)


@pytest.mark.parametrize("codec", ["packed", "zstd", "ctx", "ctxg"])
def test_every_decode_path_uses_the_corrected_palettes(tmp_path, codec):
    want = write(tmp_path / "c.dcq", codec=codec, n=20)
    with dcqformat.open(tmp_path / "c.dcq") as r:
        assert r.version == (1, L.MINOR_OF_PCOR) and r.correction_step == 7 and r.shared_palette_count == 3
        assert r.palettes.shape == (23, 4, 3) and list(r.palette_ids) == list(range(3, 23))
        assert np.array_equal(r.decode_batch(np.arange(20)), want)
        assert all(np.array_equal(r.decode(i), want[i]) for i in range(20))
        boxes = np.tile([0.0, 0.0, 6, 7], (20, 1))
        assert np.array_equal(r.decode_crops(np.arange(20), boxes, (6, 7), layout="NHWC"), want)
    x, _ = DCQDataset(tmp_path / "c.dcq", layout="HWC").get_batch(np.arange(20))
    assert np.array_equal(x.numpy(), want)
    aug = RandomResizedCrop(5)
    a, _ = DCQDataset(tmp_path / "c.dcq", augment=aug).get_batch(np.arange(20), torch.Generator().manual_seed(1))
    assert a.shape == (20, 3, 5, 5)


def test_multifile_and_webdataset_keep_the_corrections(tmp_path):
    a = write(tmp_path / "a.dcq", seed=1, n=5)
    b = write(tmp_path / "b.dcq", seed=2, n=6, codec="ctxg")
    both = open_set([tmp_path / "a.dcq", tmp_path / "b.dcq"])
    assert np.array_equal(both.decode_batch(np.arange(11)), np.concatenate([a, b]))
    both.close()
    side, shards = write_shards(tmp_path / "b.dcq", str(tmp_path / "w" / "p-%06d.tar"), shards=2)
    got = {}
    for images, labels in dcq_pipeline(shards, side, batch_size=3, layout="HWC"):
        got.update({int(y): x.numpy() for x, y in zip(images, labels)})
    assert sorted(got) == list(range(6)) and all(np.array_equal(got[i], b[i]) for i in range(6))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.sampled_from([1, 3]), st.integers(0, 5), st.integers(1, 255), st.data())
def test_section_round_trip(bits, channels, n, step, data):
    k = 1 << bits
    deltas = data.draw(arrays(np.int8, (n, k, channels), elements=st.integers(-8, 7)))
    blob = L.PCOR_HEADER.pack(n, step, bytes(3)) + pack_deltas(deltas)
    assert len(blob) == 8 + n * k * channels // 2
    got_step, got = parse_corrections(np.frombuffer(blob, np.uint8), 0, n, bits, channels)
    assert got_step == step and np.array_equal(got, deltas)


def test_corrupt_sections_name_what_is_wrong():
    good = L.PCOR_HEADER.pack(2, 5, bytes(3)) + bytes(2 * 6)
    buf = np.frombuffer(good, np.uint8)
    parse_corrections(buf, 0, 2, 2, 3)
    cases = [(good[:5], 2, 2, "too short for its header"), (good + b"\0", 2, 2, "length does not match"),
             (good, 3, 2, "one correction per sample (3)"), (good, 2, 5, "bits <= 4"),
             (L.PCOR_HEADER.pack(2, 0, bytes(3)) + bytes(12), 2, 2, "step >= 1")]
    for blob, samples, bits, fragment in cases:
        with pytest.raises(CorruptFile, match="PCOR") as e:
            parse_corrections(np.frombuffer(blob, np.uint8), 0, samples, bits, 3)
        assert fragment in str(e.value), (fragment, str(e.value))


def test_writer_refuses_bad_corrections(tmp_path):
    pal = np.zeros((1, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="correction_step"):
        DcqWriter(tmp_path / "x.dcq", bits=5, palettes=np.zeros((1, 32, 3), np.uint8), correction_step=4)
    with DcqWriter(tmp_path / "y.dcq", bits=2, palettes=pal, correction_step=4) as w:
        with pytest.raises(ValueError, match="-8..7"):
            w.add(np.zeros((2, 2), int), palette=0, correction=np.full((4, 3), 8))
        with pytest.raises(ValueError, match="-8..7"):
            w.add(np.zeros((2, 2), int), palette=0, correction=np.zeros((4, 1), int))
    with DcqWriter(tmp_path / "z.dcq", bits=2, palettes=pal) as w, pytest.raises(ValueError, match="correction_step"):
        w.add(np.zeros((2, 2), int), palette=0, correction=np.zeros((4, 3), int))
    with dcqformat.open(tmp_path / "z.dcq") as r:  # without corrections: no PCOR, the codec's minor version
        assert r.version == (1, 0) and r.correction_step is None and b"PCOR" not in r.header.sections


def test_fit_lowers_the_error_and_stays_in_range():
    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.integers(0, 256, (6, 4, 3), dtype=np.uint8))
    pixels = torch.from_numpy(rng.integers(0, 256, (6, 10, 12, 3), dtype=np.uint8))
    idx = torch.cdist(pixels.reshape(6, -1, 3).float(), base.float()).argmin(-1).reshape(6, 10, 12)
    deltas, labels = fit_corrections(pixels, idx, base, step=5)
    assert deltas.dtype == torch.int8 and int(deltas.min()) >= -8 and int(deltas.max()) <= 7

    def error(pal, lab):
        return ((pal.float().gather(1, lab.reshape(6, -1, 1).expand(-1, -1, 3)) - pixels.reshape(6, -1, 3)) ** 2).mean()
    own = (base.int() + 5 * deltas.int()).clamp(0, 255)
    assert error(own, labels) < error(base, idx)
    # the corrected palette, then the nearest colour in it: labels are those nearest colours
    assert torch.equal(labels.reshape(6, -1), torch.cdist(pixels.reshape(6, -1, 3).float(), own.float()).argmin(-1))


def test_nearest_in_chunks_equals_one_pass(monkeypatch):
    import dcqformat.quantize.corrections as module

    rng = np.random.default_rng(3)
    flat = torch.from_numpy(rng.random((3, 50, 3)).astype(np.float32))
    pal = torch.from_numpy(rng.random((3, 4, 3)).astype(np.float32))
    whole = module.nearest(flat, pal)
    monkeypatch.setattr(module, "_CHUNK", 4 * 7)  # 7 pixels of one image at a time
    assert torch.equal(module.nearest(flat, pal), whole)
    assert torch.equal(whole, ((flat[:, :, None] - pal[:, None]) ** 2).sum(-1).argmin(-1))


def test_correct_handles_gray_odd_sizes_and_dither():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (5, 6, 3), dtype=np.uint8), rng.integers(0, 256, (7, 3, 1), dtype=np.uint8),
              rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)]
    pal = rng.integers(0, 256, (2, 4, 1), dtype=np.uint8)
    assigned = [(rng.integers(0, 4, im.shape[:2]).astype(np.uint8), np.int64(i % 2)) for i, im in enumerate(images)]
    for dithered in (False, True):
        out = correct(images, assigned, pal, 9, dithered, torch.device("cpu"))
        assert [o[0].shape for o in out] == [(5, 6), (7, 3), (5, 6)] and [o[1] for o in out] == [0, 1, 0]
        assert all(o[2].shape == (4, 1) and o[2].dtype == np.int8 for o in out)


def test_options():
    with pytest.raises(OptionError, match="palette_corrections"):
        ConvertConfig(method="mediancut", palette_corrections=6).check()
    with pytest.raises(OptionError, match="palette_corrections"):
        ConvertConfig(bits=5, palette_corrections=6).check()
    with pytest.raises(OptionError, match="palette_corrections"):
        ConvertConfig(palette_corrections=256).check()


def test_conversion_with_corrections_reconstructs_better(tmp_path):
    rng = np.random.default_rng(2)
    n = 48
    base = rng.integers(0, 256, (n, 1, 1, 3))
    images = np.clip(base + rng.normal(0, 25, (n, 16, 16, 3)), 0, 255).astype(np.uint8)
    np.savez(tmp_path / "x.npz", x=images, y=np.arange(n) % 3)
    fast = {"method": "dcq", "bits": 2, "codec": "ctx", "model_epochs": 1, "model_images": 48, "refine_steps": 1,
            "clusters": 3}
    errors = {}
    for step in (0, 6):
        out = tmp_path / f"s{step}.dcq"
        convert(str(tmp_path / "x.npz"), out, ConvertConfig(palette_corrections=step, **fast), progress=False)
        with dcqformat.open(out) as r:
            decoded = r.decode_batch(np.arange(n))[np.argsort(r.source_indices)]
            assert (r.correction_step is not None) == bool(step)
        errors[step] = float(((decoded.astype(float) - images) ** 2).mean())
    assert errors[6] < errors[0] * 0.9, errors
    budget = dcqformat.convert(str(tmp_path / "x.npz"), tmp_path / "b.dcq", bytes_per_image=2000, palette_corrections=6,
                               **{k: v for k, v in fast.items() if k not in ("bits", "codec")}, progress=False)
    assert budget.config is not None and budget.config.bits == 4  # 8 bits would fit, corrections are for <= 4
    assert budget.file_bytes / budget.written <= 2000
    r = subprocess.run([sys.executable, "-m", "dcqformat", "info", str(tmp_path / "s6.dcq"), "--json"],
                       capture_output=True, text=True, timeout=120)
    info = json.loads(r.stdout)
    assert "PCOR" in {s["tag"] for s in info["sections"]} and info["version"] == "1.4"
