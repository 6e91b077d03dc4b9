"""DCQ palettes: attention-guided pixels, texture-preserving refinement, nearest-colour assignment."""

from __future__ import annotations

import torch
from torch import nn

from ..pipeline.imaging import sobel
from .color import lab_to_srgb, srgb_to_lab, weighted


def top_pixels(images: torch.Tensor, cams: torch.Tensor, fraction: float) -> list[torch.Tensor]:
    """Per image, the RGB pixels (P, 3) in [0, 1] whose attention is in the top ``fraction``."""
    out = []
    flat_img = images.flatten(1, 2).float() / 255  # (N, HW, 3)
    flat_cam = cams.flatten(1)
    keep = max(1, int(round(fraction * flat_cam.shape[1])))
    top = flat_cam.topk(keep, dim=1).indices
    for i in range(len(images)):
        out.append(flat_img[i, top[i]])
    return out


def quantize_ste(images_rgb: torch.Tensor, palette_lab: torch.Tensor, tau: float) -> torch.Tensor:
    """Hard nearest-colour images (N, 3, H, W) in RGB, with soft-assignment gradients (STE)."""
    lab = weighted(srgb_to_lab(images_rgb.permute(0, 2, 3, 1)))  # (N, H, W, 3)
    d2 = torch.cdist(lab.flatten(1, 2), weighted(palette_lab)[None].expand(len(lab), -1, -1)).pow(2)
    soft = torch.softmax(-d2 / tau, -1)  # (N, HW, K)
    hard = nn.functional.one_hot(d2.argmin(-1), palette_lab.shape[0]).to(soft)
    weights = hard + soft - soft.detach()
    rgb = lab_to_srgb(palette_lab)  # (K, 3)
    out = weights @ rgb  # (N, HW, 3)
    return out.reshape(lab.shape).permute(0, 3, 1, 2)


def refine_palette(images: torch.Tensor, palette_lab: torch.Tensor, *, steps: int, lr: float = 0.5,
                   fidelity: float = 1.0, tau: float = 50.0) -> tuple[torch.Tensor, dict]:
    """Texture-preserving optimisation of one cluster's palette (LAB) on its images (N, H, W, 3) uint8.

    Minimises sum_ch MSE(Sobel(X), Sobel(X_hat)) + fidelity * MSE(X, X_hat), with X_hat the
    nearest-colour image through a straight-through estimator; only the palette moves (Adam).
    """
    x = images.permute(0, 3, 1, 2).float() / 255
    edges = sobel(x)
    param = nn.Parameter(palette_lab.clone())
    opt = torch.optim.Adam([param], lr=lr)

    def loss_of(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xq = quantize_ste(x, p, tau)
        return nn.functional.mse_loss(sobel(xq), edges), nn.functional.mse_loss(xq, x)

    with torch.no_grad():
        e0, f0 = loss_of(param)
    best, best_loss = param.detach().clone(), float(e0 + fidelity * f0)
    for _ in range(steps):
        edge, fid = loss_of(param)
        loss = edge + fidelity * fid
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            param[:, 0].clamp_(0, 100)
            param[:, 1:].clamp_(-110, 110)
            e, f = loss_of(param)
            if float(e + fidelity * f) < best_loss:
                best, best_loss = param.detach().clone(), float(e + fidelity * f)
    return best, {"edge_before": float(e0), "fidelity_before": float(f0), "loss_after": best_loss,
                  "loss_before": float(e0 + fidelity * f0)}


def to_uint8(palette_lab: torch.Tensor) -> torch.Tensor:
    """LAB palette -> (K, 3) uint8 sRGB."""
    return (lab_to_srgb(palette_lab) * 255).round().clamp(0, 255).to(torch.uint8)


def assign(images: torch.Tensor, palettes_rgb: torch.Tensor, palette_ids: torch.Tensor) -> torch.Tensor:
    """Nearest palette entry (weighted LAB) of every pixel: (N, H, W, 3) uint8 -> (N, H, W) uint8.

    ``palettes_rgb`` (P, K, 3) uint8 are the stored palettes, so indices match what decodes.
    """
    lab = weighted(srgb_to_lab(images.float() / 255)).flatten(1, 2)  # (N, HW, 3)
    pal = weighted(srgb_to_lab(palettes_rgb.float() / 255))[palette_ids]  # (N, K, 3)
    return torch.cdist(lab, pal).argmin(-1).reshape(images.shape[:3]).to(torch.uint8)
