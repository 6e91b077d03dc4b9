"""The dequantizer network: ``depth`` 3x3 convolutions (ReLU between them) that predict what to
add to the palette image, on values in [0, 1]; output clamped and rounded (half up) back to uint8
(spec §9.3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class DequantConfig:
    """``channels`` C (1 or 3), ``width`` (hidden channels) and ``depth`` (convolutions)."""

    channels: int = 3
    width: int = 16
    depth: int = 3

    def __post_init__(self) -> None:
        for name, lo, hi in (("channels", 1, 3), ("width", 1, 256), ("depth", 2, 16)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"dequantizer {name} must be an integer in {lo}..{hi}, got {v!r}")
        if self.channels == 2:
            raise ValueError("dequantizer channels must be 1 or 3, got 2")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> DequantConfig:
        if not isinstance(d, dict) or set(d) != {"channels", "width", "depth"}:
            raise ValueError(f"expected keys channels, width, depth, found {sorted(d) if isinstance(d, dict) else d!r}")
        return cls(**d)

    def macs_per_pixel(self) -> int:
        c, w = self.channels, self.width
        return 9 * (c * w + (self.depth - 2) * w * w + w * c)


class Dequantizer(nn.Module):
    """``restore`` uint8 (N, C, H, W) palette images; ``forward`` works on floats in [0, 1]."""

    def __init__(self, config: DequantConfig) -> None:
        super().__init__()
        self.config = config
        c, w = config.channels, config.width
        layers: list[nn.Module] = [nn.Conv2d(c, w, 3, padding=1)]
        for _ in range(config.depth - 2):
            layers += [nn.ReLU(), nn.Conv2d(w, w, 3, padding=1)]
        layers += [nn.ReLU(), nn.Conv2d(w, c, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)

    @torch.no_grad()
    def restore(self, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """Restored uint8 images of uint8 ``images`` (N, C, H, W), on the model's device, in
        chunks of ``batch`` images (bounded memory at any image size)."""
        device = next(self.parameters()).device
        out = torch.empty_like(images)
        for s in range(0, len(images), batch):
            x = images[s : s + batch].to(device).float().div_(255)
            y = self(x).clamp_(0, 1).mul_(255).add_(0.5).floor_().to(torch.uint8)
            out[s : s + batch] = y.to(images.device)
        return out
