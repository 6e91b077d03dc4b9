"""Codec ``ctxg`` (spec/FORMAT.md §5.5) written the slow, obvious way, from the spec alone.

Used by make_vectors.py to build the ctxg test vectors, and by the tests as the plain twin of
the Numba kernels in dcqformat/codecs/grans.py (same bytes out, same maps back). Python ints only.
"""

from __future__ import annotations

import struct
import zlib
from itertools import product

from ctx_reference import stripe_payloads

PROB_BITS = 12
PROB_SCALE = 1 << PROB_BITS
RANS_L = 1 << 31
MASK32 = (1 << 32) - 1


def group_pixels(bits: int) -> int:
    return 8 // bits


def neighbour_count(bits: int) -> int:
    return group_pixels(bits) + 3 if bits <= 2 else 3


def relabel(context: list[int], bits: int) -> tuple[list[int], dict[int, int]]:
    """The context's labels (first appearance) and the value -> label map of all 2**bits values."""
    label: dict[int, int] = {}
    for v in context:
        label.setdefault(v, len(label))
    for v in range(1 << bits):
        label.setdefault(v, len(label))
    return [label[v] for v in context], label


def key_of(context: list[int], bits: int) -> int:
    """A context's key: its values, ``bits`` bits each, the first lowest."""
    return sum(v << (bits * j) for j, v in enumerate(context))


