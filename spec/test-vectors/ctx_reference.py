"""Codecs ``ctx`` (spec/FORMAT.md §5.3) and ``ctxs`` (§5.4) written the slow, obvious way, from the
spec alone.

Used by make_vectors.py to build the ctx test vectors, and by the tests as the plain twin of
the Numba kernels in dcqformat/codecs/rans.py (same bytes out, same maps back). Python ints only.
"""

from __future__ import annotations

import struct
import zlib

PROB_BITS = 12
PROB_SCALE = 1 << PROB_BITS
RANS_L = 1 << 23


def context_count(bits: int) -> int:
    k = 1 << bits
    return k**4 if bits <= 2 else 16 * k * k


def left_of(work: list[int], w: int, y: int, x: int) -> int:
    if x > 0:
        return work[y * w + x - 1]
    if y > 0:
        return work[(y - 1) * w + x]
    return 0


def context(work: list[int], w: int, y: int, x: int, bits: int) -> int:
    left = left_of(work, w, y, x)
    if y > 0:
        up = work[(y - 1) * w + x]
        ul = work[(y - 1) * w + x - 1] if x > 0 else up
        ur = work[(y - 1) * w + x + 1] if x < w - 1 else up
    else:
        up = ul = ur = left
    k = 1 << bits
    if bits <= 2:
        return ((ur * k + ul) * k + up) * k + left
    pattern = int(ul == left) + 2 * int(ul == up) + 4 * int(ur == up) + 8 * int(ur == left)
    return (pattern * k + up) * k + left


