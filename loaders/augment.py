"""Batch augmentations fused into decoding: each picks a source window per sample.

An augmentation maps the sizes of a batch of images to source windows ``(y0, x0, h, w)``
and horizontal flips; :meth:`dcqformat.DcqReader.decode_crops` then decodes every sample
straight into its window at the output size, in one parallel pass (no intermediate image).
Randomness comes from torch's generator, which DataLoader seeds per worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _flips(n: int, p: float, generator: torch.Generator | None) -> np.ndarray:
    return (torch.rand(n, generator=generator) < p).numpy() if p > 0 else np.zeros(n, bool)


@dataclass(frozen=True)
class RandomCrop:
    """torchvision's ``RandomCrop(size, padding)`` (zero fill); ``flip=0.5`` adds torchvision's
    ``RandomHorizontalFlip()`` (off by default, as in torchvision)."""

    size: int | tuple[int, int]
    padding: int = 0
    flip: float = 0.0
    interpolation: str = "nearest"

    def windows(self, heights: np.ndarray, widths: np.ndarray,
                generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        oh, ow = _size(self.size)
        n = len(heights)
        span_y = heights + 2 * self.padding - oh + 1
        span_x = widths + 2 * self.padding - ow + 1
        if (span_y < 1).any() or (span_x < 1).any():
            raise ValueError(f"crop {oh}x{ow} is larger than a padded image")
        r = torch.rand(n, 2, generator=generator).numpy()
        y0 = np.floor(r[:, 0] * span_y) - self.padding
        x0 = np.floor(r[:, 1] * span_x) - self.padding
        boxes = np.stack([y0, x0, np.full(n, oh), np.full(n, ow)], axis=1).astype(np.float64)
        return boxes, _flips(n, self.flip, generator)


@dataclass(frozen=True)
class RandomResizedCrop:
    """torchvision's ``RandomResizedCrop`` (bilinear, no antialias); ``flip=0.5`` adds a random
    horizontal flip (off by default, as in torchvision)."""

    size: int | tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.0
    interpolation: str = "bilinear"

    def windows(self, heights: np.ndarray, widths: np.ndarray,
                generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        n = len(heights)
        tries = 10
        area = (heights * widths).astype(np.float64)[:, None]
        r = torch.rand(n, tries, 4, generator=generator, dtype=torch.float64).numpy()
        target = area * (self.scale[0] + r[..., 0] * (self.scale[1] - self.scale[0]))
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = np.exp(log_lo + r[..., 1] * (log_hi - log_lo))
        w = np.round(np.sqrt(target * aspect))
        h = np.round(np.sqrt(target / aspect))
        ok = (w > 0) & (h > 0) & (w <= widths[:, None]) & (h <= heights[:, None])
        first = np.where(ok.any(1), ok.argmax(1), -1)
        boxes = np.empty((n, 4))
        for b in range(n):
            if first[b] >= 0:
                t = first[b]
                bh, bw = h[b, t], w[b, t]
                y0 = np.floor(r[b, t, 2] * (heights[b] - bh + 1))
                x0 = np.floor(r[b, t, 3] * (widths[b] - bw + 1))
            else:  # torchvision's fallback: a centre crop within the ratio range
                in_ratio = widths[b] / heights[b]
                bw, bh = float(widths[b]), float(heights[b])
                if in_ratio < self.ratio[0]:
                    bh = round(bw / self.ratio[0])
                elif in_ratio > self.ratio[1]:
                    bw = round(bh * self.ratio[1])
                y0, x0 = (heights[b] - bh) // 2, (widths[b] - bw) // 2
            boxes[b] = (y0, x0, bh, bw)
        return boxes, _flips(n, self.flip, generator)


@dataclass(frozen=True)
class CenterCrop:
    """A centre crop of ``size`` (zero fill where the image is smaller)."""

    size: int | tuple[int, int]
    interpolation: str = "nearest"

    def windows(self, heights: np.ndarray, widths: np.ndarray,
                generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        oh, ow = _size(self.size)
        y0 = np.floor((heights - oh) / 2)
        x0 = np.floor((widths - ow) / 2)
        n = len(heights)
        return np.stack([y0, x0, np.full(n, oh), np.full(n, ow)], 1).astype(np.float64), np.zeros(n, bool)


@dataclass(frozen=True)
class Resize:
    """The whole image resized to ``size`` (bilinear), e.g. to batch a file of varying sizes."""

    size: int | tuple[int, int]
    interpolation: str = "bilinear"

    def windows(self, heights: np.ndarray, widths: np.ndarray,
                generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        n = len(heights)
        boxes = np.stack([np.zeros(n), np.zeros(n), heights, widths], 1).astype(np.float64)
        return boxes, np.zeros(n, bool)


def output_size(augment: Any) -> tuple[int, int]:
    """The fixed output size of an augmentation."""
    return _size(augment.size)
