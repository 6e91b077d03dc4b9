"""Dequantization beyond lookup: the learned dequantizer in the file (DEQW), its safetensors
checks, conversion with --dequantizer, and the loaders' ``dequantize=`` modes (map-style with
workers, WebDataset), each against decoding and restoring by hand."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from common import make_spec, write_spec
from torch.utils.data import DataLoader

import dcqformat
from dcqformat import DcqError
from dcqformat import _layout as L
from dcqformat.cli import sample_data
from dcqformat.conversion import ConvertConfig, convert
from dcqformat.decode import decode_debanded, decode_images
from dcqformat.dequant import DequantConfig, Dequantizer, dequantizer_from_bytes, dequantizer_to_bytes
from dcqformat.dequant.train import choose_config, stored_bytes
from dcqformat.format import stored_model
from dcqformat.loaders import DCQDataset, RandomResizedCrop
from dcqformat.loaders.wds import dcq_pipeline, write_shards


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Photo crops (32 px, 10 classes) in 2-bit MedianCut ctx: with a learned dequantizer and without."""
    d = tmp_path_factory.mktemp("deq")
    photos = sample_data.load_photo_crops(48)
    np.savez(d / "x.npz", x=photos.images, y=photos.labels)
    cfg = {"method": "mediancut", "bits": 2, "codec": "ctx"}
    summary = convert(str(d / "x.npz"), d / "learned.dcq",
                      ConvertConfig(dequantizer="tiny", dequantizer_seconds=3, **cfg), progress=False)
    convert(str(d / "x.npz"), d / "plain.dcq", ConvertConfig(**cfg), progress=False)
    return d, photos.images, summary


def test_conversion_stores_the_dequantizer_and_says_how_it_did(files):
    d, x, _ = files
    with dcqformat.open(d / "learned.dcq") as r, dcqformat.open(d / "plain.dcq") as p:
        blob = r.weights_blob("DEQW")
        assert blob is not None and p.weights_blob("DEQW") is None and r.weights_blob() is None
        deq = r.meta["dequantizer"]
        assert deq["config"] == {"channels": 3, "width": 8, "depth": 3} and deq["bytes"] == len(blob)
        assert deq["steps"] > 0 and deq["holdout_images"] == 4
        assert {"holdout_lookup_psnr", "holdout_deband_psnr", "holdout_learned_psnr"} <= set(deq)
        section = next(s for s in r.info()["sections"] if s["tag"] == "DEQW")
        assert section["skippable"]  # a reader that does not know DEQW decodes the file as before
        assert np.array_equal(r.decode_batch(np.arange(len(r))), p.decode_batch(np.arange(len(p))))
        model = dequantizer_from_bytes(blob)
        assert model.config == DequantConfig(3, 8, 3)


def test_auto_keeps_the_model_only_when_it_beats_lookup_and_debanding(tmp_path):
    """400 images of flat 8 px squares in 4 levels (enough index bytes for a model to be tried): the
    palette loses nothing, so no model beats the lookup and auto stores none."""
    rng = np.random.default_rng(0)
    x = np.repeat(np.repeat(rng.integers(0, 4, (400, 4, 4, 1)) * 80, 8, 1), 8, 2).repeat(3, 3).astype(np.uint8)
    np.savez(tmp_path / "x.npz", x=x, y=np.arange(400) % 3)
    assert choose_config("auto", images=400, pixels=32 * 32, channels=3, bits=2) is not None
    convert(str(tmp_path / "x.npz"), tmp_path / "a.dcq", ConvertConfig(method="mediancut", bits=2,
            dequantizer="auto", dequantizer_seconds=1), progress=False)
    with dcqformat.open(tmp_path / "a.dcq") as r:
        assert r.weights_blob("DEQW") is None and "dequantizer" not in r.meta


def test_sizes_follow_the_data():
    assert choose_config("none", images=10**6, pixels=1024, channels=3, bits=2) is None
    assert choose_config("auto", images=10, pixels=1024, channels=3, bits=2) is None  # 5 KB of indices
    big = choose_config("auto", images=50_000, pixels=1024, channels=3, bits=2)
    assert big == DequantConfig(3, 24, 4) and stored_bytes(big) <= 0.02 * 50_000 * 1024 * 2 / 8
    assert choose_config("small", images=1, pixels=1, channels=1, bits=1) == DequantConfig(1, 16, 3)


