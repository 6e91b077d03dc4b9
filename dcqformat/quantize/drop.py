"""Which patches of an image to drop: those with the least mean Grad-CAM++ attention."""

from __future__ import annotations

import math

import numpy as np
import torch


def native_patch(height: int, width: int) -> int:
    """The default patch side for an image size: 4 px below 96 px (CIFAR: an 8x8 grid), else 16
    (ImageNet's 224: 14x14)."""
    return 4 if min(height, width) < 96 else 16


def drop_mask(cam: torch.Tensor | np.ndarray, patch: int, fraction: float) -> np.ndarray:
    """(gh, gw) bool, True for the ``floor(fraction * gh * gw + 0.5)`` patches of lowest mean attention.

    ``cam`` is an (H, W) attention map; patches on the bottom and right edges are clipped to the
    image and averaged over their own pixels. Ties go to the lower patch number (row-major).
    """
    cam = torch.as_tensor(np.asarray(cam, np.float32))
    h, w = cam.shape
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    padded = torch.nn.functional.pad(cam, (0, gw * patch - w, 0, gh * patch - h))
    ones = torch.nn.functional.pad(torch.ones(h, w), (0, gw * patch - w, 0, gh * patch - h))
    sums = padded.reshape(gh, patch, gw, patch).sum((1, 3))
    counts = ones.reshape(gh, patch, gw, patch).sum((1, 3))
    mean = (sums / counts).reshape(-1).numpy()
    count = int(fraction * gh * gw + 0.5)
    out = np.zeros(gh * gw, bool)
    out[np.argsort(mean, kind="stable")[:count]] = True
    return out.reshape(gh, gw)
