"""Which patches of an image to drop: those the loaders refill best (the harmonic fill's error),
weighted by how much the attention model looks at them (mean Grad-CAM++ attention)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from ..decode.inpaint import harmonic_fill


def native_patch(height: int, width: int) -> int:
    """The default patch side for an image size: 4 px below 96 px (CIFAR: an 8x8 grid), else 16
    (ImageNet's 224: 14x14)."""
    return 4 if min(height, width) < 96 else 16


def patch_means(values: torch.Tensor | np.ndarray, patch: int) -> np.ndarray:
    """(gh, gw) float32 means of an (H, W) map over each patch; patches on the bottom and right
    edges are clipped to the image and averaged over their own pixels."""
    v = torch.as_tensor(np.asarray(values, np.float32))
    h, w = v.shape
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    pad = (0, gw * patch - w, 0, gh * patch - h)
    sums = torch.nn.functional.pad(v, pad).reshape(gh, patch, gw, patch).sum((1, 3))
    counts = torch.nn.functional.pad(torch.ones(h, w), pad).reshape(gh, patch, gw, patch).sum((1, 3))
    return (sums / counts).numpy()


def fill_errors(images: list[np.ndarray], patch: int) -> list[np.ndarray]:
    """Per image (H, W, C) uint8: a (gh, gw) float32 map of the harmonic fill's mean squared error
    on each patch when that patch alone is dropped.

    Two fills per image: one with the even patches of the checkerboard hidden, one with the odd.
    Hidden patches then touch only visible ones on their sides, so each is filled from its own
    border as if alone. Patches above 8 px are scored on the image block-averaged by the largest
    divisor of the patch that leaves patches of at least 4 px (16 px patches: 4x smaller), which
    keeps the cost per image of a 224 px photo near a millisecond.
    """
    out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(images)
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        by_shape[im.shape].append(i)
    f = max([d for d in range(1, patch + 1) if patch % d == 0 and patch // d >= 4] or [1]) if patch > 8 else 1
    p = patch // f
    for (h, w, c), members in by_shape.items():
        gh, gw = math.ceil(h / patch), math.ceil(w / patch)
        x = np.stack([images[i] for i in members]).transpose(0, 3, 1, 2)
        x = np.pad(x, ((0, 0), (0, 0), (0, gh * patch - h), (0, gw * patch - w)), mode="edge")
        if f > 1:
            blocks = x.reshape(len(members), c, gh * p, f, gw * p, f).sum((3, 5), dtype=np.uint32)
            x = ((blocks + f * f // 2) // (f * f)).astype(np.uint8)  # block means, rounded half up
        x = np.ascontiguousarray(x)
        even = (np.add.outer(np.arange(gh), np.arange(gw)) % 2 == 0).repeat(p, 0).repeat(p, 1)
        error = np.zeros((len(members), gh * p, gw * p), np.float32)
        for hidden in (even, ~even):
            filled = harmonic_fill(x.copy(), np.broadcast_to(hidden, error.shape).copy(), p)
            diff = (filled.astype(np.float32) - x) ** 2
            error += np.where(hidden, diff.mean(1), 0)
        tiles = error.reshape(len(members), gh, p, gw, p).mean((2, 4))
        for k, i in enumerate(members):
            out[i] = tiles[k]
    return out


def drop_scores(by: str, cam: torch.Tensor | np.ndarray | None, error: np.ndarray | None, patch: int) -> np.ndarray:
    """(gh, gw) scores, the lowest dropped first. ``by``: ``attention`` (mean Grad-CAM++ attention
    of the patch), ``fill`` (the harmonic fill's error, :func:`fill_errors`) or ``both``: the
    error times (1 + attention / the image's mean patch attention), so attention can at most
    scale a patch's cost by a few times and a patch the fill restores exactly is always cheap."""
    if by == "attention":
        assert cam is not None
        return patch_means(cam, patch)
    assert error is not None
    if by == "fill":
        return error
    assert cam is not None
    attention = patch_means(cam, patch)
    return error * (1.0 + attention / max(float(attention.mean()), 1e-12))


def drop_mask(scores: np.ndarray, fraction: float) -> np.ndarray:
    """(gh, gw) bool, True for the ``floor(fraction * gh * gw + 0.5)`` patches of lowest score.
    Ties go to the lower patch number (row-major)."""
    gh, gw = scores.shape
    out = np.zeros(gh * gw, bool)
    out[np.argsort(scores.reshape(-1), kind="stable")[: int(fraction * gh * gw + 0.5)]] = True
    return out.reshape(gh, gw)
