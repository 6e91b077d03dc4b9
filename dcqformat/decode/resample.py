"""Plain NumPy twin of the fused crop/flip/resize decode (:func:`kernels.decode_resample_batch`)."""

from __future__ import annotations

import numpy as np


def resample(image: np.ndarray, box: tuple[float, float, float, float], flip: bool, out_h: int, out_w: int,
             bilinear: bool, fill: np.ndarray) -> np.ndarray:
    """Fill an (out_h, out_w, C) float64 image from the window ``box = (y0, x0, h, w)`` of ``image``.

    Same sampling rules as the kernel: nearest takes ``floor(y0 + (y + 0.5) * h / out_h)`` and
    uses ``fill`` outside the image; bilinear samples at ``y0 + (y + 0.5) * h / out_h - 0.5``
    clamped to the image. ``flip`` mirrors the result left-right.
    """
    h, w, _ = image.shape
    y0, x0, bh, bw = box
    fy = y0 + (np.arange(out_h) + 0.5) * (bh / out_h)
    fx = x0 + (np.arange(out_w) + 0.5) * (bw / out_w)
    img = image.astype(np.float64)
    if bilinear:
        ry = np.clip(fy - 0.5, 0, h - 1)
        rx = np.clip(fx - 0.5, 0, w - 1)
        ya, xa = ry.astype(int), rx.astype(int)
        yb, xb = np.minimum(ya + 1, h - 1), np.minimum(xa + 1, w - 1)
        ay, ax = (ry - ya)[:, None, None], (rx - xa)[None, :, None]
        top = img[ya][:, xa] * (1 - ax) + img[ya][:, xb] * ax
        bottom = img[yb][:, xa] * (1 - ax) + img[yb][:, xb] * ax
        res = top * (1 - ay) + bottom * ay
    else:
        sy, sx = np.floor(fy).astype(int), np.floor(fx).astype(int)
        inside = ((sy >= 0) & (sy < h))[:, None] & ((sx >= 0) & (sx < w))[None, :]
        res = img[np.clip(sy, 0, h - 1)][:, np.clip(sx, 0, w - 1)]
        res[~inside] = np.asarray(fill, np.float64)
    return res[:, ::-1] if flip else res

