"""Numba kernels of codec ``ctx`` (spec §5.3): index maps coded with rANS under a static
per-file model conditioned on causal neighbours.

A sample is coded in raster order. Each pixel's *context* is a function of its left, up,
up-left and up-right neighbours (:func:`context_count` contexts for ``bits``); a dropped pixel
(drop mask, spec §7) is not coded and takes its left neighbour's value, so that its
neighbours' contexts are defined. The model gives, per context, the cumulative frequencies of
the ``2**bits`` symbols, summing to ``2**PROB_BITS``. The coder is byte-wise rANS with a 32-bit
state (Duda 2013; the layout of Giesen's ``rans_byte.h``): the payload is the final state
(u32, little-endian) followed by the renormalisation bytes in the order the decoder reads them.

Each kernel has a plain-Python twin in ``tests/ctx_reference.py``, written from the spec.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..decode.kernels import _helper, _kernel

PROB_BITS = 12
PROB_SCALE = 1 << PROB_BITS
RANS_L = 1 << 23  # the state's lower bound after renormalisation
MAX_BITS = 4  # contexts of 5..8-bit maps would need models larger than the data they code

# decode_batch status codes
OK, OUT_OF_BYTES, BAD_END, TOO_SHORT, BAD_STRIPES = 0, 1, 2, 3, 4
MESSAGES = {OUT_OF_BYTES: "needs more bytes than it has", BAD_END: "does not end in the initial state "
            "with every byte read", TOO_SHORT: "is shorter than the 4-byte rANS state",
            BAD_STRIPES: "has a stripe table that does not fit it (each stripe >= 4 bytes, all summing to the "
            "payload)"}


def context_count(bits: int) -> int:
    """Contexts of a ``bits``-bit map: (L, U, UL, UR) in full for 1-2 bits, (L, U, pattern) for 3-4."""
    k = 1 << bits
    return k**4 if bits <= 2 else 16 * k * k


@_helper
def _left(work, w, i, x):
    """The left neighbour of flat pixel ``i`` (column ``x``): else the one above, else 0."""
    if x > 0:
        return np.int64(work[i - 1])
    if i >= w:
        return np.int64(work[i - w])
    return np.int64(0)


@_helper
def _combine(left, up, ul, ur, bits):
    """The context of a pixel from its four neighbours' values (spec §5.3)."""
    if bits <= 2:
        return (ur << (3 * bits)) | (ul << (2 * bits)) | (up << bits) | left
    pattern = np.int64(ul == left) | (np.int64(ul == up) << 1) | (np.int64(ur == up) << 2) \
        | (np.int64(ur == left) << 3)
    return (pattern << (2 * bits)) | (up << bits) | left


@_helper
def _context(work, w, i, x, bits):
    """Context of flat pixel ``i`` (column ``x``) of an image ``w`` wide (spec §5.3)."""
    left = _left(work, w, i, x)
    if i >= w:
        up = np.int64(work[i - w])
        ul = np.int64(work[i - w - 1]) if x > 0 else up
        ur = np.int64(work[i - w + 1]) if x < w - 1 else up
    else:
        up = ul = ur = left
    return _combine(left, up, ul, ur, bits)


@_kernel()
def contexts(work, kept, height, width, bits, ctx):
    """Fill the dropped pixels of the flat index map ``work`` (``kept[i]`` False) with their left
    neighbour's value, in raster order, and write every pixel's context into ``ctx``."""
    for i in range(height * width):
        x = i % width
        if not kept[i]:
            work[i] = _left(work, width, i, x)
        ctx[i] = _context(work, width, i, x, bits)
    return ctx


@_kernel()
def count(work, kept, ctx, counts):
    """Add each kept pixel's symbol to ``counts[context, symbol]``."""
    for i in range(work.shape[0]):
        if kept[i]:
            counts[ctx[i], work[i]] += 1
    return counts


