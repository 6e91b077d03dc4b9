"""Codec ctx (spec §5.3): the Numba kernels against the plain reference written from the spec,
round trips through the writer and reader, the model section's checks, the CLI."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from common import make_spec, write_spec
from hypothesis import given, settings
from hypothesis import strategies as st

import dcqformat
from dcqformat import CorruptFile
from dcqformat.codecs import Sample, ctx, rans
from dcqformat.decode import bitpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "spec" / "test-vectors"))
import ctx_reference as ref  # noqa: E402


def smooth_map(rng: np.random.Generator, h: int, w: int, bits: int) -> np.ndarray:
    """Index maps with the runs and edges of quantized photos (what the model is for)."""
    base = (np.add.outer(np.arange(h) * rng.integers(1, 4), np.arange(w) * rng.integers(0, 3)) // 4)
    noise = rng.random((h, w)) < 0.05
    return ((base + noise * rng.integers(0, 1 << bits, (h, w))) % (1 << bits)).astype(np.uint8)


def sample_of(idx: np.ndarray, bits: int, dropped: np.ndarray | None, patch: tuple[int, int] | None) -> Sample:
    h, w = idx.shape
    flat = idx.reshape(-1)
    if dropped is not None:
        assert patch is not None
        flat = flat[bitpack.kept_pixel_order(h, w, *patch, dropped)]
    return Sample(bitpack.pack_indices(flat, bits).tobytes(), h, w, dropped, patch if dropped is not None else None)


maps = st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.booleans(), st.integers(0, 2**32 - 1))


@settings(max_examples=40, deadline=None)
@given(case=maps)
def test_kernels_match_the_reference(case):
    """Same model, same payload bytes, same decoded map, masked or not, as the spec's own code."""
    bits, h, w, masked, seed = case
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(3):
        idx = smooth_map(rng, h, w, bits)
        patch = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dropped = rng.random(bitpack.grid_shape(h, w, *patch)) < 0.4 if masked else None
        samples.append((idx, dropped, patch))
    enc = ctx._Encoder(bits, 3)
    enc.start([sample_of(i, bits, d, p) for i, d, p in samples])
    plain = [(i.reshape(-1).tolist(), ref.kept_pixels(h, w, p, None if d is None else d.tolist()), h, w)
             for i, d, p in samples]
    want_freqs = ref.model(plain, bits)
    assert enc.freqs is not None and enc.freqs.tolist() == want_freqs
    assert enc.sections()[b"CTXM"] == ref.model_section(bits, want_freqs)
    for (idx, dropped, patch), (values, kept, _, _) in zip(samples, plain):
        payload = enc.encode(sample_of(idx, bits, dropped, patch))
        assert payload == ref.encode(values, kept, h, w, bits, want_freqs)
        work = ref.decode(payload, kept, h, w, bits, want_freqs)
        assert [v for v, k in zip(work, kept) if k] == [v for v, k in zip(values, kept) if k]
        # the kernel: payload -> the sample's bit-packed stream
        dec = ctx._Decoder(enc.cum, bits)
        mask_data = bitpack.pack_mask(dropped) if dropped is not None else np.zeros(1, np.uint8)
        from dcqformat.codecs import Shapes
        shapes = Shapes(np.array([h]), np.array([w]), patch, mask_data, np.array([0 if dropped is not None else -1]))
        data = np.frombuffer(payload, np.uint8)
        stream = sample_of(idx, bits, dropped, patch).stream
        out, offsets = dec.decode(data, np.array([0]), np.array([0]), np.array([len(payload)]),
                                  np.array([len(stream)]), 0, shapes)
        assert out[: len(stream)].tobytes() == stream


