"""Every Numba kernel against its plain NumPy twin, compiled and with JIT off."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from dcqformat.decode import bitpack, kernels


def _data(seed, bits, n_img, n, channels, n_pal=3):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 1 << bits, (n_img, n)).astype(np.uint8)
    pals = rng.integers(0, 256, (n_pal, 1 << bits, channels)).astype(np.uint8)
    pids = rng.integers(0, n_pal, n_img).astype(np.int64)
    size = bitpack.packed_size(n, bits)
    data = np.concatenate([bitpack.pack_indices(i, bits) for i in idx] + [np.zeros(1, np.uint8)])
    offsets = np.arange(n_img, dtype=np.int64) * size
    return idx, pals, pids, data, offsets


@given(bits=st.integers(1, 8), n=st.integers(1, 200), seed=st.integers(0, 2**32 - 1))
def test_unpack_indices(jit, bits, n, seed):
    idx = np.random.default_rng(seed).integers(0, 1 << bits, n).astype(np.uint8)
    packed = bitpack.pack_indices(idx, bits)
    out = np.empty(n, np.uint8)
    kernels.unpack_indices(packed, bits, n, out)
    np.testing.assert_array_equal(out, bitpack.unpack_indices(packed, bits, n))


@given(bits=st.integers(1, 8), channels=st.sampled_from([1, 3]), n=st.integers(1, 100),
       chw=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_gather(jit, bits, channels, n, chw, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 1 << bits, n).astype(np.uint8)
    pal = rng.integers(0, 256, (1 << bits, channels)).astype(np.uint8)
    want = bitpack.gather(idx, pal)
    out = np.empty(n * channels, np.uint8)
    kernels.gather(idx, pal, out, chw)
    np.testing.assert_array_equal(out, (want.T if chw else want).reshape(-1))


@given(bits=st.integers(1, 8), channels=st.sampled_from([1, 3]), n=st.integers(1, 80), chw=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_decode_packed_batch(jit, bits, channels, n, chw, seed):
    idx, pals, pids, data, offsets = _data(seed, bits, 5, n, channels)
    out = np.empty((5, n * channels), np.uint8)
    kernels.decode_packed_batch(data, offsets, pids, pals, bits, n, out, chw)
    for b in range(5):
        want = bitpack.decode_image(data[offsets[b]:], pals[pids[b]], bits, 1, n)[0]
        np.testing.assert_array_equal(out[b], (want.T if chw else want).reshape(-1))


@given(bits=st.sampled_from([1, 2, 4, 8]), channels=st.sampled_from([1, 3]), words=st.integers(1, 20),
       chw=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_decode_lut_batch(jit, bits, channels, words, chw, seed):
    n = words * (8 // bits)
    idx, pals, pids, data, offsets = _data(seed, bits, 6, n, channels)
    out = np.empty((6, n * channels), np.uint8)
    luts = kernels.build_luts(pals, bits, chw)
    kernels.decode_lut_batch(data, offsets, pids, luts, n * bits // 8, out.view(kernels.WORD_DTYPES[bits]), chw)
    want = pals[pids[:, None], idx]  # (6, n, C)
    np.testing.assert_array_equal(out, (want.transpose(0, 2, 1) if chw else want).reshape(6, -1))


@given(bits=st.integers(1, 8), channels=st.sampled_from([1, 3]), h=st.integers(1, 12), w=st.integers(1, 12),
       ph=st.integers(1, 5), pw=st.integers(1, 5), chw=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_decode_masked_and_kept_counts(jit, bits, channels, h, w, ph, pw, chw, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 1 << bits, (2, h, w)).astype(np.uint8)
    pals = rng.integers(0, 256, (2, 1 << bits, channels)).astype(np.uint8)
    dropped = rng.random(bitpack.grid_shape(h, w, ph, pw)) < 0.5
    order = bitpack.kept_pixel_order(h, w, ph, pw, dropped)
    masked_stream = bitpack.pack_indices(idx[0].reshape(-1)[order], bits)
    plain_stream = bitpack.pack_indices(idx[1].reshape(-1), bits)
    want = [bitpack.decode_image(masked_stream, pals[1], bits, h, w, (ph, pw, dropped)),
            bitpack.decode_image(plain_stream, pals[0], bits, h, w)]
    data = np.concatenate([masked_stream, plain_stream, np.zeros(1, np.uint8)])
    masks = np.concatenate([np.zeros(3, np.uint8), bitpack.pack_mask(dropped)])
    out = np.full((2, h * w * channels), 99, np.uint8)
    kernels.decode_masked_batch(data, np.array([0, masked_stream.size]), np.array([1, 0]), pals, bits, h, w, masks,
                                np.array([3, -1]), ph, pw, out, chw)
    for k in range(2):
        np.testing.assert_array_equal(out[k], (want[k].transpose(2, 0, 1) if chw else want[k]).reshape(-1))
    counts = kernels.kept_pixel_counts(masks, np.array([3]), np.array([h]), np.array([w]), ph, pw)
    assert counts.tolist() == [order.size]
    grid = dropped.size
    if grid % 8:  # a padding bit set: the mask is refused (-1)
        masks[3 + grid // 8] |= 1 << (grid % 8)
        assert kernels.kept_pixel_counts(masks, np.array([3]), np.array([h]), np.array([w]), ph, pw).tolist() == [-1]


def test_blocks_verified(jit):
    verified = np.array([True, False, True])
    starts, ends = np.array([0, 8200]), np.array([4096, 9000])
    assert kernels.blocks_verified(verified, starts, ends, 12)
    assert not kernels.blocks_verified(verified, np.array([4000]), np.array([4200]), 12)
    assert kernels.blocks_verified(verified, np.array([5000]), np.array([5000]), 12)  # empty range


@given(bits=st.integers(1, 8), channels=st.sampled_from([1, 3]), bilinear=st.booleans(), chw=st.booleans(),
       floats=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_decode_resample_batch(jit, bits, channels, bilinear, chw, floats, seed):
    from dcqformat.decode import resample

    rng = np.random.default_rng(seed)
    n_img, oh, ow = 4, int(rng.integers(1, 9)), int(rng.integers(1, 9))
    hs, ws = rng.integers(1, 12, n_img), rng.integers(1, 12, n_img)
    idx = [rng.integers(0, 1 << bits, (h, w)).astype(np.uint8) for h, w in zip(hs, ws)]
    streams = [bitpack.pack_indices(i, bits) for i in idx]
    data = np.concatenate(streams + [np.zeros(1, np.uint8)])
    offsets = np.concatenate([[0], np.cumsum([s.size for s in streams])[:-1]]).astype(np.int64)
    table = rng.integers(0, 256, (2, 1 << bits, channels)).astype(np.uint8)
    if floats:
        table = (table / 255.0 - 0.5).astype(np.float32)
    tids = rng.integers(0, 2, n_img)
    boxes = np.stack([rng.uniform(-4, 8, n_img), rng.uniform(-4, 8, n_img), rng.uniform(1, 14, n_img),
                      rng.uniform(1, 14, n_img)], 1)
    if not bilinear:
        boxes[:, :2] = np.floor(boxes[:, :2])
    flips = rng.random(n_img) < 0.5
    fill = np.full(channels, 7, table.dtype)
    rounding = 0.0 if floats else 0.5
    out = np.empty((n_img, channels, oh, ow) if chw else (n_img, oh, ow, channels), table.dtype)
    kernels.decode_resample_batch(data, offsets, hs, ws, tids, table, fill, bits, boxes, flips, bilinear, rounding,
                                  out, chw)
    for b in range(n_img):
        want = resample.resample(table[tids[b]][idx[b]], tuple(boxes[b]), flips[b], oh, ow, bilinear, fill)
        if not floats:
            want = np.floor(want + (0.5 if bilinear else 0.0))
        got = out[b].transpose(1, 2, 0) if chw else out[b]
        np.testing.assert_allclose(got, want, atol=1e-4)


@given(bits=st.integers(1, 8), channels=st.sampled_from([1, 3]), bilinear=st.booleans(), chw=st.booleans(),
       mean=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_decode_masked_resample_batch(jit, bits, channels, bilinear, chw, mean, seed):
    """Masked and plain samples of several sizes: the twin fills the dropped pixels (the given
    value, or the rounded float32 mean kept colour) and resamples like the plain kernel."""
    from dcqformat.decode import resample

    rng = np.random.default_rng(seed)
    n_img, ph, pw = 4, int(rng.integers(1, 5)), int(rng.integers(1, 5))
    oh, ow = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    hs, ws = rng.integers(1, 12, n_img), rng.integers(1, 12, n_img)
    colours = rng.integers(0, 256, (2, 1 << bits, channels)).astype(np.uint8)
    values = np.stack([(np.arange(256) / 255.0 - 0.1 * c).astype(np.float32) for c in range(channels)])
    table = np.stack([values[c][colours[..., c]] for c in range(channels)], -1)
    tids = rng.integers(0, 2, n_img)
    streams, masks, mask_offsets, pixels, dropped_px = [], [np.zeros(1, np.uint8)], [], [], []
    for h, w in zip(hs, ws):
        idx = rng.integers(0, 1 << bits, (h, w)).astype(np.uint8)
        dropped = rng.random(bitpack.grid_shape(h, w, ph, pw)) < 0.5
        if rng.random() < 0.25:  # a plain sample among masked ones
            streams.append(bitpack.pack_indices(idx.reshape(-1), bits))
            mask_offsets.append(-1)
            dropped_px.append(np.zeros((h, w), bool))
        else:
            order = bitpack.kept_pixel_order(h, w, ph, pw, dropped)
            streams.append(bitpack.pack_indices(idx.reshape(-1)[order], bits))
            mask_offsets.append(sum(m.size for m in masks))
            masks.append(bitpack.pack_mask(dropped))
            dropped_px.append(bitpack.dropped_pixels(dropped, ph, pw, h, w))
        pixels.append(idx)
    data = np.concatenate(streams + [np.zeros(1, np.uint8)])
    offsets = np.concatenate([[0], np.cumsum([s.size for s in streams])[:-1]]).astype(np.int64)
    boxes = np.stack([rng.uniform(-4, 8, n_img), rng.uniform(-4, 8, n_img), rng.uniform(1, 14, n_img),
                      rng.uniform(1, 14, n_img)], 1)
    if not bilinear:
        boxes[:, :2] = np.floor(boxes[:, :2])
    flips = rng.random(n_img) < 0.5
    drop = rng.uniform(-1, 1, (n_img, channels)).astype(np.float32)
    fill = np.full(channels, 0.25, np.float32)
    out = np.empty((n_img, channels, oh, ow) if chw else (n_img, oh, ow, channels), np.float32)
    hidden = np.zeros((n_img, oh, ow), bool)
    mean_args = (colours, values) if mean else (np.zeros((0, 1, 1), np.uint8), np.zeros((0, 256), np.float32))
    want_drop = drop.copy()
    kernels.decode_masked_resample_batch(data, offsets, hs, ws, tids, table, drop, fill, bits,
                                         np.concatenate(masks), np.array(mask_offsets, np.int64), ph, pw, *mean_args,
                                         boxes, flips, bilinear, 0.0, out, chw, hidden)
    for b in range(n_img):
        image = colours[tids[b]][pixels[b]]
        if mean:
            kept = image[~dropped_px[b]].astype(np.float32)
            level = np.round(kept.sum(0) / np.float32(max(len(kept), 1))).astype(int)
            want_drop[b] = values[np.arange(channels), level]
        np.testing.assert_array_equal(drop[b], want_drop[b])
        values_of = table[tids[b]][pixels[b]]
        values_of[dropped_px[b]] = want_drop[b]
        want = resample.resample(values_of, tuple(boxes[b]), flips[b], oh, ow, bilinear, fill)
        np.testing.assert_allclose(out[b].transpose(1, 2, 0) if chw else out[b], want, atol=1e-5)
        marks = resample.resample(dropped_px[b][..., None].astype(np.float64), tuple(boxes[b]), flips[b], oh, ow,
                                  False, np.zeros(1))[..., 0] != 0
        np.testing.assert_array_equal(hidden[b], marks)


@given(channels=st.sampled_from([1, 3]), bilinear=st.booleans(), chw=st.booleans(), floats=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_resample_pixels_batch(jit, channels, bilinear, chw, floats, seed):
    """uint8 images through per-channel tables, resampled like the twin of the decode kernel."""
    from dcqformat.decode import resample

    rng = np.random.default_rng(seed)
    n_img, h, w = 3, int(rng.integers(1, 12)), int(rng.integers(1, 12))
    oh, ow = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    images = rng.integers(0, 256, (n_img, channels, h, w)).astype(np.uint8)
    tables = rng.integers(0, 256, (channels, 256)).astype(np.uint8)
    if floats:
        tables = (tables / 255.0 - 0.5).astype(np.float32)
    boxes = np.stack([rng.uniform(-4, 8, n_img), rng.uniform(-4, 8, n_img), rng.uniform(1, 14, n_img),
                      rng.uniform(1, 14, n_img)], 1)
    if not bilinear:
        boxes[:, :2] = np.floor(boxes[:, :2])
    flips = rng.random(n_img) < 0.5
    rounding = 0.0 if floats else 0.5
    out = np.empty((n_img, channels, oh, ow) if chw else (n_img, oh, ow, channels), tables.dtype)
    kernels.resample_pixels_batch(images, tables, boxes, flips, bilinear, rounding, out, chw)
    for b in range(n_img):
        values = np.stack([tables[c][images[b, c]] for c in range(channels)], -1)
        want = resample.resample(values, tuple(boxes[b]), flips[b], oh, ow, bilinear, tables[:, 0])
        if not floats:
            want = np.floor(want + (0.5 if bilinear else 0.0))
        got = out[b].transpose(1, 2, 0) if chw else out[b]
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_gather_runs_matches_slicing(jit):
    rng = np.random.default_rng(0)
    srcs = [rng.integers(0, 256, n, dtype=np.uint8) for n in (1000, 30, 1)]
    ids = np.array([0, 1, 0, 0, 2, 1], np.int64)
    offsets = np.array([10, 3, 500, 990, 0, 29], np.int64)
    lengths = np.array([5, 20, 0, 10, 1, 1], np.int64)
    dst_offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    dst = np.zeros(int(lengths.sum()), np.uint8)
    kernels.gather_runs(kernels.array_list(srcs), ids, offsets, lengths, dst, dst_offsets)
    want = np.concatenate([srcs[i][o : o + n] for i, o, n in zip(ids, offsets, lengths)])  # the NumPy twin
    np.testing.assert_array_equal(dst, want)
