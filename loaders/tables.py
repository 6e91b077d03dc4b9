"""Normalisation through lookup tables, written once: ``(value / 255 - mean) / std`` per channel.

Decoding through a normalised table normalises for free: the palettes (the fused decode), one
value per channel and 8-bit level (the refill path's crops), the padding value, and the device
decoder all take their tables from :func:`normalized`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalized(values: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """uint8 ``values`` (..., C) as float32 ``(value / 255 - mean) / std``, channel by channel."""
    table = np.asarray(values).astype(np.float32) / 255.0
    if mean is not None:
        table -= np.asarray(mean, np.float32)
    if std is not None:
        table /= np.asarray(std, np.float32)
    return table


def normalized_table(palettes: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """Palettes (P, K, C) as normalised float32 values of the same shape."""
    return normalized(palettes, mean, std)


def normalized_fill(channels: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """What a black (zero) pixel becomes: the padding value."""
    return normalized(np.zeros(channels, np.uint8), mean, std)


def channel_tables(channels: int, mean: Sequence[float] | None, std: Sequence[float] | None,
                   float_out: bool) -> np.ndarray:
    """(C, 256, 1) per-channel lookup of an 8-bit value: itself (uint8), or normalised float32."""
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], channels, 1)  # (256, C)
    table = normalized(levels, mean, std) if float_out else levels
    return np.ascontiguousarray(table.T[..., None])