def group_rows(values: list[int], h: int, w: int, bits: int) -> list[list[list[int]]]:
    """Rows of groups of pixel values, the last group of a row padded with the row's last pixel."""
    per = group_pixels(bits)
    ng = -(-w // per)
    rows = []
    for y in range(h):
        row = values[y * w : (y + 1) * w] + [values[y * w + w - 1]] * (ng * per - w)
        rows.append([row[g * per : (g + 1) * per] for g in range(ng)])
    return rows


def context(rows: list[list[list[int]]], y: int, g: int, bits: int) -> list[int]:
    """The neighbours of group g of row y of a stripe (the row above its first row is zeros)."""
    per = group_pixels(bits)
    above = rows[y - 1] if y > 0 else [[0] * per] * len(rows[y])  # zeros: UR is 0 wherever it is read
    u = above[g]
    left = rows[y][g - 1][-1] if g > 0 else above[0][0]
    if bits > 2:
        return [left, u[0], u[1]]
    ul = above[g - 1][-1] if g > 0 else left
    ur = above[g + 1][0] if g + 1 < len(above) else u[-1]
    return [left, ul, *u, ur]


def symbols(rows: list[list[list[int]]], bits: int) -> list[tuple[int, int]]:
    """(key, symbol) of each group of a stripe, in raster order."""
    out = []
    for y in range(len(rows)):
        for g in range(len(rows[y])):
            ctx = context(rows, y, g, bits)
            label = relabel(ctx, bits)[1]
            out.append((key_of(ctx, bits), sum(label[v] << (bits * j) for j, v in enumerate(rows[y][g]))))
    return out


def fill_dropped(values: list[int], kept: list[bool], h: int, w: int) -> list[int]:
    """Dropped pixels take their left neighbour's value (column 0: the one above; 0 at the top), in raster order."""
    work = list(values)
    for i in range(h * w):
        if not kept[i]:
            work[i] = work[i - 1] if i % w else (work[i - w] if i >= w else 0)
    return work


def stripes(h: int, stripe_rows: int) -> list[tuple[int, int]]:
    rows = min(stripe_rows, h)
    return [(y, min(rows, h - y)) for y in range(0, h, rows)]


def encode_stripe(syms: list[tuple[int, int]], bits: int, model_of: list[int], freqs: list[list[int]]) -> bytes:
    """rANS, 64-bit state, 32-bit words: the final state (u64), then the words as the decoder reads them."""
    nbits = group_pixels(bits) * bits
    esc = len(freqs[0]) - 1
    words: list[int] = []
    x = RANS_L
    for key, s in reversed(syms):
        f = freqs[model_of[key]]
        if f[s] == 0:  # the escape, then the plain bits
            if x >= (RANS_L >> nbits) << 32:
                words.append(x & MASK32)
                x >>= 32
            x = (x << nbits) | s
            s = esc
        start, freq = sum(f[:s]), f[s]
        if x >= ((RANS_L >> PROB_BITS) << 32) * freq:
            words.append(x & MASK32)
            x >>= 32
        x = (x // freq) * PROB_SCALE + x % freq + start
    return struct.pack("<Q", x) + b"".join(struct.pack("<I", v) for v in reversed(words))


def decode_stripe(payload: bytes, rows: int, w: int, bits: int, model_of: list[int],
                  freqs: list[list[int]]) -> list[list[list[int]]]:
    """A stripe's rows of groups; raises ValueError when corrupt."""
    if len(payload) < 8:
        raise ValueError("shorter than the state")
    per = group_pixels(bits)
    nbits, ng = per * bits, -(-w // per)
    x, pos = struct.unpack_from("<Q", payload, 0)[0], 8

    def renorm(x: int, pos: int) -> tuple[int, int]:
        if x < RANS_L:
            if pos + 4 > len(payload):
                raise ValueError("out of bytes")
            x = (x << 32) | struct.unpack_from("<I", payload, pos)[0]
            pos += 4
        return x, pos

    out: list[list[list[int]]] = []
    for y in range(rows):
        out.append([])
        for g in range(ng):
            out[y].append([0] * per)  # a placeholder: context() reads only earlier groups of this row
            ctx = context(out, y, g, bits)
            label = relabel(ctx, bits)[1]
            f = freqs[model_of[key_of(ctx, bits)]]
            slot = x % PROB_SCALE
            s, start = 0, 0
            while start + f[s] <= slot:
                start += f[s]
                s += 1
            x, pos = renorm(f[s] * (x >> PROB_BITS) + slot - start, pos)
            if s == len(f) - 1:  # the escape
                s = x & ((1 << nbits) - 1)
                x, pos = renorm(x >> nbits, pos)
            value = {lab: v for v, lab in label.items()}
            out[y][g] = [value[(s >> (bits * j)) & ((1 << bits) - 1)] for j in range(per)]
    if x != RANS_L or pos != len(payload):
        raise ValueError("bad end")
    return out


def encode(values: list[int], kept: list[bool], h: int, w: int, bits: int, model_of: list[int],
           freqs: list[list[int]], stripe_rows: int) -> bytes:
    """A payload: the u32 lengths of all stripes but the last, then each stripe's payload."""
    rows = group_rows(fill_dropped(values, kept, h, w), h, w, bits)
    parts = [encode_stripe(symbols(rows[y : y + n], bits), bits, model_of, freqs)
             for y, n in stripes(h, stripe_rows)]
    return b"".join(struct.pack("<I", len(p)) for p in parts[:-1]) + b"".join(parts)


def decode(payload: bytes, h: int, w: int, bits: int, model_of: list[int], freqs: list[list[int]],
           stripe_rows: int) -> list[int]:
    """The raster map of a payload (dropped pixels as filled); raises ValueError when corrupt."""
    parts = stripes(h, stripe_rows)
    values = []
    for (_, rows), part in zip(parts, stripe_payloads(payload, len(parts))):  # the stripe table of §5.4
        for row in decode_stripe(part, rows, w, bits, model_of, freqs):
            values += [v for group in row for v in group][:w]
    return values


def model(samples: list[tuple[list[int], list[bool], int, int]], bits: int, stripe_rows: int,
          models: int = 4) -> tuple[list[int], list[list[int]]]:
    """A simple valid model (the reference writer's, not the library's): the context of key k
    uses model (its count of distinct values - 1), at most models - 1; each model's frequencies
    from its counts, every counted symbol >= 1, the escape 1, the largest taking the rest."""
    a = 1 << (group_pixels(bits) * bits)
    n = neighbour_count(bits)
    model_of = [0] * (1 << (bits * n))
    for c in product(range(1 << bits), repeat=n):
        model_of[key_of(list(c), bits)] = min(len(set(c)), models) - 1
    counts = [[0] * a for _ in range(models)]
    for values, kept, h, w in samples:
        rows = group_rows(fill_dropped(values, kept, h, w), h, w, bits)
        for y, rows_n in stripes(h, stripe_rows):
            for key, s in symbols(rows[y : y + rows_n], bits):
                counts[model_of[key]][s] += 1
    freqs = []
    for row in counts:
        total = sum(row) or 1
        f = [max(1, c * (PROB_SCALE - a - 1) // total) if c else 0 for c in row] + [1]
        f[max(range(a), key=lambda s: (row[s], -s))] += PROB_SCALE - sum(f)
        freqs.append(f)
    return model_of, freqs


def model_section(bits: int, model_of: list[int], freqs: list[list[int]], stripe_rows: int) -> bytes:
    """CTXG: bits, prob_bits, stripe_rows u16, key_count u16, model_count u16; then a zlib stream
    of the u8 model of each key and each model's u16 frequencies (the escape last)."""
    body = bytes(model_of) + b"".join(struct.pack("<H", f) for row in freqs for f in row)
    return struct.pack("<BBHHH", bits, PROB_BITS, stripe_rows, len(model_of), len(freqs)) + zlib.compress(body, 9)
