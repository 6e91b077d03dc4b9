"""Codec ctxg (spec §5.5): pixel groups coded under relabelled contexts, in stripes. The kernels
against the plain reference, round trips and crops against packed files, corruption."""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ctx import sample_of, smooth_map
from test_ctxs import decode

import dcqformat
from dcqformat import CorruptFile
from dcqformat.codecs import Shapes, ctxg
from dcqformat.decode import bitpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "spec" / "test-vectors"))
import ctxg_reference as ref  # noqa: E402

cases = st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 19), st.integers(1, 5), st.booleans(),
                  st.integers(0, 2**32 - 1))


@settings(max_examples=40, deadline=None)
@given(case=cases)
def test_kernels_match_the_reference(case):
    """Same model, same payload bytes, same decoded maps as the spec's own code (escapes, padded
    last groups, dropped pixels, stripes); a crop's rows come out right from the stripes that hold them."""
    bits, h, w, stripe_rows, masked, seed = case
    rng = np.random.default_rng(seed)
    patch = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    samples = []
    for k in range(3):
        dropped = rng.random(bitpack.grid_shape(h, w, *patch)) < 0.4 if masked and k else None
        noisy = k == 2  # symbols the model never counted: escapes
        idx = rng.integers(0, 1 << bits, (h, w)).astype(np.uint8) if noisy else smooth_map(rng, h, w, bits)
        samples.append((idx, dropped))
    kept = [[True] * (h * w) if d is None else
            [not d[y // patch[0]][x // patch[1]] for y in range(h) for x in range(w)] for _, d in samples]
    plain = [(i.reshape(-1).tolist(), k, h, w) for (i, _), k in zip(samples, kept)]
    model_of, freqs = ref.model(plain[:2], bits, stripe_rows)
    enc = ctxg._Encoder(bits, 2, stripe_rows)
    enc.use_model(np.array(model_of), np.array(freqs))
    assert enc.sections()[b"CTXG"] == ref.model_section(bits, model_of, freqs, stripe_rows)
    streams = [sample_of(i, bits, d, patch if d is not None else None) for i, d in samples]
    payloads = [enc.encode(s) for s in streams]
    for payload, (values, keep, _, _) in zip(payloads, plain):
        assert payload == ref.encode(values, keep, h, w, bits, model_of, freqs, stripe_rows)
        got = ref.decode(payload, h, w, bits, model_of, freqs, stripe_rows)
        assert [v for v, k in zip(got, keep) if k] == [v for v, k in zip(values, keep) if k]
    masks = [bitpack.pack_mask(d) if d is not None else None for _, d in samples]
    mask_data = np.concatenate([m for m in masks if m is not None] + [np.zeros(1, np.uint8)])
    mo, at = [], 0
    for m in masks:
        mo.append(at if m is not None else -1)
        at += m.size if m is not None else 0
    dec = ctxg.CODEC.decoder({b"CTXG": (0, np.frombuffer(enc.sections()[b"CTXG"], np.uint8))}, bits)
    sizes = [len(s.stream) for s in streams]
    shapes = Shapes(np.full(3, h), np.full(3, w), patch, mask_data, np.array(mo, np.int64))
    assert decode(dec, payloads, shapes, sizes) == [s.stream for s in streams]
    first = int(rng.integers(0, h))
    end = int(rng.integers(first, h + 1))
    rows = np.array([[first, end]] * 3, np.int64)
    crops = decode(dec, payloads, Shapes(shapes.heights, shapes.widths, patch, mask_data, shapes.mask_offsets, rows),
                   sizes)
    for (idx, dropped), got, full in zip(samples, crops, streams):
        if dropped is None:  # unmasked: the rows asked for are right (masked samples decode whole)
            got_map = bitpack.unpack_indices(np.frombuffer(got, np.uint8), bits, h * w).reshape(h, w)
            np.testing.assert_array_equal(got_map[first:end], idx[first:end])
        else:
            assert got == full.stream


def test_relabelling_tables_follow_the_spec():
    """The library's relabelling and key count agree with the reference for every key."""
    for bits in (1, 2, 3, 4):
        t = ctxg.tables(bits)
        n, k = ctxg.neighbours(bits), 1 << bits
        assert t.labels.shape == (ctxg.key_count(bits), k) == (k**n, k)
        for key in np.random.default_rng(bits).integers(0, k**n, 200):
            context = [(int(key) >> (bits * j)) & (k - 1) for j in range(n)]
            assert ref.key_of(context, bits) == key
            label = ref.relabel(context, bits)[1]
            assert t.labels[key].tolist() == [label[v] for v in range(k)]


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_round_trip_and_crops_against_packed(tmp_path, bits):
    """Mixed sizes (widths that are and are not whole groups), masked samples: whole images and
    random crops decode as from the packed file."""
    rng = np.random.default_rng(bits)
    pal = rng.integers(0, 256, (2, 1 << bits, 3)).astype(np.uint8)
    items = []
    for k in range(14):
        h, w = [(150, 24), (150, 24), (64, 9), (1, 1), (70, 33), (129, 5), (80, 16)][k % 7]
        dropped = rng.random(bitpack.grid_shape(h, w, 4, 4)) < 0.5 if k % 4 == 3 else None
        items.append((smooth_map(rng, h, w, bits), dropped))
    paths = {}
    for codec in ("packed", "ctxg"):
        paths[codec] = tmp_path / f"{codec}.dcq"
        with dcqformat.DcqWriter(paths[codec], bits=bits, palettes=pal, codec=codec, patch_size=4) as wr:
            for k, (idx, dropped) in enumerate(items):
                wr.add(idx, palette=k % 2, label=k, dropped=dropped)
    a, b = dcqformat.open(paths["ctxg"], verify=True), dcqformat.open(paths["packed"])
    assert a.codec == "ctxg" and a.version == (1, 3)
    assert a.decode_batch([]).shape[0] == 0 and len(a.streams(np.array([], np.int64)).offsets) == 0
    for k in range(len(items)):
        np.testing.assert_array_equal(a.decode(k), b.decode(k))
    idx = np.arange(len(items))
    np.testing.assert_array_equal(a.decode_batch(idx[:2]), b.decode_batch(idx[:2]))
    hs, ws = a.field("height"), a.field("width")
    boxes = np.stack([rng.uniform(-2, hs), rng.uniform(-2, ws), rng.uniform(1, hs / 2 + 1), rng.uniform(1, ws)], 1)
    for interpolation in ("nearest", "bilinear"):
        np.testing.assert_array_equal(a.decode_crops(idx, boxes, (16, 16), interpolation=interpolation),
                                      b.decode_crops(idx, boxes, (16, 16), interpolation=interpolation))


def test_smaller_than_packed_on_smooth_maps(tmp_path):
    rng = np.random.default_rng(3)
    pal = rng.integers(0, 256, (1, 4, 3)).astype(np.uint8)
    maps = [smooth_map(rng, 96, 96, 2) for _ in range(20)]
    size = {}
    for codec in ("packed", "ctxg"):
        with dcqformat.DcqWriter(tmp_path / f"{codec}.dcq", bits=2, palettes=pal, codec=codec) as wr:
            for m in maps:
                wr.add(m, palette=0)
        size[codec] = (tmp_path / f"{codec}.dcq").stat().st_size
    assert size["ctxg"] < 0.5 * size["packed"]


def test_wider_maps_are_refused(tmp_path):
    with pytest.raises(ValueError, match="ctxg codes 1..4-bit"):
        dcqformat.DcqWriter(tmp_path / "x.dcq", bits=5, palettes=np.zeros((1, 32, 3), np.uint8), codec="ctxg")


def _file(tmp_path: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(5)
    path = tmp_path / "g.dcq"
    with dcqformat.DcqWriter(path, bits=2, palettes=rng.integers(0, 256, (1, 4, 3)).astype(np.uint8),
                             codec="ctxg") as wr:
        for _ in range(n):
            wr.add(smooth_map(rng, 200, 8, 2), palette=0)
    return path


def test_corrupt_payloads_name_the_sample(tmp_path):
    """A stripe table that does not fit, a truncated stripe, a flipped state: the library's error
    naming the sample, and the other samples still decode."""
    from crafted import refresh

    path = _file(tmp_path)
    r = dcqformat.open(path)
    data_at = r.header.sections[b"DATA"].offset
    off, length = int(r.field("payload_offset")[2]), int(r.field("payload_length")[2])
    good = r.decode_batch([0, 3])
    r.close()
    blob = bytearray(path.read_bytes())
    table = 4 * 3  # 200 rows: 4 stripes of 64
    first = struct.unpack_from("<I", blob, data_at + off)[0]
    last = data_at + off + table + first - 1  # the first stripe's last byte
    cases = {"stripe table": lambda b: struct.pack_into("<I", b, data_at + off + 4, 1 << 20),
             "8-byte rANS state|initial state": lambda b: struct.pack_into("<I", b, data_at + off, 5),
             "initial state|more bytes": lambda b: b.__setitem__(last, b[last] ^ 0x5A),
             "initial state|more bytes ": lambda b: struct.pack_into("<Q", b, data_at + off + table, 1 << 40)}
    for message, corrupt in cases.items():
        b = bytearray(blob)
        corrupt(b)
        bad = tmp_path / "bad.dcq"
        bad.write_bytes(refresh(bytes(b)))
        with pytest.raises(CorruptFile, match=f"sample 2: ctxg payload .*({message.strip()})"):
            dcqformat.open(bad).decode_batch([0, 1, 2, 3])
        np.testing.assert_array_equal(dcqformat.open(bad).decode_batch([0, 3]), good)
    assert length > table


def _model(bits: int = 2, keys: int | None = None, models: int = 1, freqs: list[int] | None = None,
           prob_bits: int = 12, stripe_rows: int = 64, tail: bytes = b"") -> bytes:
    keys = ctxg.key_count(bits) if keys is None else keys
    a = ctxg.alphabet(bits) + 1
    f = freqs if freqs is not None else [4095] + [0] * (a - 2) + [1]
    body = bytes(keys) + struct.pack(f"<{len(f)}H", *f) * models
    return struct.pack("<BBHHH", bits, prob_bits, stripe_rows, keys, models) + zlib.compress(body) + tail


@pytest.mark.parametrize(("blob", "message"), [
    (_model()[:5], "too short"),
    (_model(bits=3), "bits differ"),
    (_model(prob_bits=11), "precision"),
    (_model(stripe_rows=0), "stripe height"),
    (_model(keys=7), "key count"),
    (_model(models=0), "model count"),
    (_model()[:-3], "wrong size|does not inflate"),
    (_model(tail=b"x"), "trailing"),
    (_model(freqs=[4000] + [0] * 255 + [1]), "do not sum"),
])
def test_model_section_is_checked(blob, message):
    with pytest.raises(CorruptFile, match=message):
        ctxg.CODEC.decoder({b"CTXG": (0, np.frombuffer(blob, np.uint8))}, 2)


def test_model_ids_in_range():
    keys = ctxg.key_count(2)
    body = bytes([0] * (keys - 1) + [3]) + struct.pack("<257H", *([4095] + [0] * 255 + [1]))
    blob = struct.pack("<BBHHH", 2, 12, 64, keys, 1) + zlib.compress(body)
    with pytest.raises(CorruptFile, match="model id out of range"):
        ctxg.CODEC.decoder({b"CTXG": (0, np.frombuffer(blob, np.uint8))}, 2)
    with pytest.raises(CorruptFile, match="needs a CTXG section"):
        ctxg.CODEC.decoder({}, 2)


@pytest.mark.parametrize(("h", "w", "bits"), [(3, 1, 1), (5, 1, 2), (1, 1, 4), (2, 3, 3)])
def test_tiny_files_round_trip(tmp_path, h, w, bits):
    """A file of one tiny image: every symbol is rarer than the escape threshold, so the model
    is the escape alone (it must not take all 2**12 slots: the encoder could not code it)."""
    rng = np.random.default_rng(h * w * bits)
    idx = rng.integers(0, 1 << bits, (h, w)).astype(np.uint8)
    pal = rng.integers(0, 256, (1, 1 << bits, 1)).astype(np.uint8)
    with dcqformat.DcqWriter(tmp_path / "t.dcq", bits=bits, palettes=pal, channels=1, codec="ctxg") as wr:
        wr.add(idx, palette=0)
    np.testing.assert_array_equal(dcqformat.open(tmp_path / "t.dcq", verify=True).decode(0)[..., 0], pal[0, idx, 0])
    assert ctxg.quantise(np.array([0] * 256 + [9])).max() < 4096


def test_noise_that_the_model_never_saw_codes_and_decodes(tmp_path):
    """Every group of the later images escapes (the model saw flat maps only): the most words a
    payload can take, and still the exact maps back."""
    pal = np.arange(12, dtype=np.uint8).reshape(1, 4, 3)
    rng = np.random.default_rng(9)
    flat = [np.full((40, 40), k % 4, np.uint8) for k in range(4)]
    noise = [rng.integers(0, 4, (70, 33)).astype(np.uint8) for _ in range(3)]
    with dcqformat.DcqWriter(tmp_path / "n.dcq", bits=2, palettes=pal, codec="ctxg", dict_samples=4) as wr:
        for m in flat + noise:
            wr.add(m, palette=0)
    r = dcqformat.open(tmp_path / "n.dcq", verify=True)
    assert (r.field("payload_length")[4:] > 70 * 33 * 2 // 8).all()  # escapes: more than the packed bits
    for k, m in enumerate(flat + noise):
        np.testing.assert_array_equal(r.decode(k), pal[0][m])
