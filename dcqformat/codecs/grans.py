"""Numba kernels of codec ``ctxg`` (spec §5.5): index maps coded a *group* of pixels at a time.

A row of a ``bits``-bit map is cut into groups of ``G = 8 // bits`` pixels (the last one padded
with copies of the row's last pixel), each held as one *group byte* (pixel ``j`` at bit
``bits * j``): for 1, 2 and 4 bits and a width that is a multiple of ``G``, the rows of group
bytes are the bit-packed stream itself (spec §5). A group is coded as one symbol: its pixels'
*labels* under its context (:mod:`dcqformat.codecs.ctxg`), with rANS under the file's model of
that context; a symbol the model gives no frequency is coded as the escape, then in ``G * bits``
plain bits. The coder is rANS with a 64-bit state renormalised a 32-bit word at a time (Giesen's
``rans64.h``): a word every ~15 groups of a 2-bit photo, so the branch is predictable. Per
group the decoder does four table loads (context -> model, slot -> symbol, symbol -> range,
symbol -> group byte) and one multiply; two stripes decode in lockstep, two dependency chains
that the CPU overlaps.

Each kernel has a plain-Python twin in ``spec/test-vectors/ctxg_reference.py``, written from the spec.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..decode.kernels import _helper, _kernel
from .rans import _pack

PROB_BITS = 12
PROB_SCALE = 1 << PROB_BITS
RANS_L = 1 << 31  # the state's lower bound after renormalisation
MODEL_SHIFT = 20  # keyinfo[key] = model << MODEL_SHIFT | the offset of the key's row of groupout
RANGE_STRIDE = 512  # ranges[model * RANGE_STRIDE + symbol] = frequency << PROB_BITS | cumulative
STATE_BYTES = 8

# decode_batch status codes
OK, OUT_OF_BYTES, BAD_END, TOO_SHORT, BAD_STRIPES = 0, 1, 2, 3, 4
MESSAGES = {OUT_OF_BYTES: "needs more bytes than it has", BAD_END: "does not end in the initial state "
            "with every word read", TOO_SHORT: "is shorter than the 8-byte rANS state",
            BAD_STRIPES: "has a stripe table that does not fit it (each stripe >= 4 bytes, all summing to the "
            "payload)"}


@_helper
def _word(data, p, end):
    """The little-endian u32 at ``data[p]``; past the payload's end its last word (the caller
    reports the overrun from the position)."""
    q = min(p, end - 4)
    return np.int64(data[q]) | (np.int64(data[q + 1]) << 8) | (np.int64(data[q + 2]) << 16) \
        | (np.int64(data[q + 3]) << 24)


@_helper
def _key(left, ul, u, ur, bits):
    """The table key of a group's context from its neighbours (spec §5.5)."""
    if bits <= 2:
        return left | (ul << bits) | (u << (2 * bits)) | (ur << (2 * bits + 8))
    return left | (u << bits)


