"""Per-image inputs of the selection methods, from the attention model, in batches on the device."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..pipeline.imaging import as_rgb, model_input, sobel


@torch.no_grad()
def embeddings(model: torch.nn.Module, images: list[np.ndarray], labels: np.ndarray, kind: str, size: int,
               device: torch.device) -> np.ndarray:
    """``"gradient"``: DQ's last-layer gradient embedding [dL/dz, vec(dL/dz (x) e)] of the
    cross-entropy for the true label, C + C*D values (e: the D penultimate features);
    ``"penultimate"``: e alone."""
    logits, _, deep = model(model_input(images, size).to(device), keep=True)
    e = deep.mean((2, 3))
    if kind == "penultimate":
        return e.cpu().numpy()
    y = torch.from_numpy(np.clip(labels, 0, logits.shape[1] - 1)).to(device)
    delta = torch.softmax(logits, 1) - torch.nn.functional.one_hot(y, logits.shape[1]).to(logits)
    return torch.cat([delta, (delta[:, :, None] * e[:, None, :]).flatten(1)], 1).cpu().numpy()


def texture(images: list[np.ndarray]) -> np.ndarray:
    """ADQ's representativeness of each image: mean of 0.5 |Sobel_x| + 0.5 |Sobel_y| of its
    greyscale in [0, 1]."""
    out = []
    for im in images:
        g = torch.from_numpy(as_rgb(im, None)).float().mean(2)[None, None] / 255
        out.append(float(sobel(g).abs().mul(0.5).sum(1).mean()))
    return np.array(out)


def random_resized_crop(x: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop to the input size plus a random flip, for a batch (N, C, H, W) at once
    (one affine sampling grid per image, bilinear)."""
    n = len(x)
    area = torch.empty(n).uniform_(*scale, generator=generator)
    r = torch.exp(torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator))
    sh = torch.sqrt(area / r).clamp(max=1.0)  # crop height and width as fractions of the image
    sw = torch.sqrt(area * r).clamp(max=1.0)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sh)  # centre in [-1, 1] coordinates
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sw)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sw * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = sh, cy
    grid = torch.nn.functional.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def view_features(model: torch.nn.Module, images: list[np.ndarray], size: int, device: torch.device,
                  generator: torch.Generator) -> np.ndarray:
    """(N, 2, D) penultimate features of two augmented views of each image (ADQ's diversity)."""
    x = model_input(images, size)
    views = []
    for _ in range(2):
        _, _, deep = model(random_resized_crop(x, generator).to(device), keep=True)
        views.append(deep.mean((2, 3)).cpu())
    return torch.stack(views, 1).numpy()
