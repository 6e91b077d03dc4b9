"""Refilling dropped patches without a model: harmonic inpainting (each hidden pixel becomes the
mean of its neighbours, solved by red-black successive over-relaxation).

Smooth regions, which is what the least-attended patches mostly are, come back close to what
was there; it needs no weights in the file, so dropping pays from the first image. The Numba
kernel has a plain NumPy twin in the tests (tests/test_inpaint.py).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .kernels import _kernel

OMEGA = 1.5  # over-relaxation: converges in about 2.5 sweeps per pixel of the widest hole


def iterations(patch: int) -> int:
    """Red-black sweeps enough for holes of a few ``patch`` px patches."""
    return max(10, 4 * int(patch))


def harmonic_fill(images: np.ndarray, hidden: np.ndarray, patch: int) -> np.ndarray:
    """The harmonic fill of spec §9.2, in place: ``images`` (N, C, H, W) uint8 where ``hidden``
    (N, H, W) is set, for dropped patches of side ``patch`` (the larger side)."""
    return smooth_fill(images, hidden, iterations(patch), OMEGA)


@_kernel(parallel=True)
def smooth_fill(images, hidden, sweeps, omega):
    """Fill the pixels of ``images`` (N, C, H, W) uint8 where ``hidden`` (N, H, W) is nonzero, in place.

    Per image and channel: hidden pixels start at the mean of the visible ones (0 when none is
    visible); then ``sweeps`` times, first the hidden pixels with y + x even, then the odd ones,
    each takes ``v + omega * (a - v)`` with ``a`` the mean of its neighbours inside the image
    (above, below, left, right, summed in that order, float32). Finally rounded half up.
    """
    n, c, h, w = images.shape
    om = np.float32(omega)
    for b in prange(n):
        hid = hidden[b]
        # the hidden pixels, even ones (y + x) first, each with its neighbours' flat positions
        count = 0
        for y in range(h):
            for x in range(w):
                if hid[y, x]:
                    count += 1
        order = np.empty(count, np.int64)
        k = 0
        for colour in range(2):
            for y in range(h):
                for x in range((y + colour) % 2, w, 2):
                    if hid[y, x]:
                        order[k] = y * w + x
                        k += 1
        near = np.full((count, 4), -1, np.int64)
        for j in range(count):
            y, x = order[j] // w, order[j] % w
            if y > 0:
                near[j, 0] = order[j] - w
            if y + 1 < h:
                near[j, 1] = order[j] + w
            if x > 0:
                near[j, 2] = order[j] - 1
            if x + 1 < w:
                near[j, 3] = order[j] + 1
        v = np.empty(h * w, np.float32)
        for ch in range(c):
            img = images[b, ch].reshape(h * w)
            total = 0.0
            seen = 0
            for p in range(h * w):
                if not hid[p // w, p % w]:
                    total += img[p]
                    seen += 1
            start = np.float32(total / seen) if seen else np.float32(0.0)
            for p in range(h * w):
                v[p] = np.float32(img[p])
            for j in range(count):
                v[order[j]] = start
            for _ in range(sweeps):
                for j in range(count):  # the even half-sweep, then the odd one: order holds them so
                    s = np.float32(0.0)
                    m = 0
                    for e in range(4):
                        if near[j, e] >= 0:
                            s += v[near[j, e]]
                            m += 1
                    if m:
                        a = s / np.float32(m)
                        v[order[j]] = v[order[j]] + om * (a - v[order[j]])
            for j in range(count):
                img[order[j]] = np.uint8(min(max(np.floor(v[order[j]] + np.float32(0.5)), 0.0), 255.0))
    return images
