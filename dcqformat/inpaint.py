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
        for ch in range(c):
            img = images[b, ch]
            hid = hidden[b]
            total = 0.0
            count = 0
            for y in range(h):
                for x in range(w):
                    if not hid[y, x]:
                        total += img[y, x]
                        count += 1
            start = np.float32(total / count) if count else np.float32(0.0)
            v = np.empty((h, w), np.float32)
            for y in range(h):
                for x in range(w):
                    v[y, x] = start if hid[y, x] else np.float32(img[y, x])
            for _ in range(sweeps):
                for colour in range(2):
                    for y in range(h):
                        for x in range((y + colour) % 2, w, 2):
                            if not hid[y, x]:
                                continue
                            s = np.float32(0.0)
                            k = 0
                            if y > 0:
                                s += v[y - 1, x]
                                k += 1
                            if y + 1 < h:
                                s += v[y + 1, x]
                                k += 1
                            if x > 0:
                                s += v[y, x - 1]
                                k += 1
                            if x + 1 < w:
                                s += v[y, x + 1]
                                k += 1
                            if k:
                                a = s / np.float32(k)
                                v[y, x] = v[y, x] + om * (a - v[y, x])
            for y in range(h):
                for x in range(w):
                    if hid[y, x]:
                        img[y, x] = np.uint8(min(max(np.floor(v[y, x] + np.float32(0.5)), 0.0), 255.0))
    return images
