"""Debanding on decode (``dequantize="deband"``): restore some of what the palette lost, at no
stored bytes.

A palette image is flat inside each index region and jumps at its borders; where the source was
a smooth gradient the jumps are false contours. Each output pixel becomes a weighted mean of
the palette colours of its 3x3 neighbourhood, the weight of a neighbour of colour ``q`` seen
from a pixel of colour ``a`` being ``exp(-|pal[a] - pal[q]|^2 / (2 s_a^2))`` with ``s_a``
:data:`SIGMA` times the distance from ``pal[a]`` to its nearest other palette colour (at most the
median of those distances over the palette, so that an isolated colour is not blurred into
everything around it): steps to a
neighbouring colour (a false contour, or a real but faint edge) are softened, jumps across the
palette (real edges) are kept. The weights depend on the palette only, so they are tabulated
once per palette (``weight_tables``) and the kernel does one table read per neighbour.

The Numba kernel has a plain NumPy twin in the tests (tests/test_deband.py).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .kernels import _kernel

SIGMA = 0.7  # of each colour's distance to its nearest other colour in the palette


def weight_tables(palettes: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """(P, K, K) float32 neighbour weights of palettes (P, K, C) uint8: row ``a`` says how much a
    neighbour of each colour counts for a pixel of colour ``a`` (1 for colours equal to ``a``)."""
    p = palettes.astype(np.float64)
    d2 = ((p[:, :, None, :] - p[:, None, :, :]) ** 2).sum(-1)  # (P, K, K)
    nearest = np.where(d2 > 0, d2, np.inf).min(2, keepdims=True)  # squared distance to the nearest other colour
    # an isolated colour uses the palette's typical step: the (lower) median of those distances
    count = np.isfinite(nearest).sum(1, keepdims=True)
    typical = np.take_along_axis(np.sort(nearest, 1), np.maximum(count - 1, 0) // 2, 1)
    spacing = np.minimum(nearest, typical)
    scale = 2 * sigma**2 * np.where(np.isfinite(spacing), spacing, 1.0)
    return np.exp(-d2 / scale).astype(np.float32)


@_kernel(parallel=True)
def deband_batch(maps, table_ids, palettes, weights, hidden, out):
    """Debanded images of index maps ``maps`` (N, H, W) uint8 into ``out`` (N, C, H, W) uint8.

    Sample ``b`` uses palette ``palettes[table_ids[b]]`` (K, C) uint8 and its weight table
    ``weights[table_ids[b]]`` (K, K) float32. Each pixel of colour ``a`` takes, per channel,
    ``sum(w * pal[q]) / sum(w)`` over its 3x3 neighbours ``q`` inside the image (itself
    included, rows then columns in increasing order, float32 sums), ``w = weights[a, q]``,
    rounded half up. With ``hidden`` (N, H, W) bool (or an empty (0, 1, 1) array: none), hidden
    pixels (dropped patches) count as no one's neighbour and are set to 0.
    """
    n, h, w = maps.shape
    c = palettes.shape[2]  # 1 or 3 (spec §3)
    masked = hidden.shape[0] > 0
    half, top = np.float32(0.5), np.float32(255.0)
    for b in prange(n):
        pal = palettes[table_ids[b]]
        colour = pal.astype(np.float32)
        wt = weights[table_ids[b]]
        m = maps[b]
        for y in range(h):
            y0, y1 = max(y - 1, 0), min(y + 2, h)
            for x in range(w):
                a = m[y, x]
                if masked and hidden[b, y, x]:
                    for ch in range(c):
                        out[b, ch, y, x] = 0
                    continue
                x0, x1 = max(x - 1, 0), min(x + 2, w)
                if not masked:  # a window of one colour gives that colour exactly: skip the sums
                    same = True
                    for yy in range(y0, y1):
                        for xx in range(x0, x1):
                            if m[yy, xx] != a:
                                same = False
                    if same:
                        for ch in range(c):
                            out[b, ch, y, x] = pal[a, ch]
                        continue
                total = np.float32(0.0)
                s0 = np.float32(0.0)
                s1 = np.float32(0.0)
                s2 = np.float32(0.0)
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        if masked and hidden[b, yy, xx]:
                            continue
                        q = m[yy, xx]
                        wq = wt[a, q]
                        total += wq
                        s0 += wq * colour[q, 0]
                        if c == 3:
                            s1 += wq * colour[q, 1]
                            s2 += wq * colour[q, 2]
                out[b, 0, y, x] = np.uint8(min(max(np.floor(s0 / total + half), np.float32(0.0)), top))
                if c == 3:
                    out[b, 1, y, x] = np.uint8(min(max(np.floor(s1 / total + half), np.float32(0.0)), top))
                    out[b, 2, y, x] = np.uint8(min(max(np.floor(s2 / total + half), np.float32(0.0)), top))
    return out