@_helper
def _decode_two(data, s1, e1, s2, e2, rows, ng, bits, tables, gb1, base1, gb2, base2, zeros):
    """Decode two payloads (stripes of ``rows`` rows of ``ng`` groups) in lockstep into the group
    bytes at ``gb1[base1]`` and ``gb2[base2]``: two independent dependency chains (context ->
    model -> symbol -> group -> next context) that the CPU overlaps. Returns each one's status."""
    if e1 - s1 < STATE_BYTES or e2 - s2 < STATE_BYTES:
        return (TOO_SHORT if e1 - s1 < STATE_BYTES else OK), (TOO_SHORT if e2 - s2 < STATE_BYTES else OK)
    keyinfo, slots, ranges, esc_start, groupout = tables
    x1 = _word(data, s1, e1) | (_word(data, s1 + 4, e1) << 32)
    x2 = _word(data, s2, e2) | (_word(data, s2 + 4, e2) << 32)
    p1, p2 = s1 + STATE_BYTES, s2 + STATE_BYTES
    per = 8 // bits
    low, top, nbits = (1 << bits) - 1, bits * (per - 1), per * bits
    esc = np.int64(1) << nbits  # the escape is the symbol after the last
    for y in range(rows):
        r1, r2 = base1 + y * ng, base2 + y * ng
        if y == 0:  # the row above a stripe's first is zeros
            a1, q1, a2, q2 = zeros, 0, zeros, 0
        else:
            a1, q1, a2, q2 = gb1, r1 - ng, gb2, r2 - ng
        l1, l2 = np.int64(a1[q1]) & low, np.int64(a2[q2]) & low
        ul1, ul2 = l1, l2
        for g in range(ng):
            u1, u2 = np.int64(a1[q1 + g]), np.int64(a2[q2 + g])
            if g + 1 < ng:
                ur1, ur2 = np.int64(a1[q1 + g + 1]) & low, np.int64(a2[q2 + g + 1]) & low
            else:
                ur1, ur2 = u1 >> top, u2 >> top
            i1, i2 = np.int64(keyinfo[_key(l1, ul1, u1, ur1, bits)]), np.int64(keyinfo[_key(l2, ul2, u2, ur2, bits)])
            m1, m2 = i1 >> MODEL_SHIFT, i2 >> MODEL_SHIFT
            t1, t2 = x1 & (PROB_SCALE - 1), x2 & (PROB_SCALE - 1)
            esc1, esc2 = t1 >= esc_start[m1], t2 >= esc_start[m2]
            y1, y2 = np.int64(slots[(m1 << PROB_BITS) | t1]), np.int64(slots[(m2 << PROB_BITS) | t2])
            f1 = np.int64(ranges[m1 * RANGE_STRIDE + (esc if esc1 else y1)])
            f2 = np.int64(ranges[m2 * RANGE_STRIDE + (esc if esc2 else y2)])
            x1 = (f1 >> PROB_BITS) * (x1 >> PROB_BITS) + t1 - (f1 & (PROB_SCALE - 1))
            x2 = (f2 >> PROB_BITS) * (x2 >> PROB_BITS) + t2 - (f2 & (PROB_SCALE - 1))
            if x1 < RANS_L:
                x1 = (x1 << 32) | _word(data, p1, e1)
                p1 += 4
            if x2 < RANS_L:
                x2 = (x2 << 32) | _word(data, p2, e2)
                p2 += 4
            if esc1:  # not in the model: the symbol's plain bits follow its escape
                y1, x1 = x1 & (esc - 1), x1 >> nbits
                if x1 < RANS_L:
                    x1 = (x1 << 32) | _word(data, p1, e1)
                    p1 += 4
            if esc2:
                y2, x2 = x2 & (esc - 1), x2 >> nbits
                if x2 < RANS_L:
                    x2 = (x2 << 32) | _word(data, p2, e2)
                    p2 += 4
            v1, v2 = np.int64(groupout[(i1 & ((1 << MODEL_SHIFT) - 1)) + y1]), \
                np.int64(groupout[(i2 & ((1 << MODEL_SHIFT) - 1)) + y2])
            gb1[r1 + g] = v1
            gb2[r2 + g] = v2
            l1, ul1, l2, ul2 = v1 >> top, u1 >> top, v2 >> top, u2 >> top
        if p1 > e1 or p2 > e2:
            return (OUT_OF_BYTES if p1 > e1 else OK), (OUT_OF_BYTES if p2 > e2 else OK)
    return (OK if x1 == RANS_L and p1 == e1 else BAD_END), (OK if x2 == RANS_L and p2 == e2 else BAD_END)


