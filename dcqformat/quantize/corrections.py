"""Per-image palette corrections (spec §3.1): each image keeps its shared palette and refines it.

The shared palette is the prior; an image's correction moves each of its colours towards the
mean of the pixels that take it, in steps of ``step`` (at most 8 steps down, 7 up: 4 bits per
colour channel, stored in section PCOR), and its pixels are then reassigned to the nearest
corrected colour: Lloyd's k-means rounds started at the shared palette, on a quantized grid. The
fit minimises squared error in the stored channels (RGB, or gray for one-channel files).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _layout as L
from ..format.palettes import corrected
from ..pipeline.imaging import as_rgb
from .dither import dither

ROUNDS = 2  # Lloyd rounds: the first moves the colours, the second mostly settles the assignment
_CHUNK = 1 << 24  # at most this many pixel-colour distances at once (memory is bounded at 224 px and up)


def corrected_palettes(base: torch.Tensor, deltas: torch.Tensor, step: int) -> torch.Tensor:
    """``base`` (N, K, C) uint8 plus ``step`` times ``deltas`` (N, K, C), clipped (spec §3.1)."""
    return (base.to(torch.int16) + step * deltas.to(torch.int16)).clamp(0, 255).to(torch.uint8)


def own_palette(palette: np.ndarray, deltas: np.ndarray | None, step: int) -> np.ndarray:
    """An image's palette (K, C) uint8: its shared ``palette`` corrected by ``deltas`` (if any),
    as a reader computes it."""
    if deltas is None:
        return palette
    return corrected(palette[None], np.zeros(1, np.int64), step, deltas[None])[0]


def fit_corrections(pixels: torch.Tensor, idx: torch.Tensor, base: torch.Tensor, step: int,
                    rounds: int = ROUNDS) -> tuple[torch.Tensor, torch.Tensor]:
    """``(deltas (N, K, C) int8 in -8..7, indices (N, H, W))`` of images ``pixels`` (N, H, W, C)
    uint8 whose indices under their palettes ``base`` (N, K, C) uint8 are ``idx``; on the
    tensors' device."""
    n, k, c = base.shape
    flat = pixels.reshape(n, -1, c).float()
    lo, hi = L.PCOR_DELTAS[0], L.PCOR_DELTAS[-1]
    deltas = torch.zeros(base.shape, dtype=torch.int8, device=base.device)
    labels = idx.reshape(n, -1).long()
    for _ in range(rounds):
        sums = torch.zeros((n, k, c), device=base.device).scatter_add_(1, labels[..., None].expand(-1, -1, c), flat)
        counts = torch.zeros((n, k), device=base.device).scatter_add_(1, labels, torch.ones_like(flat[..., 0]))
        mean = sums / counts.clamp(min=1)[..., None]
        moved = torch.round((mean - base.float()) / step).clamp(lo, hi)
        deltas = torch.where(counts[..., None] > 0, moved, torch.zeros_like(moved)).to(torch.int8)
        labels = nearest(flat, corrected_palettes(base, deltas, step).float())
    return deltas, labels.reshape(idx.shape)


def nearest(flat: torch.Tensor, palettes: torch.Tensor) -> torch.Tensor:
    """Each pixel's nearest colour (squared distance): ``flat`` (N, P, C), ``palettes`` (N, K, C);
    in chunks of images, and of pixels within a huge image, of at most _CHUNK distances."""
    n, p, _ = flat.shape
    out = torch.empty((n, p), dtype=torch.long, device=flat.device)
    pixels = max(1, min(p, _CHUNK // palettes.shape[1]))
    images = max(1, _CHUNK // (pixels * palettes.shape[1]))
    for s in range(0, n, images):
        for q in range(0, p, pixels):
            out[s : s + images, q : q + pixels] = torch.cdist(flat[s : s + images, q : q + pixels],
                                                              palettes[s : s + images]).argmin(-1)
    return out


def correct(images: list[np.ndarray], assigned: list[tuple[np.ndarray, np.ndarray]], palettes: np.ndarray, step: int,
            dithered: bool, device: torch.device) -> list[tuple[np.ndarray, int, np.ndarray | None]]:
    """``(indices, palette id, deltas)`` of each image (H, W, 3 uint8 RGB) given its shared
    palette id and indices ``assigned`` under ``palettes`` (P, K, C) uint8: the corrections
    fitted to it, its pixels reassigned to them (Floyd-Steinberg when ``dithered``). Images of
    one size go as one batch."""
    c = palettes.shape[2]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape, []).append(i)
    results: dict[int, tuple[np.ndarray, int, np.ndarray | None]] = {}
    for members in groups.values():
        rgb = np.stack([as_rgb(images[i], None) for i in members])[..., :c]
        ids = np.array([int(assigned[i][1]) for i in members])
        base = torch.from_numpy(palettes[ids]).to(device)
        idx = torch.from_numpy(np.stack([assigned[i][0] for i in members]).astype(np.int64)).to(device)
        deltas, labels = fit_corrections(torch.from_numpy(rgb).to(device), idx, base, step)
        if dithered:
            labels = torch.from_numpy(dither(rgb, corrected_palettes(base, deltas, step).cpu().numpy()))
        for j, i in enumerate(members):
            results[i] = (labels[j].cpu().numpy().astype(np.uint8), int(ids[j]), deltas[j].cpu().numpy())
    return [results[i] for i in range(len(images))]