def test_golden_vector_dequantizes_as_the_spec_says():
    """valid/deqw-2bit: a DEQW section built by hand; its images dequantized by the spec's plain
    NumPy reference (float64) are y0, y1: the library's float32 network is within one level, and
    equal on nearly every value."""
    vectors = Path(__file__).resolve().parents[1] / "spec/test-vectors/valid"
    expected = np.load(vectors / "deqw-2bit.npz")
    with dcqformat.open(vectors / "deqw-2bit.dcq") as r:
        model = dequantizer_from_bytes(r.weights_blob("DEQW"))
        assert model.config == DequantConfig(3, 4, 3) and r.meta["dequantizer"]["config"]["width"] == 4
        for i in range(len(r)):
            assert np.array_equal(r[i], expected[f"x{i}"])
            got = model.restore(torch.from_numpy(expected[f"x{i}"].transpose(2, 0, 1)[None].copy()))[0]
            diff = np.abs(got.numpy().transpose(1, 2, 0).astype(int) - expected[f"y{i}"].astype(int))
            assert diff.max() <= 1 and (diff == 0).mean() > 0.98
            assert not np.array_equal(expected[f"y{i}"], expected[f"x{i}"])


def test_store_round_trip_int8_and_float16():
    torch.manual_seed(0)
    model = Dequantizer(DequantConfig(3, 8, 3))
    for precision, tol in (("int8", 0.01), ("float16", 1e-3)):
        back = dequantizer_from_bytes(dequantizer_to_bytes(model, precision))
        for (k, a), b in zip(model.state_dict().items(), back.state_dict().values()):
            assert torch.allclose(a, b, atol=tol), k
    assert dequantizer_to_bytes(model) == dequantizer_to_bytes(model)  # reproducible bytes


def test_bad_dequantizer_buffers_are_clear_errors():
    model = Dequantizer(DequantConfig(1, 4, 2))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    info = {"format": "dcq-dequant/1", "config": model.config.to_dict()}
    cases = [
        (stored_model.pack(state, "dcq-mae", info), "not a dcqformat dequantizer"),
        (stored_model.pack(state, "dcq-dequant", {**info, "format": "dcq-dequant/9"}), "dcq-dequant/9"),
        (stored_model.pack(state, "dcq-dequant", {**info, "config": {"channels": 2, "width": 4, "depth": 2}}),
         "config .* unusable"),
        (stored_model.pack(state, "dcq-dequant", {**info, "config": {"channels": 1, "width": 5, "depth": 2}}),
         "expected shape"),
        (stored_model.pack({**state, "extra": np.zeros(2)}, "dcq-dequant", info), "'extra' not expected"),
        (stored_model.pack({k: v * 0 for k, v in state.items()}, "dcq-dequant", info)
         .replace(np.float32(1.0).tobytes(), np.float32(-1).tobytes()), "finite scale"),
        (b"\x00" * 4, "too short"),
    ]
    for blob, match in cases:
        with pytest.raises(DcqError, match=match):
            dequantizer_from_bytes(blob)


def test_writer_refuses_other_model_sections_and_reader_refuses_a_bad_deqw(tmp_path):
    spec = make_spec(np.random.default_rng(1), bits=2, channels=3, n=4)
    with pytest.raises(ValueError, match="WGHT or DEQW"), dcqformat.DcqWriter(tmp_path / "x.dcq", bits=2) as w:
        w.set_weights(dequantizer_to_bytes(Dequantizer(DequantConfig())), "META")
    path = write_spec(spec, tmp_path / "ok.dcq")
    with dcqformat.open(path) as r:
        with pytest.raises(ValueError, match="WGHT and DEQW"):
            r.weights_blob("DATA")
        assert r.weights_blob("DEQW") is None
    assert L.TAG_DEQW in L.SKIPPABLE_TAGS


def test_loader_modes_equal_restoring_by_hand(files):
    d, _, _ = files
    path = d / "learned.dcq"
    r = dcqformat.open(path)
    idx = np.arange(len(r))
    streams = r.streams(idx)
    n, (h, w), c = len(r), r.shapes[0], r.channels
    lookup = decode_images(streams, r.palette_set, np.empty((n, c, h, w), np.uint8), True)
    debanded = decode_debanded(streams, r.palette_set, np.empty((n, c, h, w), np.uint8))
    model = dequantizer_from_bytes(r.weights_blob("DEQW"))
    learned = model.restore(torch.from_numpy(lookup)).numpy()
    assert not np.array_equal(debanded, lookup) and not np.array_equal(learned, lookup)
    for mode, want in (("lookup", lookup), ("deband", debanded), ("learned", learned), ("auto", learned)):
        got, labels = DCQDataset(path, dequantize=mode).get_batch(idx)
        assert np.array_equal(got.numpy(), want), mode
        assert np.array_equal(labels.numpy(), r.labels)
    assert DCQDataset(d / "plain.dcq").restorer.mode == "lookup"  # auto without a model
    with pytest.raises(DcqError, match="needs the file's learned dequantizer"):
        DCQDataset(d / "plain.dcq", dequantize="learned")
    with pytest.raises(ValueError, match="dequantize must be one of"):
        DCQDataset(path, dequantize="sharpen")  # type: ignore[arg-type]


