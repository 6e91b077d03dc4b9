"""Simple Pillow-based quantizers: per-image MedianCut and shared cluster palettes.

These are baselines and the demo's quantizer; the DCQ quantizer lives elsewhere.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def _indices_and_palette(q: Image.Image, colors: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    pal = np.array((q.getpalette() or [])[: 3 * colors], dtype=np.uint8).reshape(-1, 3)
    pal = np.concatenate([pal, np.zeros((colors - len(pal), 3), np.uint8)])
    return np.asarray(q, dtype=np.uint8), (pal[:, :1] if channels == 1 else pal)


PILLOW_METHODS = {"mediancut": Image.Quantize.MEDIANCUT, "octree": Image.Quantize.FASTOCTREE}


def pillow_quantize(image: np.ndarray, bits: int, method: str = "mediancut") -> tuple[np.ndarray, np.ndarray]:
    """Per-image MedianCut or Octree (Pillow, no dithering): (H, W) indices, (2**bits, C) palette."""
    colors = 1 << bits
    gray = image.ndim == 2 or image.shape[2] == 1
    rgb = Image.fromarray(image.reshape(image.shape[0], image.shape[1], -1)[..., 0] if gray else image)
    q = rgb.convert("RGB").quantize(colors, method=PILLOW_METHODS[method], dither=Image.Dither.NONE)
    idx, pal = _indices_and_palette(q, colors, 1 if gray else 3)
    return np.minimum(idx, colors - 1), pal


def mediancut(image: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image MedianCut (Pillow): (H, W) indices and a (2**bits, C) palette."""
    return pillow_quantize(image, bits, "mediancut")


def shared_palettes(images: np.ndarray, bits: int, clusters: int = 20, sample: int = 256,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cluster images by mean colour (k-means) and fit one MedianCut palette per cluster.

    Returns ``(assignment (N,), palettes (clusters, 2**bits, 3))``.
    """
    rng = np.random.default_rng(seed)
    feats = images.reshape(len(images), -1, 3).mean(axis=1)
    k = min(clusters, len(images))
    centres = feats[rng.choice(len(images), k, replace=False)]
    for _ in range(20):
        assign = ((feats[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        for c in range(k):
            if (assign == c).any():
                centres[c] = feats[assign == c].mean(0)
    colors = 1 << bits
    palettes = np.zeros((k, colors, 3), np.uint8)
    for c in range(k):
        members = np.flatnonzero(assign == c)
        if members.size == 0:
            continue
        pick = images[rng.choice(members, min(sample, members.size), replace=False)]
        mosaic = Image.fromarray(pick.reshape(-1, pick.shape[2], 3))
        q = mosaic.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        palettes[c] = _indices_and_palette(q, colors, 3)[1]
    return assign, palettes


def map_to_palette(image: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Nearest-colour (RGB) indices of ``image`` in ``palette``, without dithering."""
    pal_img = Image.new("P", (1, 1))
    flat = palette.reshape(-1).tolist()
    pal_img.putpalette(flat + flat[-3:] * (256 - len(palette)))
    q = Image.fromarray(image).quantize(palette=pal_img, dither=Image.Dither.NONE)
    return np.minimum(np.asarray(q, dtype=np.uint8), len(palette) - 1)
