"""A small masked autoencoder (He et al., 2022) that fills the dropped patches of an image.

A ViT encoder sees only the kept patches; a light decoder puts a learned mask token at every
dropped position and predicts those patches' pixels. Position embeddings are fixed 2-D sine-
cosine tables, so one model serves any grid size. Inputs are pixels in [0, 1], (N, C, H, W);
images whose sides are not multiples of the patch are padded with zeros and cropped back.

With ``prior=1`` the model refines a harmonic fill (:mod:`dcqformat.decode.inpaint`) instead of
painting from nothing: each dropped token of the decoder also embeds the harmonic fill of its
patch, and the head predicts the correction to it (zero at initialisation, so an untrained or
briefly trained model is never worse than the fill it starts from).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..decode.inpaint import harmonic_fill


@dataclass
class MAEConfig:
    patch: int = 4
    channels: int = 3
    dim: int = 96
    depth: int = 3
    heads: int = 3
    decoder_dim: int = 64
    decoder_depth: int = 1
    mlp_ratio: float = 2.0
    prior: int = 0  # 0: paint dropped patches from the mask token; 1: refine their harmonic fill

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MAEConfig":
        """A config from JSON values, checked (:meth:`check`): raises ValueError naming the key."""
        if not isinstance(d, dict):
            raise ValueError(f"MAE config must be an object, found {type(d).__name__}")
        values = {}
        for k in cls.__dataclass_fields__:
            if k not in d:
                continue
            v, want = d[k], type(getattr(cls(), k))
            if isinstance(v, bool) or not isinstance(v, (int, float) if want is float else int):
                raise ValueError(f"MAE config {k!r} must be {'a number' if want is float else 'an integer'}, "
                                 f"found {v!r}")
            values[k] = want(v)
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Raise ValueError unless every setting is in its range (before anything is built)."""
        ranges = {"patch": (1, 256), "channels": (1, 3), "dim": (1, 4096), "depth": (0, 64), "heads": (1, 64),
                  "decoder_dim": (1, 4096), "decoder_depth": (0, 64), "mlp_ratio": (0.25, 16.0), "prior": (0, 1)}
        for k, (lo, hi) in ranges.items():
            v = getattr(self, k)
            if not (lo <= v <= hi):  # NaN fails too
                raise ValueError(f"MAE config {k!r} must be in {lo}..{hi}, found {v!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"MAE config 'channels' must be 1 or 3, found {self.channels}")
        if self.dim % self.heads:
            raise ValueError(f"MAE config 'dim' ({self.dim}) must be a multiple of 'heads' ({self.heads})")


def sincos_2d(gh: int, gw: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings (gh * gw, dim), row-major."""
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1)))
    y, x = torch.meshgrid(torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32), indexing="ij")
    parts = []
    for coord in (y.reshape(-1), x.reshape(-1)):
        angle = coord[:, None] * freq[None]
        parts += [angle.sin(), angle.cos()]
    emb = torch.cat(parts, 1)
    return nn.functional.pad(emb, (0, dim - emb.shape[1]))


def _stack(dim: int, depth: int, heads: int, mlp_ratio: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class MAE(nn.Module):
    def __init__(self, config: MAEConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or MAEConfig()
        if c.dim % c.heads:
            raise ValueError(f"dim {c.dim} must be a multiple of heads {c.heads}")
        patch_values = c.patch * c.patch * c.channels
        self.embed = nn.Linear(patch_values, c.dim)
        self.encoder = _stack(c.dim, c.depth, c.heads, c.mlp_ratio)
        self.norm = nn.LayerNorm(c.dim)
        self.to_decoder = nn.Linear(c.dim, c.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(c.decoder_dim))
        self.decoder = _stack(c.decoder_dim, c.decoder_depth, max(1, c.decoder_dim // 32), c.mlp_ratio)
        self.decoder_norm = nn.LayerNorm(c.decoder_dim)
        self.head = nn.Linear(c.decoder_dim, patch_values)
        nn.init.normal_(self.mask_token, std=0.02)
        if c.prior:
            self.prior_embed = nn.Linear(patch_values, c.decoder_dim)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    # -- patches ---------------------------------------------------------------------------
    def grid(self, h: int, w: int) -> tuple[int, int]:
        p = self.config.patch
        return math.ceil(h / p), math.ceil(w / p)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, gh * gw, p * p * C), zero-padded at the bottom and right."""
        n, c, h, w = x.shape
        p = self.config.patch
        gh, gw = self.grid(h, w)
        x = nn.functional.pad(x, (0, gw * p - w, 0, gh * p - h))
        return x.reshape(n, c, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(n, gh * gw, p * p * c)

    def unpatchify(self, patches: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n = patches.shape[0]
        p, c = self.config.patch, self.config.channels
        gh, gw = self.grid(h, w)
        x = patches.reshape(n, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, gh * p, gw * p)
        return x[:, :, :h, :w]

    # -- the model -------------------------------------------------------------------------
    def prior_fill(self, x: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        """The harmonic fill (N, C, H, W) in [0, 1] of images ``x`` whose patches ``dropped``
        (N, L) are hidden: computed on the CPU on 8-bit pixels, as the loaders' "smooth" refill."""
        n, _, h, w = x.shape
        gh, gw = self.grid(h, w)
        p = self.config.patch
        hidden = dropped.reshape(n, gh, gw).repeat_interleave(p, 1).repeat_interleave(p, 2)[:, :h, :w]
        pixels = (x.detach() * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy().copy()
        return torch.from_numpy(harmonic_fill(pixels, hidden.cpu().numpy(), p)).to(x.device, torch.float32) / 255

    def forward(self, x: torch.Tensor, dropped: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted patches (N, L, p * p * C) of images ``x`` whose patches ``dropped`` (N, L)
        bool are hidden from the encoder (their pixels are never read). A model with
        ``config.prior`` refines ``prior``, the harmonic fill (:meth:`prior_fill`, computed when
        not given)."""
        n, _, h, w = x.shape
        gh, gw = self.grid(h, w)
        tokens = self.embed(self.patchify(x)) + sincos_2d(gh, gw, self.config.dim).to(x)
        order = torch.argsort(dropped.to(torch.uint8), dim=1, stable=True)  # kept patches first
        kept = (~dropped).sum(1)
        most = max(int(kept.max()), 1)
        index = order[:, :most]
        visible = tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[2]))
        padding = torch.arange(most, device=x.device)[None] >= kept[:, None]
        encoded = self.to_decoder(self.norm(self.encoder(visible, src_key_padding_mask=padding)))
        full = torch.zeros(n, gh * gw, encoded.shape[2], dtype=encoded.dtype, device=x.device)
        full = full.scatter(1, index[..., None].expand(-1, -1, encoded.shape[2]), encoded)
        token = self.mask_token.to(full)[None, None]
        base = None  # the harmonic fill's patches, which the head corrects
        if self.config.prior:
            base = self.patchify(self.prior_fill(x, dropped) if prior is None else prior)
            token = token + self.prior_embed(base)
        full = torch.where(dropped[..., None], token, full)
        full = full + sincos_2d(gh, gw, self.config.decoder_dim).to(full)
        out = self.head(self.decoder_norm(self.decoder(full)))
        return out if base is None else out + base

    def loss(self, x: torch.Tensor, dropped: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared error of the predicted pixels of the dropped patches."""
        pred = self.forward(x, dropped, prior)
        err = (pred - self.patchify(x)).pow(2).mean(2)
        return (err * dropped).sum() / dropped.sum().clamp(min=1)

    @torch.no_grad()
    def fill(self, images: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, C, H, W) with the dropped patches (N, gh, gw) bool filled by the
        model; every other pixel is returned unchanged."""
        n, _, h, w = images.shape
        x = images.float() / 255
        flat = dropped.reshape(n, -1)
        pred = self.unpatchify(self.forward(x, flat), h, w)
        out = (pred.clamp(0, 1) * 255).round().to(torch.uint8)
        p = self.config.patch
        pixel = dropped.repeat_interleave(p, 1).repeat_interleave(p, 2)[:, None, :h, :w]
        return torch.where(pixel, out, images)


def random_drop(n: int, patches: int, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, patches) bool: ``floor(ratio * patches + 0.5)`` patches of each row chosen at random."""
    count = int(ratio * patches + 0.5)
    ranks = torch.rand(n, patches, generator=generator).argsort(1).argsort(1)
    return ranks < count
