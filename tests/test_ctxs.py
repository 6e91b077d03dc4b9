"""Codec ctxs (spec §5.4): ctx in independent horizontal stripes. The kernels against the plain
reference, crop-aware decoding (only the stripes a crop touches), round trips, corruption."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ctx import sample_of, smooth_map

import dcqformat
from dcqformat import CorruptFile
from dcqformat.codecs import Shapes, ctx
from dcqformat.decode import bitpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "spec" / "test-vectors"))
import ctx_reference as ref  # noqa: E402

cases = st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 9), st.integers(1, 5), st.booleans(),
                  st.integers(0, 2**32 - 1))


def decode(dec: ctx._Decoder, payloads: list[bytes], shapes: Shapes, sizes: list[int]) -> list[bytes]:
    data = np.frombuffer(b"".join(payloads) + b"\0", np.uint8)
    lengths = np.array([len(p) for p in payloads], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    out, at = dec.decode(data, np.arange(len(payloads)), offsets, lengths, np.array(sizes, np.int64), 0, shapes)
    return [out[a : a + s].tobytes() for a, s in zip(at, sizes)]


@settings(max_examples=40, deadline=None)
@given(case=cases)
def test_striped_kernels_match_the_reference(case):
    """Same model, same payload bytes, same decoded maps as the spec's own code; a crop's rows
    come out right when only the stripes holding them are decoded."""
    bits, h, w, stripe_rows, masked, seed = case
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(3):
        patch = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dropped = rng.random(bitpack.grid_shape(h, w, *patch)) < 0.4 if masked else None
        samples.append((smooth_map(rng, h, w, bits), dropped, patch))
    patch = samples[0][2]  # one patch size per file
    samples = [(i, None if d is None else rng.random(bitpack.grid_shape(h, w, *patch)) < 0.4, patch)
               for i, d, _ in samples]
    enc = ctx._Encoder(bits, 3, stripe_rows)
    streams = [sample_of(i, bits, d, p) for i, d, p in samples]
    enc.start(streams)
    plain = [(i.reshape(-1).tolist(), ref.kept_pixels(h, w, p, None if d is None else d.tolist()), h, w)
             for i, d, p in samples]
    want = ref.model(plain, bits, stripe_rows)
    assert enc.freqs is not None and enc.freqs.tolist() == want
    assert enc.sections()[b"CTXM"] == ref.model_section(bits, want, stripe_rows)
    payloads = [enc.encode(s) for s in streams]
    for payload, (values, kept, _, _) in zip(payloads, plain):
        assert payload == ref.encode_striped(values, kept, h, w, bits, want, stripe_rows)
        work = ref.decode_striped(payload, kept, h, w, bits, want, stripe_rows)
        assert [v for v, k in zip(work, kept) if k] == [v for v, k in zip(values, kept) if k]
    mask_data = np.concatenate([bitpack.pack_mask(d) for _, d, _ in samples if d is not None] + [np.zeros(1, np.uint8)])
    mo, at = [], 0
    for _, d, _ in samples:
        mo.append(at if d is not None else -1)
        at += bitpack.pack_mask(d).size if d is not None else 0
    dec = ctx._Decoder(enc.cum, bits, stripe_rows)
    sizes = [len(s.stream) for s in streams]
    shapes = Shapes(np.full(3, h), np.full(3, w), patch, mask_data, np.array(mo, np.int64))
    assert decode(dec, payloads, shapes, sizes) == [s.stream for s in streams]
    first = int(rng.integers(0, h))
    end = int(rng.integers(first, h + 1))
    rows = np.array([[first, end]] * 3, np.int64)
    crops = decode(dec, payloads, Shapes(shapes.heights, shapes.widths, patch, mask_data, shapes.mask_offsets, rows),
                   sizes)
    for (idx, dropped, _), got, full in zip(samples, crops, streams):
        if dropped is None:  # unmasked: the rows asked for are right (masked samples decode whole)
            got_map = bitpack.unpack_indices(np.frombuffer(got, np.uint8), bits, h * w).reshape(h, w)
            np.testing.assert_array_equal(got_map[first:end], idx[first:end])
        else:
            assert got == full.stream


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_round_trip_and_crops_against_packed(tmp_path, bits):
    """Mixed sizes, masked samples, stripes of 64 rows: whole images and random crops decode as
    from the packed file."""
    rng = np.random.default_rng(bits)
    pal = rng.integers(0, 256, (2, 1 << bits, 3)).astype(np.uint8)
    items = []
    for k in range(12):
        h, w = [(150, 20), (150, 20), (64, 9), (1, 1), (70, 33), (129, 5)][k % 6]
        dropped = rng.random(bitpack.grid_shape(h, w, 4, 4)) < 0.5 if k % 4 == 3 else None
        items.append((smooth_map(rng, h, w, bits), dropped))
    paths = {}
    for codec in ("packed", "ctxs"):
        paths[codec] = tmp_path / f"{codec}.dcq"
        with dcqformat.DcqWriter(paths[codec], bits=bits, palettes=pal, codec=codec, patch_size=4) as wr:
            for k, (idx, dropped) in enumerate(items):
                wr.add(idx, palette=k % 2, label=k, dropped=dropped)
    a, b = dcqformat.open(paths["ctxs"], verify=True), dcqformat.open(paths["packed"])
    assert a.codec == "ctxs" and a.version == (1, 2)
    for k in range(len(items)):
        np.testing.assert_array_equal(a.decode(k), b.decode(k))
    idx = np.arange(len(items))
    hs, ws = a.field("height"), a.field("width")
    boxes = np.stack([rng.uniform(-2, hs), rng.uniform(-2, ws), rng.uniform(1, hs / 2 + 1), rng.uniform(1, ws)], 1)
    for interpolation in ("nearest", "bilinear"):
        np.testing.assert_array_equal(a.decode_crops(idx, boxes, (16, 16), interpolation=interpolation),
                                      b.decode_crops(idx, boxes, (16, 16), interpolation=interpolation))


def test_corrupt_stripe_tables_name_the_sample(tmp_path):
    from crafted import refresh

    rng = np.random.default_rng(5)
    path = tmp_path / "s.dcq"
    with dcqformat.DcqWriter(path, bits=2, palettes=rng.integers(0, 256, (1, 4, 3)).astype(np.uint8),
                             codec="ctxs") as wr:
        for _ in range(4):
            wr.add(smooth_map(rng, 200, 8, 2), palette=0)
    r = dcqformat.open(path)
    data_at = r.header.sections[b"DATA"].offset
    off = int(r.field("payload_offset")[2])
    r.close()
    blob = bytearray(path.read_bytes())
    for how, value in (("long", 1 << 20), ("short", 3)):
        b = bytearray(blob)
        struct.pack_into("<I", b, data_at + off + 4, value)  # the second stripe's length
        bad = tmp_path / f"{how}.dcq"
        bad.write_bytes(refresh(bytes(b)))
        with pytest.raises(CorruptFile, match="sample 2: ctxs payload has a stripe table"):
            dcqformat.open(bad).decode_batch([0, 1, 2, 3])
        np.testing.assert_array_equal(dcqformat.open(bad).decode_batch([0, 3]),
                                      dcqformat.open(path).decode_batch([0, 3]))



def test_crops_of_a_multi_file_set_decode_only_their_stripes(tmp_path, monkeypatch):
    """A DcqSet passes each crop's rows to its parts: the same crops as the packed set, from
    fewer stripes than the images have."""
    from dcqformat.codecs import rans
    from dcqformat.format.multifile import open_set

    rng = np.random.default_rng(11)
    pal = rng.integers(0, 256, (1, 4, 3)).astype(np.uint8)
    maps = [smooth_map(rng, 200, 24, 2) for _ in range(6)]
    paths: dict[str, list[Path]] = {"ctxs": [], "packed": []}
    for codec in paths:
        for part in range(2):
            path = tmp_path / f"{codec}-{part}.dcq"
            with dcqformat.DcqWriter(path, bits=2, palettes=pal, codec=codec) as wr:
                for m in maps[3 * part : 3 * part + 3]:
                    wr.add(m, palette=0)
            paths[codec].append(path)
    a, b = open_set(paths["ctxs"]), open_set(paths["packed"])
    jobs = []
    stripe_jobs = rans.stripe_jobs
    monkeypatch.setattr(rans, "stripe_jobs", lambda *args: jobs.append(stripe_jobs(*args)) or jobs[-1])
    boxes = np.array([[10, 0, 30, 24], [150, 3, 20, 10], [0, 0, 200, 24]] * 2, np.float64)
    idx = np.array([0, 4, 2, 5, 1, 3])
    np.testing.assert_array_equal(a.decode_crops(idx, boxes, (8, 8), interpolation="bilinear"),
                                  b.decode_crops(idx, boxes, (8, 8), interpolation="bilinear"))
    assert 0 < sum(jobs) < 6 * 4  # 4 stripes of 64 rows per image; the crops need fewer


def test_stripes_sharing_a_byte_decode_right_on_every_thread():
    """Two stripes of a stream can share a byte (3-bit, 4 rows of 5 pixels: 60 bits). Decoded on
    two threads, packing each stripe as it went lost bits now and then (21 of 3,000 batches);
    each sample is now packed by one thread once all its stripes are decoded."""
    rng = np.random.default_rng(0)
    maps = [smooth_map(rng, 6, 5, 3) for _ in range(64)]
    enc = ctx._Encoder(3, 64, 4)
    streams = [sample_of(m, 3, None, None) for m in maps]
    enc.start(streams)
    payloads = [enc.encode(s) for s in streams]
    dec = ctx._Decoder(enc.cum, 3, 4)
    shapes = Shapes(np.full(64, 6), np.full(64, 5))
    want = [s.stream for s in streams]
    for _ in range(1000):
        assert decode(dec, payloads, shapes, [len(s) for s in want]) == want
