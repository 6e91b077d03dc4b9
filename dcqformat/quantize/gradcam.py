"""Grad-CAM++ (Chattopadhyay et al., 2018) for the true label, batched."""

from __future__ import annotations

import torch
from torch import nn


def gradcam_pp(model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
               out_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention maps (N, H, W) in [0, 1] for ``labels``, plus shallow features and logits.

    The class score's gradient with respect to the last block's activations A gives the
    weights w_k = sum_ij alpha_ij relu(dS/dA_ij), alpha = g^2 / (2 g^2 + sum(A) g^3), with
    higher derivatives of exp(S) as in the paper; the map relu(sum_k w_k A_k) is upsampled
    bilinearly to ``out_size`` and scaled to [0, 1] per image.
    """
    x = x.detach().requires_grad_(False)
    logits, shallow, deep = model(x, keep=True)
    deep.retain_grad()
    labels = labels.clamp(min=0) % logits.shape[1]
    score = logits.gather(1, labels[:, None]).sum()
    (grads,) = torch.autograd.grad(score, deep)
    g2, g3 = grads.pow(2), grads.pow(3)
    denom = 2 * g2 + deep.sum((2, 3), keepdim=True) * g3
    alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    weights = (alpha * torch.relu(grads)).sum((2, 3), keepdim=True)
    cam = torch.relu((weights * deep).sum(1, keepdim=True)).detach()
    cam = nn.functional.interpolate(cam, size=out_size, mode="bilinear", align_corners=False)[:, 0]
    lo = cam.flatten(1).min(1).values[:, None, None]
    hi = cam.flatten(1).max(1).values[:, None, None]
    cam = (cam - lo) / (hi - lo).clamp(min=1e-8)
    return cam, shallow.detach().mean((2, 3)), logits.detach()