def test_crops_in_workers_and_webdataset_agree(files, tmp_path):
    """Random crops: DataLoader workers, the main process and the WebDataset pipeline (its sidecar
    carries the model) give the same batches."""
    d, _, _ = files
    path = d / "learned.dcq"
    ds = DCQDataset(path, dequantize="learned", augment=RandomResizedCrop(24))
    g = torch.Generator().manual_seed(3)
    a, _ = ds.get_batch(np.arange(16), g)
    assert a.shape == (16, 3, 24, 24)
    plain = DCQDataset(path, dequantize="deband")
    loader = DataLoader(plain, batch_size=12, num_workers=2)
    got = torch.cat([x for x, _ in loader])
    assert torch.equal(got, plain.get_batch(np.arange(len(plain)))[0])
    side, _ = write_shards(path, str(tmp_path / "s-%06d.tar"), maxcount=20, shuffle=False)
    with dcqformat.open(side) as sc:
        assert sc.weights_blob("DEQW") == dcqformat.open(path).weights_blob("DEQW")
    for mode in ("learned", "lookup"):
        batches = list(dcq_pipeline(str(tmp_path / "s-{000000..000002}.tar"), side, batch_size=48, shuffle=0,
                                    dequantize=mode))
        x = torch.cat([b[0] for b in batches])
        want = DCQDataset(path, dequantize=mode).get_batch(np.arange(48))[0]
        order = np.argsort(np.concatenate([b[1].numpy() for b in batches]), kind="stable")
        assert x.shape == want.shape
        assert sorted(map(bytes, x.flatten(1).numpy())) == sorted(map(bytes, want.flatten(1).numpy())), order[:1]


def test_device_decoder_runs_the_dequantizer_like_the_cpu_path(files):
    d, _, _ = files
    ds = DCQDataset(d / "learned.dcq", dequantize="learned")
    view = ds.packed_view()
    packed, pids, grids = ds.packed(np.arange(len(ds)))
    for dtype, mean, std in ((torch.uint8, None, None), (torch.float32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))):
        got = DCQDataset(d / "learned.dcq", dequantize="learned", dtype=dtype, mean=mean, std=std).device_decoder()(
            packed, torch.from_numpy(pids), grids)
        want = DCQDataset(d / "learned.dcq", dequantize="learned", dtype=dtype, mean=mean, std=std).get_batch(
            np.arange(len(ds)))[0]
        assert got.dtype == want.dtype and torch.allclose(got, want, atol=1e-6)
    assert len(view) == len(ds)
    with pytest.raises(ValueError, match="CPU loaders only"):
        DCQDataset(d / "learned.dcq", dequantize="deband").device_decoder()


def test_cli_convert_with_a_dequantizer(tmp_path):
    photos = sample_data.load_photo_crops(48)
    np.savez(tmp_path / "x.npz", x=photos.images[:24], y=photos.labels[:24])
    dcq = [sys.executable, "-m", "dcqformat"]
    src, out = str(tmp_path / "x.npz"), str(tmp_path / "o.dcq")
    run = subprocess.run([*dcq, "convert", src, out, "--method", "mediancut", "--bits", "2", "--dequantizer", "tiny",
                          "--dequantizer-seconds", "1", "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    info = subprocess.run([*dcq, "info", str(tmp_path / "o.dcq")], capture_output=True, text=True)
    assert info.returncode == 0 and "DEQW" in info.stdout
    export = subprocess.run([*dcq, "export", out, str(tmp_path / "e.npz"), "--dequantize", "learned", "--quiet"],
                            capture_output=True, text=True)
    assert export.returncode == 0, export.stderr
    with np.load(tmp_path / "e.npz") as e, dcqformat.open(out) as r:
        want = DCQDataset(out, dequantize="learned", layout="HWC").get_batch(np.arange(len(r)))[0].numpy()
        assert np.array_equal(e["x"][np.argsort(e["source_index"])], want[np.argsort(r.source_indices)])
    bad = subprocess.run([*dcq, "convert", src, str(tmp_path / "p.dcq"), "--dequantizer", "huge"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--dequantizer" in bad.stderr