def kept_pixels(h: int, w: int, patch: tuple[int, int] | None, dropped: list[list[bool]] | None) -> list[bool]:
    """Raster-order flags: is pixel (y, x) kept (its patch not dropped)?"""
    if dropped is None or patch is None:
        return [True] * (h * w)
    return [not dropped[y // patch[0]][x // patch[1]] for y in range(h) for x in range(w)]


def stream_order(h: int, w: int, patch: tuple[int, int] | None, dropped: list[list[bool]] | None) -> list[int]:
    """Flat positions of the stream's pixels (spec §5: kept patches in grid order, row-major inside)."""
    if dropped is None or patch is None:
        return list(range(h * w))
    order = []
    for gy, row in enumerate(dropped):
        for gx, d in enumerate(row):
            if not d:
                order += [y * w + x for y in range(gy * patch[0], min((gy + 1) * patch[0], h))
                          for x in range(gx * patch[1], min((gx + 1) * patch[1], w))]
    return order


def walk(values: list[int], kept: list[bool], h: int, w: int, bits: int) -> tuple[list[int], list[int]]:
    """Raster walk: dropped pixels take their left neighbour's value; each pixel's context."""
    work = list(values)
    ctx = []
    for y in range(h):
        for x in range(w):
            if not kept[y * w + x]:
                work[y * w + x] = left_of(work, w, y, x)
            ctx.append(context(work, w, y, x, bits))
    return work, ctx


def counts(values: list[int], kept: list[bool], h: int, w: int, bits: int, into: list[list[int]]) -> None:
    work, ctx = walk(values, kept, h, w, bits)
    for i, c in enumerate(ctx):
        if kept[i]:
            into[c][work[i]] += 1


def normalise(row: list[int]) -> list[int]:
    """The reference writer's frequencies for one context's counts (each >= 1, sum PROB_SCALE)."""
    k = len(row)
    spare = PROB_SCALE - k
    total = sum(row)
    freqs = [1 + (c * spare // total if total else spare // k) for c in row]
    top = max(range(k), key=lambda s: (row[s] if total else 0, -s))
    freqs[top] += PROB_SCALE - sum(freqs)
    return freqs


def encode(values: list[int], kept: list[bool], h: int, w: int, bits: int, freqs: list[list[int]]) -> bytes:
    """One payload: the kept pixels of the raster map ``values`` under the model ``freqs``."""
    work, ctx = walk(values, kept, h, w, bits)
    out = bytearray()  # renormalisation bytes, in the order they are produced (reversed below)
    x = RANS_L
    for i in reversed(range(h * w)):
        if not kept[i]:
            continue
        f = freqs[ctx[i]]
        s = work[i]
        start, freq = sum(f[:s]), f[s]
        while x >= ((RANS_L >> PROB_BITS) << 8) * freq:
            out.append(x & 0xFF)
            x >>= 8
        x = (x // freq) * PROB_SCALE + x % freq + start
    return struct.pack("<I", x) + bytes(reversed(out))


def decode(payload: bytes, kept: list[bool], h: int, w: int, bits: int, freqs: list[list[int]]) -> list[int]:
    """The raster map (dropped pixels filled as the walk does); raises ValueError when corrupt."""
    if len(payload) < 4:
        raise ValueError("shorter than the state")
    x = struct.unpack_from("<I", payload, 0)[0]
    pos = 4
    work = [0] * (h * w)
    for y in range(h):
        for xx in range(w):
            i = y * w + xx
            if not kept[i]:
                work[i] = left_of(work, w, y, xx)
                continue
            f = freqs[context(work, w, y, xx, bits)]
            slot = x % PROB_SCALE
            s, start = 0, 0
            while start + f[s] <= slot:
                start += f[s]
                s += 1
            x = f[s] * (x >> PROB_BITS) + slot - start
            while x < RANS_L:
                if pos >= len(payload):
                    raise ValueError("out of bytes")
                x = (x << 8) | payload[pos]
                pos += 1
            work[i] = s
    if x != RANS_L or pos != len(payload):
        raise ValueError("bad end")
    return work


def model_section(bits: int, freqs: list[list[int]], stripe_rows: int = 0) -> bytes:
    """CTXM: bits, prob_bits, stripe_rows u16 (ctxs; 0 for ctx), context_count u32, zlib stream of u16
    frequencies."""
    table = b"".join(struct.pack("<H", f) for row in freqs for f in row)
    return struct.pack("<BBHI", bits, PROB_BITS, stripe_rows, len(freqs)) + zlib.compress(table, 9)


def stripes(values: list[int], kept: list[bool], h: int, w: int, stripe_rows: int) -> list[tuple[list[int], list[bool], int, int]]:
    """§5.4: the map cut into stripes of ``stripe_rows`` rows (0: one stripe), each an image of its own."""
    rows = h if stripe_rows == 0 else min(stripe_rows, h)
    return [(values[y * w : min(y + rows, h) * w], kept[y * w : min(y + rows, h) * w], min(rows, h - y), w)
            for y in range(0, h, rows)]


def model(samples: list[tuple[list[int], list[bool], int, int]], bits: int, stripe_rows: int = 0) -> list[list[int]]:
    """Frequencies counted on ``samples`` (raster values, kept flags, h, w), stripe by stripe."""
    table = [[0] * (1 << bits) for _ in range(context_count(bits))]
    for values, kept, h, w in samples:
        for part in stripes(values, kept, h, w, stripe_rows):
            counts(*part, bits, table)
    return [normalise(row) for row in table]


def encode_striped(values: list[int], kept: list[bool], h: int, w: int, bits: int, freqs: list[list[int]],
                   stripe_rows: int) -> bytes:
    """A ``ctxs`` payload: the u32 lengths of all stripes but the last, then each stripe's ctx payload."""
    parts = [encode(*part, bits, freqs) for part in stripes(values, kept, h, w, stripe_rows)]
    return b"".join(struct.pack("<I", len(p)) for p in parts[:-1]) + b"".join(parts)


def decode_striped(payload: bytes, kept: list[bool], h: int, w: int, bits: int, freqs: list[list[int]],
                   stripe_rows: int) -> list[int]:
    """The raster map of a ``ctxs`` payload; raises ValueError when corrupt."""
    parts = stripes([0] * (h * w), kept, h, w, stripe_rows)
    work = []
    for (_, keep, rows, _), part in zip(parts, stripe_payloads(payload, len(parts))):
        work += decode(part, keep, rows, w, bits, freqs)
    return work


def stripe_payloads(payload: bytes, k: int) -> list[bytes]:
    """§5.4: the ``k`` stripe payloads of a payload (its table: the u32 lengths of all but the
    last); raises ValueError when the table does not fit (a stripe under 4 bytes, or past the end)."""
    table = 4 * (k - 1)
    if len(payload) < table:
        raise ValueError("shorter than its stripe table")
    sizes = [struct.unpack_from("<I", payload, 4 * j)[0] for j in range(k - 1)]
    sizes.append(len(payload) - table - sum(sizes))
    if any(size < 4 for size in sizes):
        raise ValueError("bad stripe table")
    starts = [table + sum(sizes[:j]) for j in range(k)]
    return [payload[a : a + size] for a, size in zip(starts, sizes)]
