"""sRGB <-> CIE LAB (D65) in torch, differentiable; values in [0, 1] for sRGB."""

from __future__ import annotations

import torch

_M = torch.tensor([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                   [0.0193339, 0.1191920, 0.9503041]])
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
# Distances weight lightness twice (per-image LAB k-means with L x2 was the best baseline).
LAB_WEIGHTS = torch.tensor([2.0, 1.0, 1.0])


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) sRGB in [0, 1] -> (..., 3) LAB (L in 0..100)."""
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp(min=0) + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _M.to(rgb).T / _WHITE.to(rgb)
    eps = 216 / 24389
    f = torch.where(xyz > eps, xyz.clamp(min=eps) ** (1 / 3), (24389 / 27 * xyz + 16) / 116)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_srgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`srgb_to_lab`, clamped to [0, 1]."""
    fy = (lab[..., 0] + 16) / 116
    f = torch.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    eps = 6 / 29
    xyz = torch.where(f > eps, f**3, 3 * eps**2 * (f - 4 / 29)) * _WHITE.to(lab)
    lin = (xyz @ torch.linalg.inv(_M).to(lab).T).clamp(0, 1)
    rgb = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin.clamp(min=1e-12) ** (1 / 2.4) - 0.055)
    return rgb.clamp(0, 1)


def weighted(lab: torch.Tensor) -> torch.Tensor:
    """LAB scaled so that squared Euclidean distance weights lightness as :data:`LAB_WEIGHTS`."""
    return lab * LAB_WEIGHTS.to(lab).sqrt()


def unweighted(lab_w: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`weighted`."""
    return lab_w / LAB_WEIGHTS.to(lab_w).sqrt()