@_kernel()
def encode(work, kept, ctx, cum, buf):
    """rANS-code the kept pixels of ``work`` (contexts ``ctx``) into the end of ``buf``, which has
    room for ``2 * pixels + 4`` bytes; return where the payload starts in ``buf``."""
    pos = buf.shape[0]
    x = np.int64(RANS_L)
    for i in range(work.shape[0] - 1, -1, -1):
        if not kept[i]:
            continue
        c, s = ctx[i], work[i]
        start = np.int64(cum[c, s])
        freq = np.int64(cum[c, s + 1]) - start
        x_max = ((RANS_L >> PROB_BITS) << 8) * freq
        while x >= x_max:
            pos -= 1
            buf[pos] = x & 0xFF
            x >>= 8
        x = ((x // freq) << PROB_BITS) + (x % freq) + start
    for b in range(3, -1, -1):
        pos -= 1
        buf[pos] = (x >> (8 * b)) & 0xFF
    return pos


@_helper
def _put_index(out, base, j, bits, value):
    """OR index ``value`` in as pixel ``j`` of the zeroed bit stream at ``out[base]`` (spec §5)."""
    bit = j * bits
    byte = base + (bit >> 3)
    shift = bit & 7
    out[byte] |= (value << shift) & 0xFF
    if shift + bits > 8:
        out[byte + 1] |= value >> (8 - shift)


@_helper
def _state(data, start):
    return np.int64(data[start]) | (np.int64(data[start + 1]) << 8) | (np.int64(data[start + 2]) << 16) \
        | (np.int64(data[start + 3]) << 24)


@_helper
def _symbol(cum, c, slot, k):
    """The symbol whose slot range in context ``c`` holds ``slot`` (branch-free)."""
    if k == 4:
        return np.int64(slot >= cum[c, 1]) + np.int64(slot >= cum[c, 2]) + np.int64(slot >= cum[c, 3])
    s = np.int64(0)
    for j in range(1, k):
        s += np.int64(slot >= cum[c, j])
    return s


@_helper
def _decode_one(data, start, end, h, w, mask_data, mo, patch_h, patch_w, bits, cum, work, y0):
    """Decode one payload (a sample, or a stripe of it whose first row is the sample's row
    ``y0``) into the flat index map ``work`` of its ``h`` rows; return its status. The left,
    up-left and up neighbours stay in registers, as in :func:`_decode_two`."""
    if end - start < 4:
        return TOO_SHORT
    x, p, k = _state(data, start), start + 4, 1 << bits
    gw = (w + patch_w - 1) // patch_w
    for y in range(h):
        gy = ((y0 + y) // patch_h) * gw
        i = y * w
        u = np.int64(work[i - w]) if y > 0 else np.int64(0)
        left, ul = u, u  # column 0: left = up-left = up (0 on the first row)
        for xx in range(w):
            if y > 0:
                r = np.int64(work[i - w + 1]) if xx < w - 1 else u
            else:
                r = u = ul = left
            g = gy + xx // patch_w
            if mo >= 0 and (mask_data[mo + (g >> 3)] >> (g & 7)) & 1:
                s = left  # a dropped pixel is not coded: it takes its left neighbour's value
            else:
                s, x, p = _step(data, p, end, x, _combine(left, u, ul, r, bits), cum, k)
                if p < 0:
                    return OUT_OF_BYTES
            work[i] = s
            left, ul, u = s, u, r
            i += 1
    return OK if x == RANS_L and p == end else BAD_END


@_helper
def _step(data, p, end, x, c, cum, k):
    """Decode one symbol in context ``c`` from state ``x`` (payload read up to ``p``, ending at
    ``end``): (symbol, state, position), position -1 when the payload runs out."""
    slot = x & (PROB_SCALE - 1)
    s = _symbol(cum, c, slot, k)
    lo = np.int64(cum[c, s])
    x = (np.int64(cum[c, s + 1]) - lo) * (x >> PROB_BITS) + slot - lo
    if x < RANS_L:  # renormalise: one or two bytes
        if p >= end:
            return s, x, -1
        x = (x << 8) | data[p]
        p += 1
        if x < RANS_L:
            if p >= end:
                return s, x, -1
            x = (x << 8) | data[p]
            p += 1
    return s, x, p


@_helper
def _decode_two(data, start1, end1, start2, end2, h, w, bits, cum, work1, work2):
    """:func:`_decode_one` of two unmasked payloads of one size (samples or stripes) in lockstep,
    into the maps ``work1`` and ``work2``: two independent dependency chains that the CPU
    overlaps. Each lane keeps its left, up-left and up neighbours in registers (one load per
    pixel, and the left one does not wait for the store of the pixel before). False when either
    is not right: the caller then decodes each alone to say which."""
    if end1 - start1 < 4 or end2 - start2 < 4:
        return False
    x1, p1, x2, p2, k = _state(data, start1), start1 + 4, _state(data, start2), start2 + 4, 1 << bits
    for y in range(h):
        i = y * w
        if y > 0:
            u1, u2 = np.int64(work1[i - w]), np.int64(work2[i - w])
        else:
            u1 = u2 = np.int64(0)
        l1, l2, ul1, ul2 = u1, u2, u1, u2  # column 0: left = up-left = up (0 on the first row)
        for xx in range(w):
            if y > 0:
                r1 = np.int64(work1[i - w + 1]) if xx < w - 1 else u1
                r2 = np.int64(work2[i - w + 1]) if xx < w - 1 else u2
                c1 = _combine(l1, u1, ul1, r1, bits)
                c2 = _combine(l2, u2, ul2, r2, bits)
            else:
                r1, r2 = l1, l2
                c1 = _combine(l1, l1, l1, l1, bits)
                c2 = _combine(l2, l2, l2, l2, bits)
            s1, x1, p1 = _step(data, p1, end1, x1, c1, cum, k)
            s2, x2, p2 = _step(data, p2, end2, x2, c2, cum, k)
            if p1 < 0 or p2 < 0:
                return False
            work1[i] = s1
            work2[i] = s2
            l1, l2, ul1, ul2, u1, u2 = s1, s2, u1, u2, r1, r2
            i += 1
    return x1 == RANS_L and p1 == end1 and x2 == RANS_L and p2 == end2


@_helper
def _pack(out, base, work, h, w, mask_data, mo, patch_h, patch_w, bits):
    """Bit-pack a decoded map's kept pixels in stream order at ``out[base]`` (spec §5, §7)."""
    if mo < 0:
        for i in range(h * w):
            _put_index(out, base, i, bits, work[i])
        return
    j = 0  # masked: kept patches in grid order, each row-major
    gh, gw = (h + patch_h - 1) // patch_h, (w + patch_w - 1) // patch_w
    for g in range(gh * gw):
        if (mask_data[mo + (g >> 3)] >> (g & 7)) & 1:
            continue
        y0, x0 = (g // gw) * patch_h, (g % gw) * patch_w
        for y in range(y0, min(y0 + patch_h, h)):
            for xx in range(x0, min(x0 + patch_w, w)):
                _put_index(out, base, j, bits, work[y * w + xx])
                j += 1


@_kernel()
def stripe_jobs(data, offsets, lengths, heights, widths, mask_offsets, stripe_rows, first_rows, last_rows, jobs,
                status):
    """The stripes to decode (spec §5.3): for sample ``b``, those holding rows ``first_rows[b]``
    to ``last_rows[b] - 1`` (every stripe of a masked sample). Row ``j`` of ``jobs`` is (sample,
    payload start, payload end, first row, rows); return how many (``status[b]`` says when a
    sample's stripe table is wrong)."""
    n = 0
    for b in range(offsets.shape[0]):
        h = heights[b]
        rows = h if stripe_rows == 0 else min(stripe_rows, h)
        k = (h + rows - 1) // rows
        pos, end = offsets[b] + 4 * (k - 1), offsets[b] + lengths[b]
        if pos > end:
            status[b] = BAD_STRIPES
            continue
        first, last = (0, h) if mask_offsets[b] >= 0 else (first_rows[b], last_rows[b])
        for s in range(k):
            size = end - pos
            if s < k - 1:  # the u32 length of stripe s, read as a rANS state is
                size = _state(data, offsets[b] + 4 * s)
            if size < 4 or pos + size > end or (s == k - 1 and pos + size != end):
                status[b] = BAD_STRIPES
                break
            y0 = s * rows
            if y0 < last and y0 + rows > first:
                jobs[n, 0], jobs[n, 1], jobs[n, 2], jobs[n, 3], jobs[n, 4] = b, pos, pos + size, y0, min(rows, h - y0)
                n += 1
            pos += size
    return n


@_helper
def _lane(data, job, widths, mask_data, mask_offsets, patch_h, patch_w, bits, cum, maps, map_offsets, status):
    """Decode one job alone (see :func:`decode_batch`)."""
    b, y0, rows = job[0], job[3], job[4]
    w, mo = widths[b], mask_offsets[b]
    first = map_offsets[b] + y0 * w
    work = maps[first : first + rows * w]
    result = _decode_one(data, job[1], job[2], rows, w, mask_data, mo, patch_h, patch_w, bits, cum, work, y0)
    if result != OK:
        status[b] = result


@_kernel(parallel=True)
def decode_batch(data, jobs, heights, widths, mask_data, mask_offsets, patch_h, patch_w, bits, cum, maps,
                 map_offsets, out, out_offsets, status):
    """Decode the stripes ``jobs`` (:func:`stripe_jobs`) into the zeroed index maps at
    ``maps[map_offsets[b]]``, then bit-pack each sample's map into the zeroed stream at
    ``out[out_offsets[b]]`` (its kept pixels in stream order, spec §5); ``status[b]`` is OK or
    what is wrong. Pairs of unmasked stripes of one size (two stripes of an image, or two small
    images) are decoded in lockstep. A sample is packed once all its stripes are decoded, by one
    thread: two stripes of a stream can share a byte, which two threads must not update at once."""
    for q in prange((jobs.shape[0] + 1) // 2):
        j = 2 * q
        pair = False
        if j + 1 < jobs.shape[0]:
            b1, b2 = jobs[j, 0], jobs[j + 1, 0]
            pair = mask_offsets[b1] < 0 and mask_offsets[b2] < 0 and jobs[j, 4] == jobs[j + 1, 4] \
                and widths[b1] == widths[b2]
        if pair:
            w, rows = widths[b1], jobs[j, 4]
            f1, f2 = map_offsets[b1] + jobs[j, 3] * w, map_offsets[b2] + jobs[j + 1, 3] * w
            work1, work2 = maps[f1 : f1 + rows * w], maps[f2 : f2 + rows * w]
            s1, e1, s2, e2 = jobs[j, 1], jobs[j, 2], jobs[j + 1, 1], jobs[j + 1, 2]
            if bits == 1:  # a literal bit depth lets the compiler specialise the inner loop (1.2x)
                ok = _decode_two(data, s1, e1, s2, e2, rows, w, 1, cum, work1, work2)
            elif bits == 2:
                ok = _decode_two(data, s1, e1, s2, e2, rows, w, 2, cum, work1, work2)
            elif bits == 3:
                ok = _decode_two(data, s1, e1, s2, e2, rows, w, 3, cum, work1, work2)
            else:
                ok = _decode_two(data, s1, e1, s2, e2, rows, w, 4, cum, work1, work2)
            if ok:
                continue
        for c in range(j, min(j + 2, jobs.shape[0])):  # alone, or a pair that failed: say which
            _lane(data, jobs[c], widths, mask_data, mask_offsets, patch_h, patch_w, bits, cum, maps, map_offsets,
                  status)
    for b in prange(heights.shape[0]):
        if status[b] == OK:
            _pack(out, out_offsets[b], maps[map_offsets[b] :], heights[b], widths[b], mask_data, mask_offsets[b],
                  patch_h, patch_w, bits)
    return status
