"""Numba kernels of the decoder, each with a plain NumPy twin in :mod:`dcqformat.decode.bitpack`.

Set ``DCQ_DISABLE_JIT=1`` in the environment (before import) or call
``set_jit_enabled(False)`` to run the same kernels as plain Python, for debugging.
Kernels never check bounds: the reader validates every offset and size before calling them.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import prange

_enabled = os.environ.get("DCQ_DISABLE_JIT", "").lower() not in ("1", "true", "yes")
_parallel = True


def set_jit_enabled(enabled: bool) -> None:
    """Turn Numba compilation of the top-level kernels on or off (debugging switch)."""
    global _enabled
    _enabled = bool(enabled)


def jit_enabled() -> bool:
    """Whether the kernels run compiled."""
    return _enabled


def set_parallel(enabled: bool) -> None:
    """Use the multi-threaded (default) or the single-threaded build of the batch kernels.

    DataLoader workers use the single-threaded build: the workers are the parallelism, and a
    forked child must not rely on a thread pool its parent started.
    """
    global _parallel
    _parallel = bool(enabled)


# A forked child must not use a thread pool its parent started (GNU OpenMP aborts the child).
os.register_at_fork(after_in_child=lambda: set_parallel(False))


def _helper(fn: Callable[..., Any]) -> Callable[..., Any]:
    return numba.njit(cache=True, nogil=True, inline="always")(fn) if _enabled else fn


class _Kernel:
    """A top-level kernel: compiled on first use while JIT is enabled, else plain Python."""

    def __init__(self, fn: Callable[..., Any], parallel: bool) -> None:
        self.py_func = fn
        self.parallel = parallel
        self._compiled: dict[bool, Callable[..., Any]] = {}
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def __call__(self, *args: Any) -> Any:
        if not _enabled:
            return self.py_func(*args)
        threads = self.parallel and _parallel
        fn = self._compiled.get(threads)
        if fn is None:
            source = self.py_func
            if self.parallel and not threads:
                # Numba's disk cache is keyed by qualified name: the serial build needs its own.
                source = types.FunctionType(source.__code__, source.__globals__, source.__name__ + "_serial")
                source.__qualname__ = self.py_func.__qualname__ + "_serial"
            fn = self._compiled[threads] = numba.njit(cache=True, nogil=True, parallel=threads)(source)
        return fn(*args)


def _kernel(parallel: bool = False) -> Callable[[Callable[..., Any]], _Kernel]:
    return lambda fn: _Kernel(fn, parallel)


@_helper
def _read_index(src, base, pos, bits):
    """Index number ``pos`` of the bit stream starting at ``src[base]``."""
    bit = pos * bits
    byte = base + (bit >> 3)
    shift = bit & 7
    value = np.int64(src[byte]) >> shift
    if shift + bits > 8:
        value |= np.int64(src[byte + 1]) << (8 - shift)
    return value & ((1 << bits) - 1)


@_helper
def _put(out, n, pixel, pal, index, chw):
    channels = pal.shape[1]
    if chw:
        for c in range(channels):
            out[c * n + pixel] = pal[index, c]
    else:
        for c in range(channels):
            out[pixel * channels + c] = pal[index, c]


@_helper
def _decode_stream(src, base, bits, n, pal, out, chw):
    """Decode ``n`` consecutive pixels of a stream into a flat HWC or CHW image."""
    if bits == 1 or bits == 2 or bits == 4 or bits == 8:
        per_byte = 8 // bits
        mask = (1 << bits) - 1
        full = n // per_byte
        for j in range(full):
            byte = src[base + j]
            for k in range(per_byte):
                _put(out, n, j * per_byte + k, pal, (byte >> (k * bits)) & mask, chw)
        for p in range(full * per_byte, n):
            _put(out, n, p, pal, _read_index(src, base, p, bits), chw)
    else:  # 3, 5, 6, 7 bits: a bit accumulator, one byte read when it runs low (never past the stream)
        mask = (1 << bits) - 1
        acc, have, at = np.int64(0), 0, base
        for p in range(n):
            if have < bits:
                acc |= np.int64(src[at]) << have
                at += 1
                have += 8
            _put(out, n, p, pal, acc & mask, chw)
            acc >>= bits
            have -= bits


@_kernel()
def unpack_indices(src, bits, n, out):
    """Unpack ``n`` indices of ``bits`` bits from ``src`` into the uint8 array ``out``."""
    _unpack_all(src, 0, bits, n, out)
    return out


@_kernel()
def gather(indices, palette, out, chw):
    """Look flat ``indices`` up in ``palette`` (K, C) into flat ``out`` (HWC or CHW order)."""
    n = indices.shape[0]
    for p in range(n):
        _put(out, n, p, palette, indices[p], chw)
    return out


@_kernel(parallel=True)
def decode_packed_batch(data, offsets, palette_ids, palettes, bits, n, out, chw):
    """Decode unmasked samples of ``n`` pixels each into ``out`` (N, n*C), in parallel."""
    for b in prange(offsets.shape[0]):
        _decode_stream(data, offsets[b], bits, n, palettes[palette_ids[b]], out[b], chw)
    return out


@_helper
def _kept_count(mask_data, m0, h, w, patch_h, patch_w):
    """Pixels of an ``h`` x ``w`` image that its drop mask at ``mask_data[m0]`` (one bit per
    patch, LSB first, 1 = dropped) keeps; edge patches count their own pixels."""
    gw = (w + patch_w - 1) // patch_w
    kept = 0
    for g in range(((h + patch_h - 1) // patch_h) * gw):
        if not (mask_data[m0 + (g >> 3)] >> (g & 7)) & 1:
            kept += min(patch_h, h - (g // gw) * patch_h) * min(patch_w, w - (g % gw) * patch_w)
    return kept


@_kernel(parallel=True)
def decode_masked_batch(data, offsets, palette_ids, palettes, bits, height, width, mask_data, mask_offsets,
                        patch_h, patch_w, out, chw):
    """Decode samples of one size, masked or not, into ``out`` (N, H*W*C), in parallel.

    Sample ``b`` with ``mask_offsets[b] >= 0`` has its drop mask (one bit per patch, LSB first,
    1 = dropped) at ``mask_data[mask_offsets[b]]`` and a stream of its kept pixels only (kept
    patches in grid order, each in row-major order); its dropped pixels are set to 0. A sample
    with ``mask_offsets[b] < 0`` is plain.
    """
    n = height * width
    gh = (height + patch_h - 1) // patch_h
    gw = (width + patch_w - 1) // patch_w
    for b in prange(offsets.shape[0]):
        pal = palettes[palette_ids[b]]
        o = out[b]
        if mask_offsets[b] < 0:
            _decode_stream(data, offsets[b], bits, n, pal, o, chw)
            continue
        channels = pal.shape[1]
        kept = _kept_count(mask_data, mask_offsets[b], height, width, patch_h, patch_w)
        idx = np.empty(kept, np.uint8)
        _unpack_all(data, offsets[b], bits, kept, idx)  # the kept pixels' indices, then placed patch by patch
        pos = 0
        for g in range(gh * gw):
            dropped = (mask_data[mask_offsets[b] + (g >> 3)] >> (g & 7)) & 1
            y0 = (g // gw) * patch_h
            x0 = (g % gw) * patch_w
            x1 = min(x0 + patch_w, width)
            for y in range(y0, min(y0 + patch_h, height)):
                if dropped and chw:
                    for c in range(channels):
                        o[c * n + y * width + x0 : c * n + y * width + x1] = 0
                elif dropped:
                    o[(y * width + x0) * channels : (y * width + x1) * channels] = 0
                else:
                    for x in range(x0, x1):
                        _put(o, n, y * width + x, pal, idx[pos], chw)
                        pos += 1
    return out


@_kernel()
def kept_pixel_counts(masks, mask_offsets, heights, widths, patch_h, patch_w):
    """Number of kept pixels of each masked sample (used to validate payload lengths); -1 for a
    mask whose padding bits (past the last patch, in its last byte) are not all zero."""
    counts = np.zeros(mask_offsets.shape[0], dtype=np.int64)
    for s in range(mask_offsets.shape[0]):
        h = heights[s]
        w = widths[s]
        gh = (h + patch_h - 1) // patch_h
        gw = (w + patch_w - 1) // patch_w
        total = _kept_count(masks, mask_offsets[s], h, w, patch_h, patch_w)
        rest = (gh * gw) & 7
        if rest and masks[mask_offsets[s] + ((gh * gw) >> 3)] >> rest:
            total = -1
        counts[s] = total
    return counts


@_kernel()
def blocks_verified(verified, starts, ends, block_shift):
    """True when every DATA block touched by the byte ranges [start, end) is verified."""
    for s in range(starts.shape[0]):
        if ends[s] > starts[s]:
            for blk in range(starts[s] >> block_shift, ((ends[s] - 1) >> block_shift) + 1):
                if not verified[blk]:
                    return False
    return True


@_kernel(parallel=True)
def decode_lut_batch(data, offsets, lut_ids, luts, nbytes, out, chw):
    """Decode samples whose ``nbytes`` payload bytes each expand to ``C`` output words.

    ``luts`` is (L, 256, C) of words of ``8 // bits`` bytes (see :func:`build_luts`), ``out``
    the output viewed as words, (N, nbytes * C). Used for 1, 2, 4 and 8 bits.
    """
    channels = luts.shape[2]
    for b in prange(offsets.shape[0]):
        lut = luts[lut_ids[b]]
        o = out[b]
        base = offsets[b]
        if chw and channels == 3:  # the common cases, unrolled
            for j in range(nbytes):
                byte = data[base + j]
                o[j] = lut[byte, 0]
                o[nbytes + j] = lut[byte, 1]
                o[2 * nbytes + j] = lut[byte, 2]
        elif chw:
            for j in range(nbytes):
                byte = data[base + j]
                for c in range(channels):
                    o[c * nbytes + j] = lut[byte, c]
        elif channels == 3:
            for j in range(nbytes):
                byte = data[base + j]
                o[3 * j] = lut[byte, 0]
                o[3 * j + 1] = lut[byte, 1]
                o[3 * j + 2] = lut[byte, 2]
        else:
            for j in range(nbytes):
                byte = data[base + j]
                for c in range(channels):
                    o[j * channels + c] = lut[byte, c]
    return out


@_helper
def _unpack_all(src, base, bits, n, dest):
    """All ``n`` indices of a stream into ``dest``; 1, 2, 4 and 8 bits have constant-shift loops."""
    full = n * bits // 8 if 8 % bits == 0 else 0
    if bits == 8:
        for p in range(n):
            dest[p] = src[base + p]
    elif bits == 4:
        for j in range(full):
            byte = src[base + j]
            dest[2 * j] = byte & 15
            dest[2 * j + 1] = byte >> 4
    elif bits == 2:
        for j in range(full):
            byte = src[base + j]
            dest[4 * j] = byte & 3
            dest[4 * j + 1] = (byte >> 2) & 3
            dest[4 * j + 2] = (byte >> 4) & 3
            dest[4 * j + 3] = byte >> 6
    elif bits == 1:
        for j in range(full):
            byte = src[base + j]
            for k in range(8):
                dest[8 * j + k] = (byte >> k) & 1
    for p in range(full * 8 // bits if full else 0, n):
        dest[p] = _read_index(src, base, p, bits)


@_helper
def _nearest(idx, h, w, rows, cols, pal, fill, o, chw):
    """Write ``o`` (C, OH, OW) or (OH, OW, C) from the index map ``idx`` at the given rows/cols.

    One loop nest per layout, the three channels of RGB unrolled: a channel loop or a branch
    inside the pixel loop makes this 2.5x slower.
    """
    channels = pal.shape[1]
    if channels == 3 and chw:
        for y in range(rows.shape[0]):
            sy = rows[y]
            for x in range(cols.shape[0]):
                sx = cols[x]
                if 0 <= sy < h and 0 <= sx < w:
                    k = idx[sy * w + sx]
                    o[0, y, x] = pal[k, 0]
                    o[1, y, x] = pal[k, 1]
                    o[2, y, x] = pal[k, 2]
                else:
                    o[0, y, x] = fill[0]
                    o[1, y, x] = fill[1]
                    o[2, y, x] = fill[2]
    elif channels == 3:
        for y in range(rows.shape[0]):
            sy = rows[y]
            for x in range(cols.shape[0]):
                sx = cols[x]
                if 0 <= sy < h and 0 <= sx < w:
                    k = idx[sy * w + sx]
                    o[y, x, 0] = pal[k, 0]
                    o[y, x, 1] = pal[k, 1]
                    o[y, x, 2] = pal[k, 2]
                else:
                    o[y, x, 0] = fill[0]
                    o[y, x, 1] = fill[1]
                    o[y, x, 2] = fill[2]
    else:
        for y in range(rows.shape[0]):
            sy = rows[y]
            for x in range(cols.shape[0]):
                sx = cols[x]
                v = pal[idx[sy * w + sx], 0] if 0 <= sy < h and 0 <= sx < w else fill[0]
                if chw:
                    o[0, y, x] = v
                else:
                    o[y, x, 0] = v


@_helper
def _hrow(idx, row, c0, c1, rx, pal, dest):
    """Row ``row`` (flat offset) of an index map interpolated along x at the output's columns:
    ``dest[c, x]`` (float64), the RGB channels unrolled."""
    if pal.shape[1] == 3:
        for x in range(c0.shape[0]):
            i0, i1, a = idx[row + c0[x]], idx[row + c1[x]], rx[x]
            dest[0, x] = pal[i0, 0] * (1.0 - a) + pal[i1, 0] * a
            dest[1, x] = pal[i0, 1] * (1.0 - a) + pal[i1, 1] * a
            dest[2, x] = pal[i0, 2] * (1.0 - a) + pal[i1, 2] * a
    else:
        for x in range(c0.shape[0]):
            i0, i1, a = idx[row + c0[x]], idx[row + c1[x]], rx[x]
            for c in range(pal.shape[1]):
                dest[c, x] = pal[i0, c] * (1.0 - a) + pal[i1, c] * a


@_helper
def _bilinear(idx, w, r0, r1, ry, c0, c1, rx, pal, rounding, o, chw):
    """Bilinear counterpart of :func:`_nearest` (two taps and a weight per row and column),
    separable: each source row is interpolated along x once, kept while the next output rows use
    it (an enlarged crop reuses each about ``OH / h`` times), then two rows are blended along y."""
    channels, ow = pal.shape[1], c0.shape[0]
    rows = np.empty((2, channels, ow), np.float64)
    held = np.full(2, -1, np.int64)  # the source row each buffer holds
    for y in range(r0.shape[0]):
        top = bottom = -1
        for k in range(2):
            if held[k] == r0[y]:
                top = k
            if held[k] == r1[y]:
                bottom = k
        if top < 0:
            top = 0 if bottom != 0 else 1
            _hrow(idx, r0[y] * w, c0, c1, rx, pal, rows[top])
            held[top] = r0[y]
        if bottom < 0:
            bottom = 1 - top
            _hrow(idx, r1[y] * w, c0, c1, rx, pal, rows[bottom])
            held[bottom] = r1[y]
        a = ry[y]
        t, u = rows[top], rows[bottom]
        if channels == 3 and chw:
            for x in range(ow):
                o[0, y, x] = t[0, x] * (1.0 - a) + u[0, x] * a + rounding
                o[1, y, x] = t[1, x] * (1.0 - a) + u[1, x] * a + rounding
                o[2, y, x] = t[2, x] * (1.0 - a) + u[2, x] * a + rounding
        elif channels == 3:
            for x in range(ow):
                o[y, x, 0] = t[0, x] * (1.0 - a) + u[0, x] * a + rounding
                o[y, x, 1] = t[1, x] * (1.0 - a) + u[1, x] * a + rounding
                o[y, x, 2] = t[2, x] * (1.0 - a) + u[2, x] * a + rounding
        else:
            for c in range(channels):
                for x in range(ow):
                    v = t[c, x] * (1.0 - a) + u[c, x] * a + rounding
                    if chw:
                        o[c, y, x] = v
                    else:
                        o[y, x, c] = v


@_helper
def _axis(start, span, size, flip, bilinear, i0, i1, frac):
    """Source positions along one axis of an output of ``i0.shape[0]`` pixels, the window
    ``start, span`` of an image ``size`` long: nearest (``i0``) or two taps and the weight of the
    second (bilinear); ``flip`` mirrors the output."""
    n = i0.shape[0]
    for i in range(n):
        f = start + ((n - 1 - i if flip else i) + 0.5) * (span / n)
        if bilinear:
            t = min(max(f - 0.5, 0.0), size - 1.0)
            i0[i] = int(t)
            i1[i] = min(i0[i] + 1, size - 1)
            frac[i] = t - i0[i]
        else:
            i0[i] = int(np.floor(f))


@_helper
def _taps(box, flip, h, w, bilinear, r0, r1, ry, c0, c1, rx):
    """Rows and columns of an output for the window ``box = (y0, x0, h, w)`` (:func:`_axis`);
    see :func:`decode_resample_batch`."""
    _axis(box[0], box[2], h, False, bilinear, r0, r1, ry)
    _axis(box[1], box[3], w, flip, bilinear, c0, c1, rx)


@_kernel(parallel=True)
def decode_resample_batch(data, offsets, heights, widths, table_ids, table, fill, bits, boxes, flips, bilinear,
                          rounding, out, chw):
    """Decode and crop/flip/resize unmasked samples to one output size in a single pass.

    Sample ``b`` is the bit stream at ``data[offsets[b]]`` of a ``heights[b] x widths[b]``
    image; its palette is ``table[table_ids[b]]`` (uint8 colours, or float32 values already
    normalised). ``boxes[b] = (y0, x0, h, w)`` is the source window, in pixels, that fills the
    output; parts outside the image take ``fill`` (per channel). ``flips[b]`` mirrors the output
    horizontally. Nearest sampling takes pixel ``floor(y0 + (y + 0.5) * h / OH)``; bilinear
    samples at ``y0 + (y + 0.5) * h / OH - 0.5``, clamped to the image (align_corners=False).
    ``out`` is (N, C, OH, OW) when ``chw`` else (N, OH, OW, C); ``rounding`` is 0.5 when it
    holds integers (bilinear values are rounded), else 0.
    """
    oh = out.shape[2] if chw else out.shape[1]
    ow = out.shape[3] if chw else out.shape[2]
    for b in prange(offsets.shape[0]):
        h = heights[b]
        w = widths[b]
        idx = np.empty(h * w, np.uint8)
        _unpack_all(data, offsets[b], bits, h * w, idx)
        r0, r1, ry = np.empty(oh, np.int64), np.empty(oh, np.int64), np.zeros(oh, np.float64)
        c0, c1, rx = np.empty(ow, np.int64), np.empty(ow, np.int64), np.zeros(ow, np.float64)
        _taps(boxes[b], flips[b], h, w, bilinear, r0, r1, ry, c0, c1, rx)
        if bilinear:
            _bilinear(idx, w, r0, r1, ry, c0, c1, rx, table[table_ids[b]], rounding, out[b], chw)
        else:
            _nearest(idx, h, w, r0, c0, table[table_ids[b]], fill, out[b], chw)
    return out


@_kernel(parallel=True)
def decode_masked_resample_batch(data, offsets, heights, widths, table_ids, table, drop, fill, bits, mask_data,
                                 mask_offsets, patch_h, patch_w, colours, values, boxes, flips, bilinear, rounding,
                                 out, chw, hidden):
    """:func:`decode_resample_batch` for samples with dropped patches (and plain ones, whose
    ``mask_offsets[b] < 0``; masks and streams as in :func:`decode_masked_batch`), in one pass.

    A dropped pixel has the value ``drop[b]`` (per channel) and is sampled like any other.
    When ``colours`` is not empty it is the mean colour instead: ``colours[table_ids[b]]``
    (uint8, the palette whose values ``table`` holds) averaged over the kept pixels in float32,
    rounded half to even, looked up in ``values`` (C, 256), and written to ``drop[b]``. When
    ``hidden`` (N, OH, OW) is not empty, it is set where the output's nearest source pixel is a
    dropped one (outside the image: False), whatever the interpolation.
    """
    oh = out.shape[2] if chw else out.shape[1]
    ow = out.shape[3] if chw else out.shape[2]
    for b in prange(offsets.shape[0]):
        h = heights[b]
        w = widths[b]
        own = table[table_ids[b]]
        k = own.shape[0]
        channels = own.shape[1]
        local = np.empty((k + 1, channels), table.dtype)  # entry 0: the dropped pixels' value
        local[1:] = own
        idx = np.zeros(h * w, np.uint16)  # index + 1, or 0 where dropped
        if mask_offsets[b] < 0:
            kept = h * w
            raw = np.empty(kept, np.uint8)
            _unpack_all(data, offsets[b], bits, kept, raw)
            for p in range(kept):
                idx[p] = np.uint16(raw[p]) + np.uint16(1)
        else:
            gh = (h + patch_h - 1) // patch_h
            gw = (w + patch_w - 1) // patch_w
            m0 = mask_offsets[b]
            kept = _kept_count(mask_data, m0, h, w, patch_h, patch_w)
            raw = np.empty(kept, np.uint8)
            _unpack_all(data, offsets[b], bits, kept, raw)
            pos = 0
            for g in range(gh * gw):
                if (mask_data[m0 + (g >> 3)] >> (g & 7)) & 1:
                    continue
                y0 = (g // gw) * patch_h
                x0 = (g % gw) * patch_w
                for y in range(y0, min(y0 + patch_h, h)):
                    for x in range(x0, min(x0 + patch_w, w)):
                        idx[y * w + x] = np.uint16(raw[pos]) + np.uint16(1)
                        pos += 1
        if colours.shape[0] > 0:
            counts = np.zeros(k, np.int64)
            for p in range(kept):
                counts[raw[p]] += 1
            pal = colours[table_ids[b]]
            for c in range(channels):
                total = 0
                for i in range(k):
                    total += counts[i] * pal[i, c]
                level = np.rint(np.float32(total) / np.float32(max(kept, 1)))
                drop[b, c] = values[c, int(level)]
        for c in range(channels):
            local[0, c] = drop[b, c]
        r0, r1, ry = np.empty(oh, np.int64), np.empty(oh, np.int64), np.zeros(oh, np.float64)
        c0, c1, rx = np.empty(ow, np.int64), np.empty(ow, np.int64), np.zeros(ow, np.float64)
        _taps(boxes[b], flips[b], h, w, bilinear, r0, r1, ry, c0, c1, rx)
        if bilinear:
            _bilinear(idx, w, r0, r1, ry, c0, c1, rx, local, rounding, out[b], chw)
        else:
            _nearest(idx, h, w, r0, c0, local, fill, out[b], chw)
        if hidden.shape[0] > 0:
            if bilinear:
                _taps(boxes[b], flips[b], h, w, False, r0, r1, ry, c0, c1, rx)
            for y in range(oh):
                for x in range(ow):
                    sy = r0[y]
                    sx = c0[x]
                    hidden[b, y, x] = 0 <= sy < h and 0 <= sx < w and idx[sy * w + sx] == 0
    return out


@_helper
def _plane(plane, t, r0, r1, ry, c0, c1, rx, bilinear, rounding, o):
    """One channel of :func:`resample_pixels_batch`: ``o`` (OH, OW) from ``plane`` (H, W) through ``t``."""
    h = plane.shape[0]
    w = plane.shape[1]
    if bilinear:
        for y in range(r0.shape[0]):
            for x in range(c0.shape[0]):
                top = t[plane[r0[y], c0[x]]] * (1.0 - rx[x]) + t[plane[r0[y], c1[x]]] * rx[x]
                bottom = t[plane[r1[y], c0[x]]] * (1.0 - rx[x]) + t[plane[r1[y], c1[x]]] * rx[x]
                o[y, x] = top * (1.0 - ry[y]) + bottom * ry[y] + rounding
    else:
        for y in range(r0.shape[0]):
            sy = r0[y]
            row = 0 <= sy < h
            for x in range(c0.shape[0]):
                sx = c0[x]
                o[y, x] = t[plane[sy, sx]] if row and 0 <= sx < w else t[0]


@_kernel(parallel=True)
def resample_pixels_batch(images, tables, boxes, flips, bilinear, rounding, out, chw):
    """Crop/flip/resize uint8 images (N, C, H, W) to ``out`` in one pass, with the sampling
    rules of :func:`decode_resample_batch`: channel ``c``'s value ``v`` becomes ``tables[c, v]``
    (C, 256), interpolated after the lookup; outside the image, ``tables[c, 0]``."""
    oh = out.shape[2] if chw else out.shape[1]
    ow = out.shape[3] if chw else out.shape[2]
    for b in prange(images.shape[0]):
        r0, r1, ry = np.empty(oh, np.int64), np.empty(oh, np.int64), np.zeros(oh, np.float64)
        c0, c1, rx = np.empty(ow, np.int64), np.empty(ow, np.int64), np.zeros(ow, np.float64)
        _taps(boxes[b], flips[b], images.shape[2], images.shape[3], bilinear, r0, r1, ry, c0, c1, rx)
        for c in range(images.shape[1]):
            if chw:
                _plane(images[b, c], tables[c], r0, r1, ry, c0, c1, rx, bilinear, rounding, out[b, c])
            else:
                _plane(images[b, c], tables[c], r0, r1, ry, c0, c1, rx, bilinear, rounding, out[b, :, :, c])
    return out


WORD_DTYPES = {1: np.uint64, 2: np.uint32, 4: np.uint16, 8: np.uint8}


def build_luts(palettes: np.ndarray, bits: int, chw: bool) -> np.ndarray:
    """Expansion tables of :func:`decode_lut_batch` for (P, 2**bits, C) palettes.

    Entry ``[p, byte, w]`` holds, as one word of ``8 // bits`` bytes, either the bytes
    ``w*ppb .. w*ppb+ppb-1`` of the HWC pixels that ``byte`` encodes (``chw=False``) or the
    channel-``w`` values of those pixels (``chw=True``), ``ppb = 8 // bits`` pixels per byte.
    """
    per_byte = 8 // bits
    shifts = np.arange(per_byte, dtype=np.uint16) * bits
    idx = (np.arange(256, dtype=np.uint16)[:, None] >> shifts) & ((1 << bits) - 1)
    pix = palettes[:, idx]  # (P, 256, ppb, C)
    if chw:
        pix = pix.transpose(0, 1, 3, 2)  # (P, 256, C, ppb)
    pix = np.ascontiguousarray(pix).reshape(palettes.shape[0], 256, -1)
    return pix.view(WORD_DTYPES[bits])


def array_list(arrays: list[np.ndarray]) -> Any:
    """The arrays as one argument for a kernel (a Numba typed list; a plain list without JIT)."""
    if not _enabled:
        return list(arrays)
    from numba.typed import List

    return List(arrays)


@_kernel(parallel=True)
def gather_runs(sources, source_ids, offsets, lengths, dst, dst_offsets):
    """Copy ``sources[source_ids[k]][offsets[k] : offsets[k] + lengths[k]]`` to
    ``dst[dst_offsets[k] : ...]`` for every k: a batch's streams from several files into one
    buffer, ``sources`` from :func:`array_list` (NumPy twin: slicing, in the tests)."""
    for k in prange(offsets.shape[0]):
        s, d, n = offsets[k], dst_offsets[k], lengths[k]
        dst[d : d + n] = sources[source_ids[k]][s : s + n]
    return dst
