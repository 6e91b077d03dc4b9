"""Decoding on the device: ship bit-packed indices, unpack and look colours up after .to(device).

The host sends ``bits / (8 * C)`` of the bytes of uint8 pixels (2-bit RGB: 1/12), or
``bits / (32 * C)`` of float32 pixels. The same module runs on CPU tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from dcqformat.decode import bitpack

from .reconstruct import Reconstructor, pixel_mask
from .tables import channel_tables, normalized_table

if TYPE_CHECKING:
    from dcqformat.dequant import Dequantizer


class DeviceDecoder(torch.nn.Module):
    """Unpack (N, bytes) uint8 bit streams and palette ids to (N, C, H, W) images, batched.

    Args:
        palettes: (P, 2**bits, C) uint8, the file's palettes.
        bits, height, width: of the samples (one size).
        mean, std: normalise float output, as torchvision's ``Normalize``.
        dtype: ``torch.float32`` (values / 255, then normalised) or ``torch.uint8``.
        patch: the file's (patch_h, patch_w), for files with dropped patches.
        reconstructor: a :class:`~dcqformat.loaders.reconstruct.Reconstructor` that refills
            them (its MAE runs where the batch is).
        dequantizer: the file's learned dequantizer (:class:`dcqformat.dequant.Dequantizer`),
            run on the decoded (and refilled) uint8 batch where the batch is; moves with ``.to()``.

    For a masked file, ``forward(packed, palette_ids, dropped)`` takes each sample's stream of
    kept pixels (zero-padded to the full size) and its (gh, gw) patch mask; the kept pixels are
    scattered to their places on the device, then the reconstructor fills the rest.
    """

    palettes: torch.Tensor
    table: torch.Tensor
    byte: torch.Tensor
    shift: torch.Tensor
    levels: torch.Tensor
    rank: torch.Tensor

    def __init__(self, palettes: np.ndarray, bits: int, height: int, width: int, *,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 dtype: torch.dtype = torch.float32, patch: tuple[int, int] | None = None,
                 reconstructor: Reconstructor | None = None, dequantizer: Dequantizer | None = None) -> None:
        super().__init__()
        self.dequantizer: Dequantizer | None = dequantizer
        self.bits, self.height, self.width = bits, height, width
        self.dtype, self.patch, self.reconstructor = dtype, patch, reconstructor
        pal = torch.as_tensor(np.asarray(palettes))
        self.register_buffer("palettes", pal, persistent=False)
        float_out = dtype != torch.uint8
        table = torch.from_numpy(normalized_table(np.asarray(palettes), mean, std)) if float_out else pal
        self.register_buffer("table", table.contiguous(), persistent=False)
        levels = channel_tables(pal.shape[2], mean, std, float_out)[..., 0]  # (C, 256): refilled pixels
        self.register_buffer("levels", torch.from_numpy(levels), persistent=False)
        n = height * width
        pos = torch.arange(n, dtype=torch.int64) * bits
        self.register_buffer("byte", pos >> 3, persistent=False)
        self.register_buffer("shift", (pos & 7).to(torch.int32), persistent=False)
        if patch is not None:  # each pixel's rank in the payload order of an unmasked sample
            order = bitpack.kept_pixel_order(height, width, *patch, np.zeros(bitpack.grid_shape(height, width, *patch),
                                                                              bool))
            rank = np.empty(n, np.int64)
            rank[order] = np.arange(n)
            self.register_buffer("rank", torch.from_numpy(rank), persistent=False)

    def forward(self, packed: torch.Tensor, palette_ids: torch.Tensor,
                dropped: torch.Tensor | None = None) -> torch.Tensor:
        n_img = packed.shape[0]
        wide = torch.nn.functional.pad(packed, (0, 1)).to(torch.int32)  # room for a straddling index
        lo = wide[:, self.byte]
        hi = wide[:, self.byte + 1]
        idx = (((lo | (hi << 8)) >> self.shift) & ((1 << self.bits) - 1)).to(torch.int64)  # (N, H*W)
        pids = palette_ids.to(torch.int64)
        if dropped is None or dropped.numel() == 0:
            if self.dequantizer is None:
                pix = self.table[pids[:, None], idx]  # (N, H*W, C)
                return pix.permute(0, 2, 1).reshape(n_img, -1, self.height, self.width)
            pix = self.palettes[pids[:, None], idx].permute(0, 2, 1).reshape(n_img, -1, self.height, self.width)
            return self._typed(self.dequantizer.restore(pix))
        if self.patch is None:
            raise ValueError("this decoder was built without the file's patch size")
        hidden = pixel_mask(dropped.bool(), self.patch, self.height, self.width).reshape(n_img, -1)
        # Value j of the stream belongs to the j-th kept pixel in payload order.
        order = torch.argsort(self.rank + hidden.to(torch.int64) * self.rank.numel(), dim=1)
        idx = torch.zeros_like(idx).scatter_(1, order, idx)
        pix = self.palettes[pids[:, None], idx].permute(0, 2, 1).reshape(n_img, -1, self.height, self.width)
        pix = torch.where(hidden.reshape(n_img, 1, self.height, self.width), 0, pix)
        if self.reconstructor is not None:
            pix = self.reconstructor.fill(pix, dropped.bool(), self.palettes[pids] if self.reconstructor.snap else None)
        if self.dequantizer is not None:
            pix = self.dequantizer.restore(pix)
        return self._typed(pix)

    def _typed(self, pix: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) pixels in the output dtype (normalised floats through ``levels``)."""
        if self.dtype == torch.uint8:
            return pix
        channel = torch.arange(pix.shape[1], device=pix.device)[None, :, None, None]
        return self.levels[channel, pix.long()]


def random_crop_flip(images: torch.Tensor, padding: int = 4, flip: float = 0.5, fill: float = 0.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched ``RandomCrop(size, padding) + RandomHorizontalFlip`` on (N, C, H, W), on any device."""
    n, _, h, w = images.shape
    dev = images.device
    padded = torch.nn.functional.pad(images, (padding,) * 4, value=fill)
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(dev)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(dev)
    flips = (torch.rand(n, generator=generator) < flip).to(dev)
    rows = oy[:, None] + torch.arange(h, device=dev)
    cols = torch.arange(w, device=dev).expand(n, w)
    cols = torch.where(flips[:, None], cols.flip(1), cols) + ox[:, None]
    batch = torch.arange(n, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