def test_kernels_in_plain_python_agree(jit, tmp_path):
    rng = np.random.default_rng(3)
    spec = make_spec(rng, bits=2, channels=3, n=9, sizes=[(5, 7), (6, 6)], masked=0.5, patch=(2, 3), codec="ctx")
    path = write_spec(spec, tmp_path / "a.dcq")
    with dcqformat.open(path, verify=True) as r:
        for i in range(len(spec.samples)):
            np.testing.assert_array_equal(r[i], spec.expected(i))


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_round_trip_sizes_masks_and_pairs(tmp_path, bits):
    """Batches mix sizes, masked samples (one with every patch dropped) and the lockstep pairs."""
    rng = np.random.default_rng(bits)
    pal = rng.integers(0, 256, (2, 1 << bits, 3)).astype(np.uint8)
    items = []
    for k in range(24):
        h, w = [(32, 32), (32, 32), (7, 13), (1, 1), (40, 9)][k % 5]
        dropped = None
        if k % 4 == 3:
            dropped = rng.random(bitpack.grid_shape(h, w, 4, 4)) < 0.5
        if k == 7:
            dropped = np.ones(bitpack.grid_shape(h, w, 4, 4), bool)
        items.append((smooth_map(rng, h, w, bits), dropped))
    paths = {}
    for codec in ("packed", "ctx"):
        paths[codec] = tmp_path / f"{codec}.dcq"
        with dcqformat.DcqWriter(paths[codec], bits=bits, palettes=pal, codec=codec, patch_size=4,
                                 dict_samples=10) as wr:
            for k, (idx, dropped) in enumerate(items):
                wr.add(idx, palette=k % 2, label=k, dropped=dropped)
    a, b = dcqformat.open(paths["ctx"], verify=True), dcqformat.open(paths["packed"])
    assert a.codec == "ctx" and a.version == (1, 1) and b.version == (1, 0)
    for k in range(len(items)):
        np.testing.assert_array_equal(a.decode(k), b.decode(k))
    same = [k for k in range(len(items)) if items[k][0].shape == (32, 32)]
    np.testing.assert_array_equal(a.decode_batch(same), b.decode_batch(same))
    if bits <= 2:  # smooth maps: the model earns its bytes
        assert a.field("payload_length").sum() < 0.8 * b.field("payload_length").sum()


def test_ctx_refuses_more_than_4_bits(tmp_path):
    with pytest.raises(ValueError, match="1..4"):
        dcqformat.DcqWriter(tmp_path / "x.dcq", bits=5, codec="ctx")


def _ctx_file(tmp_path: Path) -> Path:
    spec = make_spec(np.random.default_rng(0), bits=2, channels=3, n=6, sizes=[(6, 6)], codec="ctx")
    return write_spec(spec, tmp_path / "c.dcq")


def _with_model(blob: bytes, model: bytes) -> bytes:
    """The file with its CTXM section replaced (moved to the end, checksums right)."""
    from crafted import refresh

    table_offset, count = struct.unpack_from("<QI", blob, 24)
    entries = [list(struct.unpack_from("<4sIQQII", blob, table_offset + 32 * k)) for k in range(count)]
    body = bytearray(blob[:table_offset])
    for e in entries:
        if e[0] == b"CTXM":
            body += bytes(-len(body) % 64)
            e[2], e[3] = len(body), len(model)
            body += model
    body += bytes(-len(body) % 64)
    new_table = len(body)
    body += b"".join(struct.pack("<4sIQQII", *e) for e in sorted(entries, key=lambda e: e[2]))
    struct.pack_into("<QQ", body, 16, len(body), new_table)
    return refresh(bytes(body))


