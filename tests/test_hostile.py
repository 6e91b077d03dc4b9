"""Hand-made hostile files (issue 14, items 1-7 and 11): every one a DcqError, bounded in time
and memory, or read correctly."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import torch
from common import make_spec, write_spec
from crafted import (
    GOOD,
    bomb_frame,
    declared_size_frame,
    frame,
    huge_count_file,
    mae_weights,
    masked_file,
    plain_file,
    safetensors,
    zstd_file,
)

import dcqformat
from dcqformat import CorruptFile, DcqError, FileChanged, UnsupportedVersion
from dcqformat.codecs.zstdframe import frame_status, frame_status_reference


def _open(tmp_path, blob: bytes, name: str = "f.dcq"):
    path = tmp_path / name
    path.write_bytes(blob)
    return dcqformat.open(path)


def _read_all(r) -> None:
    for i in range(len(r)):
        r[i]
    r.decode_batch(np.arange(len(r)))
    r.verify()


def _peak_mib(fn) -> float:
    tracemalloc.start()
    try:
        fn()
    except DcqError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


# -- 1, 2: zstd frames ----------------------------------------------------------------------------
def test_good_zstd_frames_read(tmp_path):
    with _open(tmp_path, zstd_file([frame(GOOD), frame(GOOD, content_size=True)])) as r:
        _read_all(r)
        assert r.indices(1).reshape(-1).tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]


@pytest.mark.parametrize("declared", [5, 2**40, 2**64 - 1])
def test_declared_content_size_is_refused_before_decompressing(tmp_path, declared):
    with _open(tmp_path, zstd_file([declared_size_frame(declared)])) as r:
        with pytest.raises(CorruptFile, match="declares a content size"):
            r[0]
        with pytest.raises(CorruptFile, match="declares a content size"):
            r.decode_batch([0])


@pytest.mark.parametrize("content_size", [True, False])
def test_zstd_bomb_allocates_nothing_large(tmp_path, content_size):
    bomb = bomb_frame(64 << 20, content_size)
    assert len(bomb) < 8 << 10
    with _open(tmp_path, zstd_file([bomb])) as r:
        for read in (lambda: r[0], lambda: r.decode_batch([0]), r.verify):
            with pytest.raises(CorruptFile):
                read()
            assert _peak_mib(read) < 4


@pytest.mark.parametrize("frames, message", [
    ([b""], "is not a zstd frame"),
    ([frame(GOOD) + b"\x00"], "has bytes after its one frame"),
    ([frame(GOOD) + frame(GOOD)], "has bytes after its one frame"),
    ([frame(GOOD)[:-1]], "ends inside its blocks"),
    ([b"\x50\x2a\x4d\x18" + bytes(8)], "is not a zstd frame"),  # a skippable frame
])
def test_payload_must_be_exactly_one_frame(tmp_path, frames, message):
    with _open(tmp_path, zstd_file([frame(GOOD)] + frames)) as r:
        r[0]
        for read in (lambda: r[1], lambda: r.decode_batch([0, 1]), r.verify):
            with pytest.raises(CorruptFile, match=message):
                read()


def test_frame_status_kernel_matches_its_twin():
    rng = np.random.default_rng(5)
    frames = [frame(GOOD), frame(GOOD, True), frame(bytes(300) + GOOD), b"", frame(GOOD) + b"x",
              declared_size_frame(4), declared_size_frame(9), bomb_frame(1 << 20, True)]
    for f in list(frames):
        for _ in range(30):
            b = bytearray(f or b"\x00")
            b[int(rng.integers(0, len(b)))] ^= int(rng.integers(1, 256))
            frames.append(bytes(b[: int(rng.integers(0, len(b) + 1))]))
    data = np.frombuffer(b"".join(frames), np.uint8)
    offsets = np.cumsum([0] + [len(f) for f in frames[:-1]]).astype(np.int64)
    lengths = np.array([len(f) for f in frames], np.int64)
    expected = np.full(len(frames), 4, np.int64)
    got = frame_status(data, offsets, lengths, expected)
    assert got.tolist() == [frame_status_reference(f, 4) for f in frames]
    assert got[:3].tolist() == [0, 0, 0] and got[3:7].tolist() == [1, 4, 0, 5]


def test_mask_padding_bits_are_refused(tmp_path):
    with _open(tmp_path, masked_file(0b000001)) as r:  # patch 0 dropped: fine
        r.verify()
        assert r.mask(0).tolist() == [[True, False, False], [False, False, False]]
    for byte in (0b01000000, 0b10000001):
        with pytest.raises(CorruptFile, match="mask padding bits are set"):
            _open(tmp_path, masked_file(byte))


# -- 3: sample counts ------------------------------------------------------------------------------
def test_sample_count_is_bounded_by_the_file(tmp_path):
    with _open(tmp_path, huge_count_file(64)) as r:  # 64 samples sharing one byte: legal, and small
        assert len(r) == 64
        _read_all(r)
    for count in (65, 2**28, 2**40, 2**61, 2**64 - 1):
        t = time.perf_counter()
        blob = huge_count_file(count)
        assert len(blob) < 1024
        with pytest.raises(CorruptFile, match="more samples than the file has bytes for|overflows"):
            _open(tmp_path, blob)
        assert time.perf_counter() - t < 1.0


# -- 4, 5: weights ---------------------------------------------------------------------------------
def test_weights_of_every_safetensors_dtype_are_read(tmp_path):
    from safetensors.torch import save

    tensors = {"bf16": torch.linspace(-3, 3, 6).to(torch.bfloat16).reshape(2, 3),
               "e4m3": torch.linspace(-2, 2, 5).to(torch.float8_e4m3fn),
               "e5m2": torch.linspace(-2, 2, 5).to(torch.float8_e5m2),
               "u16": torch.tensor([0, 1, 65535], dtype=torch.uint16), "flag": torch.tensor([True, False])}
    with _open(tmp_path, plain_file(weights=save(tensors))) as r:
        w = r.weights()
    for name, t in tensors.items():
        want = t.float().numpy() if t.dtype.is_floating_point else t.numpy()
        np.testing.assert_array_equal(w[name], want)
        assert w[name].dtype == want.dtype


@pytest.mark.parametrize("header, data, error, match", [
    ({"__metadata__": {"a": 1}}, b"", CorruptFile, "__metadata__ is not a map of strings"),
    ({"__metadata__": ["x"]}, b"", CorruptFile, "__metadata__ is not a map of strings"),
    ({"t": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}}, bytes(4), CorruptFile, "'t'.*data_offsets"),
    ({"t": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, bytes(4), CorruptFile, "'t'.*shape"),
    ({"t": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}, bytes(4), CorruptFile, "'t'.*shape"),
    ({"t": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8), UnsupportedVersion, "'t'.*'C64'"),
    ({"t": [1, 2]}, b"", CorruptFile, "'t'"),
])
def test_hostile_safetensors_headers(tmp_path, header, data, error, match):
    with pytest.raises(error, match=match):
        _open(tmp_path, plain_file(weights=safetensors(header, data)))


GOOD_MAE = {"patch": 2, "channels": 3, "dim": 8, "depth": 1, "heads": 2, "decoder_dim": 8, "decoder_depth": 1,
            "mlp_ratio": 2.0}


@pytest.mark.parametrize("change", [{"heads": 0}, {"heads": 3}, {"dim": -4}, {"dim": float("nan")},
                                    {"mlp_ratio": float("nan")}, {"dim": 8192, "depth": 24}, {"depth": 24},
                                    {"patch": "2"}, {"channels": 2}, {"heads": True}])
def test_hostile_mae_config_is_refused_before_building(change):
    from dcqformat.mae import mae_from_bytes

    blob = mae_weights({**GOOD_MAE, **change})
    with pytest.raises(DcqError, match="MAE"):
        mae_from_bytes(blob)
    assert _peak_mib(lambda: mae_from_bytes(blob)) < 16


# -- 6, 7: metadata and source indices -------------------------------------------------------------
@pytest.mark.parametrize("meta, key", [
    ({"selection": {}}, "selection.method"), ({"selection": 3}, "selection"), ({"drop": "x"}, "drop"),
    ({"mae": []}, "mae"), ({"mae": {"config": 1}}, "mae.config"), ({"classes": [["a"], "b"]}, "classes"),
    ({"classes": "abc"}, "classes"), ({"name": 5}, "name"), ({"drop": {"fraction": 2}}, "drop.fraction"),
    ({"selection": {"method": "dq", "keep": 0.5, "per_class": {"0": "x"}}}, "selection.per_class"),
    ({"drop": {"fraction": -0.5}}, "drop.fraction"),  # NaN is not JSON at all: test_hardening.py
])
def test_metadata_of_the_wrong_type_is_named_at_open(tmp_path, meta, key):
    with pytest.raises(CorruptFile, match=f"metadata key '{key}'"):
        _open(tmp_path, plain_file(meta))


def test_known_metadata_is_typed(tmp_path):
    meta = {"classes": ["a", "b"], "drop": {"fraction": 0.25, "patch": 4, "importance": "x"},
            "selection": {"method": "dq", "keep": 0.5, "kept": 1, "samples_in": 2, "per_class": {"0": 1}},
            "future": {"anything": [1]}}
    with _open(tmp_path, plain_file(meta)) as r:
        assert r.classes == ["a", "b"] and r.metadata.drop.patch == 4 and r.metadata.selection.kept == 1
        assert r.meta["future"] == {"anything": [1]} and r.metadata.color_space == "sRGB"


def test_source_index_above_2_63_is_read(tmp_path):
    with _open(tmp_path, plain_file(source_index=2**64 - 1)) as r:
        assert r.source_indices.dtype == np.uint64 and r.source_indices.tolist() == [2**64 - 1, 1]
        _read_all(r)


# -- 11: a file replaced under a DataLoader --------------------------------------------------------
def test_a_file_replaced_under_the_dataset_is_named(tmp_path):
    import pickle

    from torch.utils.data import DataLoader

    from dcqformat.loaders import DCQDataset

    rng = np.random.default_rng(0)
    path = write_spec(make_spec(rng, bits=2, channels=3, n=8, sizes=[(4, 4)]), tmp_path / "a.dcq")
    ds = DCQDataset(path)
    pickled_reader = pickle.dumps(dcqformat.open(path))
    assert len(list(DataLoader(ds, batch_size=4, num_workers=1))) == 2
    write_spec(make_spec(rng, bits=2, channels=3, n=5, sizes=[(4, 4)]), path)  # replaced, shorter
    with pytest.raises(FileChanged, match="changed since it was first opened"):
        list(DataLoader(ds, batch_size=4, num_workers=1))
    with pytest.raises(FileChanged, match="changed since it was first opened"):
        pickle.loads(pickled_reader)


def test_info_prints_typed_metadata_or_names_the_bad_key(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "m.dcq"
    path.write_bytes(plain_file({"selection": {"method": "dq", "keep": 0.5}, "drop": {"fraction": 0.25}}))
    r = subprocess.run([sys.executable, "-m", "dcqformat", "info", str(path)], capture_output=True, text=True)
    assert r.returncode == 0 and "selection: dq, keep 0.5" in r.stdout and "Traceback" not in r.stderr
    path.write_bytes(plain_file({"selection": {}}))
    r = subprocess.run([sys.executable, "-m", "dcqformat", "info", str(path)], capture_output=True, text=True)
    assert r.returncode == 1 and "selection.method" in r.stderr and "Traceback" not in r.stderr


def test_errors_carry_the_path_and_name_the_data_block(tmp_path):
    from dcqformat import ChecksumMismatch

    path = write_spec(make_spec(np.random.default_rng(0), bits=2, channels=3, n=4), tmp_path / "x.dcq")
    blob = bytearray(path.read_bytes())
    blob[65] ^= 1  # DATA starts at byte 64
    path.write_bytes(bytes(blob))
    with dcqformat.open(path) as r, pytest.raises(ChecksumMismatch) as info:
        r[0]
    err = info.value
    assert err.path == str(path) and err.section == "DATA" and err.block == 0 and err.offset == 64
    assert str(err).startswith(f"{path}: ") and "DATA block 0 (bytes 0..64 of DATA)" in str(err)
    blob[0] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(DcqError) as info2:
        dcqformat.open(path)
    assert info2.value.path == str(path) and str(info2.value).count(str(path)) == 1