@_helper
def _to_stream(out, base, groups, gbase, h, w, mask_data, mo, patch_h, patch_w, bits):
    """Bit-pack a decoded group map's kept pixels in stream order at ``out[base]`` (spec §5, §7):
    its pixels as an index map, packed as ``ctx`` packs its maps."""
    per = 8 // bits
    ng, low = (w + per - 1) // per, (1 << bits) - 1
    work = np.empty(h * w, np.uint8)
    for y in range(h):
        for xx in range(w):
            work[y * w + xx] = (np.int64(groups[gbase + y * ng + xx // per]) >> (bits * (xx % per))) & low
    _pack(out, base, work, h, w, mask_data, mo, patch_h, patch_w, bits)


@_helper
def _target(b, y0, ng, direct, groups, group_offsets, out, out_offsets):
    """Where job rows of sample ``b`` from row ``y0`` go: its stream, or its group map."""
    if direct[b]:
        return out, out_offsets[b] + y0 * ng
    return groups, group_offsets[b] + y0 * ng


@_kernel(parallel=True)
def decode_batch(data, jobs, heights, widths, mask_data, mask_offsets, patch_h, patch_w, bits, tables, direct, groups,
                 group_offsets, out, out_offsets, status):
    """Decode the stripes ``jobs`` (rows of :func:`dcqformat.codecs.rans.stripe_jobs`), two at a
    time: neighbouring jobs of one shape pair up, a job without a partner decodes beside itself
    (its second copy into scratch). A sample with ``direct[b]`` (unmasked, its rows whole bytes of
    1, 2 or 4-bit pixels) is decoded straight into its zeroed stream at ``out[out_offsets[b]]``; the
    others into their group maps at ``groups[group_offsets[b]]``, then bit-packed (kept pixels in
    stream order). ``status[b]`` is OK or what is wrong. Stripes start on row boundaries, so no
    two share a byte."""
    per = 8 // bits
    zeros = np.zeros((int(widths.max()) // per if widths.shape[0] else 0) + 2, np.uint8)  # the row above a stripe
    n = jobs.shape[0]
    for q in prange((n + 1) // 2):
        j = 2 * q
        b1 = jobs[j, 0]
        ng = (widths[b1] + per - 1) // per
        if j + 1 < n and jobs[j + 1, 4] == jobs[j, 4] and (widths[jobs[j + 1, 0]] + per - 1) // per == ng:
            b2 = jobs[j + 1, 0]
            gb1, base1 = _target(b1, jobs[j, 3], ng, direct, groups, group_offsets, out, out_offsets)
            gb2, base2 = _target(b2, jobs[j + 1, 3], ng, direct, groups, group_offsets, out, out_offsets)
            st1, st2 = _decode_two(data, jobs[j, 1], jobs[j, 2], jobs[j + 1, 1], jobs[j + 1, 2], jobs[j, 4], ng, bits,
                                   tables, gb1, base1, gb2, base2, zeros)
            if st1 != OK:
                status[b1] = st1
            if st2 != OK:
                status[b2] = st2
        else:
            for c in range(j, min(j + 2, n)):  # each beside a copy of itself, into scratch
                b = jobs[c, 0]
                ng = (widths[b] + per - 1) // per
                gb, base = _target(b, jobs[c, 3], ng, direct, groups, group_offsets, out, out_offsets)
                scratch = np.empty(jobs[c, 4] * ng + 1, np.uint8)
                st, _ = _decode_two(data, jobs[c, 1], jobs[c, 2], jobs[c, 1], jobs[c, 2], jobs[c, 4], ng, bits,
                                    tables, gb, base, scratch, 0, zeros)
                if st != OK:
                    status[b] = st
    for b in prange(heights.shape[0]):
        if status[b] == OK and not direct[b]:
            _to_stream(out, out_offsets[b], groups, group_offsets[b], heights[b], widths[b], mask_data,
                       mask_offsets[b], patch_h, patch_w, bits)
    return status


@_kernel()
def encode(syms, models, escaped, cum, bits, buf):
    """rANS-code the groups of a stripe (their symbols ``syms``, under models ``models``; an
    ``escaped`` one as the escape symbol and then its plain bits) into the end of the u32 array
    ``buf``; return where the payload starts in ``buf`` (the state's two words, low first, then
    the words in the order the decoder reads them). ``cum`` is (models, symbols + 2): the escape
    is the last symbol."""
    pos = buf.shape[0]
    x = np.int64(RANS_L)
    nbits = (8 // bits) * bits
    esc = cum.shape[1] - 2
    for i in range(syms.shape[0] - 1, -1, -1):
        m, s = models[i], np.int64(syms[i])
        if escaped[i]:
            if x >= (RANS_L >> nbits) << 32:
                pos -= 1
                buf[pos] = x & 0xFFFFFFFF
                x >>= 32
            x = (x << nbits) | s
            s = esc
        start = np.int64(cum[m, s])
        freq = np.int64(cum[m, s + 1]) - start
        if x >= ((RANS_L >> PROB_BITS) << 32) * freq:
            pos -= 1
            buf[pos] = x & 0xFFFFFFFF
            x >>= 32
        x = ((x // freq) << PROB_BITS) + (x % freq) + start
    buf[pos - 1] = x >> 32
    buf[pos - 2] = x & 0xFFFFFFFF
    return pos - 2
