"""Per-image baselines: MedianCut and Octree (Pillow), k-means (torch, weighted LAB)."""

from __future__ import annotations

import numpy as np
import torch

from .color import lab_to_srgb, srgb_to_lab, weighted
from .kmeans import kmeans
from .palette import assign
from .simple_quant import pillow_quantize


def pillow(image: np.ndarray, bits: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) indices and a (2**bits, C) palette from Pillow's MedianCut or Octree, no dithering."""
    return pillow_quantize(image, bits, method)


def kmeans_image(image: np.ndarray, bits: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image k-means in weighted LAB; returns (indices, (2**bits, 3) uint8 palette)."""
    rgb = torch.from_numpy(image.reshape(-1, image.shape[2])).float() / 255
    if rgb.shape[1] == 1:
        rgb = rgb.repeat(1, 3)
    centres, _ = kmeans(weighted(srgb_to_lab(rgb)), 1 << bits, seed=seed, iters=15)

    lab = centres / torch.tensor([2.0, 1.0, 1.0]).sqrt()
    pal = (lab_to_srgb(lab) * 255).round().clamp(0, 255).to(torch.uint8)
    if len(pal) < (1 << bits):
        pal = torch.cat([pal, pal[-1:].repeat((1 << bits) - len(pal), 1)])
    img3 = torch.from_numpy(image if image.shape[2] == 3 else image.repeat(3, 2))[None]
    idx = assign(img3, pal[None], torch.zeros(1, dtype=torch.long))[0].numpy()
    return idx, (pal.numpy()[:, :1] if image.shape[2] == 1 else pal.numpy())