@pytest.mark.parametrize("case, fragment", [
    ("bits", "bits differ"), ("precision", "precision"), ("count", "context count"), ("sum", "sum to"),
    ("short", "wrong size"), ("trailing", "wrong size"), ("garbage", "inflate"), ("header", "too short"),
])
def test_bad_models_are_refused_at_open(tmp_path, case, fragment):
    path = _ctx_file(tmp_path)
    blob = path.read_bytes()
    freqs = np.full((ref.context_count(2), 4), 1024, "<u2")
    table = freqs.tobytes()
    head = struct.pack("<BBHI", 2, 12, 0, freqs.shape[0])
    model = {
        "bits": struct.pack("<BBHI", 3, 12, 0, ref.context_count(3)) + zlib.compress(table),
        "precision": struct.pack("<BBHI", 2, 11, 0, freqs.shape[0]) + zlib.compress(table),
        "count": struct.pack("<BBHI", 2, 12, 0, 17) + zlib.compress(table),
        "sum": head + zlib.compress(np.full_like(freqs, 1000).tobytes()),
        "short": head + zlib.compress(table[:-2]),
        "trailing": head + zlib.compress(table + b"\0\0"),
        "garbage": head + b"\x00\x01garbage",
        "header": b"\x02\x0c",
    }[case]
    bad = tmp_path / "bad.dcq"
    bad.write_bytes(_with_model(blob, model))
    with pytest.raises(CorruptFile, match=fragment) as info:
        dcqformat.open(bad)
    assert info.value.section == "CTXM"
    ok = tmp_path / "ok.dcq"  # the same surgery with a valid (other) model: the file opens, and its
    ok.write_bytes(_with_model(blob, head + zlib.compress(table)))  # payloads no longer decode
    with pytest.raises(CorruptFile, match="sample 0: ctx payload"):
        dcqformat.open(ok).decode(0)


def test_corrupt_payloads_raise_and_name_the_sample(tmp_path):
    from crafted import refresh

    path = _ctx_file(tmp_path)
    blob = bytearray(path.read_bytes())
    r = dcqformat.open(path)
    data_at = r.header.sections[b"DATA"].offset
    off, length = int(r.field("payload_offset")[3]), int(r.field("payload_length")[3])
    r.close()
    for how in ("state", "tail"):
        b = bytearray(blob)
        at = data_at + off + (0 if how == "state" else length - 1)
        b[at] ^= 0x5A
        bad = tmp_path / f"{how}.dcq"
        bad.write_bytes(refresh(bytes(b)))
        with pytest.raises(CorruptFile, match="sample 3: ctx payload"):
            dcqformat.open(bad).decode(3)
        with pytest.raises(CorruptFile, match="sample 3: ctx payload"):  # decoded in a pair with sample 2
            dcqformat.open(bad).decode_batch([2, 3])
        np.testing.assert_array_equal(dcqformat.open(bad).decode_batch([2, 4]),
                                      dcqformat.open(path).decode_batch([2, 4]))


@pytest.mark.parametrize("codec, version", [("ctx", "1.1"), ("ctxs", "1.2"), ("ctxg", "1.3")])
def test_cli_converts_with_ctx_and_info_says_so(tmp_path, codec, version):
    from common import gradient_npz

    gradient_npz(tmp_path / "src.npz", n=12, side=16, step=12, noise=20, classes=list("ab"), seed=1)
    out = tmp_path / "c.dcq"
    run = subprocess.run([sys.executable, "-m", "dcqformat", "convert", str(tmp_path / "src.npz"), str(out),
                          "--method", "mediancut", "--bits", "3", "--codec", codec, "--quiet"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    info = subprocess.run([sys.executable, "-m", "dcqformat", "info", str(out)], capture_output=True, text=True)
    said = " ".join(info.stdout.split())
    assert f"codec {codec} " in said + " " and f"dcq {version}," in said
    bad = subprocess.run([sys.executable, "-m", "dcqformat", "convert", str(tmp_path / "src.npz"),
                          str(tmp_path / "d.dcq"), "--bits", "6", "--codec", codec], capture_output=True, text=True)
    assert bad.returncode == 2 and "1..4" in bad.stderr


def test_context_count_matches_the_reference():
    for bits in range(1, 5):
        assert rans.context_count(bits) == ref.context_count(bits)
