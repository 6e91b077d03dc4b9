"""Refilling dropped patches after batch decode: by the file's MAE, by harmonic inpainting from
the visible pixels around them, by the image's mean colour, or not at all (zeros, and the mask
goes to the caller).

Reconstruction by the MAE or the harmonic fill works on whole decoded images (the MAE sees
the full patch grid), so for those the fused decode+crop of the plain path is split in two:
decode to uint8, refill (or read the refill cache), then crop/flip/resize (and normalise) the
pixels with the same kernel, each colour channel read as an 8-bit "indexed" plane through a
per-channel table. ``"none"`` and ``"mean"`` stay fused: index maps cropped through one table per
image whose extra entry is the fill. Visible pixels stay exactly as decoded.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from dcqformat import DcqError, DcqReader, kernels
from dcqformat.decode import PaletteSet, Streams, decode_images, resample_planes
from dcqformat.inpaint import harmonic_fill

from .cache import RefillCache
from .tables import channel_tables

if TYPE_CHECKING:
    from dcqformat.mae import MAE

Mode = Literal["auto", "mae", "smooth", "mean", "none"]
MODES = ("auto", "mae", "smooth", "mean", "none")


def pixel_mask(dropped: torch.Tensor, patch: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """(N, gh, gw) patch mask -> (N, 1, H, W) pixel mask."""
    ph, pw = patch
    return dropped.repeat_interleave(ph, 1).repeat_interleave(pw, 2)[:, None, :height, :width]


class Reconstructor:
    """Fills dropped patches of uint8 (N, C, H, W) batches; picklable, builds its MAE lazily.

    Args:
        mode: ``"auto"`` (the file's MAE when it has one, else ``"smooth"``), ``"mae"`` (the
            file's MAE, one forward pass per batch), ``"smooth"`` (harmonic
            inpainting from the visible pixels, :mod:`dcqformat.inpaint`; needs no weights),
            ``"mean"`` (each image's mean visible colour) or ``"none"`` (leave zeros).
        weights: the MAE as safetensors bytes (the file's WGHT section); needed for ``"mae"``.
        patch: the file's (patch_h, patch_w).
        snap: replace each filled pixel by the nearest colour of the image's palette.
        device: where the MAE runs (``"cpu"`` in DataLoader workers).
    """

    def __init__(self, mode: Mode, *, weights: bytes | None, patch: tuple[int, int], snap: bool = False,
                 device: str | torch.device = "cpu") -> None:
        if mode not in MODES:
            raise ValueError(f"reconstruct must be one of {MODES}, got {mode!r}")
        if mode == "auto":
            mode = "mae" if weights is not None else "smooth"
        if mode == "mae" and weights is None:
            raise DcqError("reconstruct='mae' needs the file's MAE weights (WGHT section), found none; "
                           "use reconstruct='smooth' (or auto), 'mean' or 'none', or convert with --drop-patches "
                           "--mae-size tiny or larger (it trains one)")
        self.mode, self.weights, self.snap = mode, weights, snap
        self.patch: tuple[int, int] = (int(patch[0]), int(patch[1]))
        self.device = torch.device(device)
        self._model: MAE | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None}

    @property
    def model(self) -> MAE:
        if self._model is None:
            from dcqformat.mae import mae_from_bytes

            assert self.weights is not None  # checked in __init__ for mode "mae"
            model = mae_from_bytes(self.weights, self.device)
            if (model.config.patch,) * 2 != self.patch:
                raise DcqError(f"the MAE's patch {model.config.patch} does not match the file's {self.patch}")
            self._model = model
        return self._model

    def fill(self, images: torch.Tensor, dropped: torch.Tensor, palettes: torch.Tensor | None = None) -> torch.Tensor:
        """``images`` (N, C, H, W) uint8 with ``dropped`` (N, gh, gw) bool patches refilled.

        ``palettes`` (N, K, C) uint8, each image's palette, is needed for ``snap``.
        """
        if self.mode == "none" or not bool(dropped.any()):
            return images
        n, c, h, w = images.shape
        hidden = pixel_mask(dropped, self.patch, h, w)
        if self.mode == "smooth":  # a CPU kernel: device tensors go there and back
            planes = harmonic_fill(images.cpu().numpy().copy(), hidden[:, 0].cpu().numpy(), max(self.patch))
            filled = torch.from_numpy(planes).to(images.device)
        elif self.mode == "mean":
            keep = (~hidden).to(torch.float32)
            mean = (images.float() * keep).sum((2, 3), keepdim=True) / keep.sum((2, 3), keepdim=True).clamp(min=1)
            filled = torch.where(hidden, mean.round().to(torch.uint8).expand_as(images), images)
        else:
            with torch.no_grad():
                filled = self.model.fill(images.to(self.device), dropped.to(self.device)).to(images.device)
        if self.snap and palettes is not None:
            pal = palettes.to(images.device).float()  # (N, K, C)
            px = filled.flatten(2).transpose(1, 2).float()  # (N, HW, C)
            nearest = torch.cdist(px, pal).argmin(2)
            snapped = pal.gather(1, nearest[..., None].expand(-1, -1, c)).transpose(1, 2).reshape(n, c, h, w)
            filled = torch.where(hidden, snapped.round().to(torch.uint8), filled)
        return filled


def crop_pixels(images: np.ndarray, tables: np.ndarray, boxes: np.ndarray, flips: np.ndarray,
                size: tuple[int, int], bilinear: bool, chw: bool) -> np.ndarray:
    """Crop/flip/resize uint8 (N, C, H, W) images to ``size`` through per-channel ``tables``
    (C, 256, 1): the fused decode kernel with every plane read as an 8-bit indexed image, so the
    sampling rules are the plain path's. Outside the image: table value 0 (black)."""
    out = resample_planes(images, tables, boxes, flips, size, bilinear)
    return out if chw else np.ascontiguousarray(out.transpose(0, 2, 3, 1))


def refill_and_crop(streams: Streams, palettes: PaletteSet, rec: Reconstructor, tables: np.ndarray,
                    boxes: np.ndarray, flips: np.ndarray, size: tuple[int, int], bilinear: bool,
                    chw: bool, cache: RefillCache | None = None,
                    indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The one refill path (DCQDataset, the WebDataset decoder, dcq export, the benchmarks).

    Decodes the samples of ``streams`` as whole images, one batch per image size, refills their
    dropped patches as ``rec`` says, then crops/flips/resizes (and normalises through the
    per-channel ``tables``) them to ``size``. Returns the batch and, for ``reconstruct="none"``,
    its (n, OH, OW) dropped-pixel mask.

    ``"none"`` and ``"mean"`` never leave the palette: the index maps are cropped through one
    table per sample whose extra entry is the fill (:func:`_crop_indexed`). The other modes keep
    refilled images in ``cache`` (a :class:`RefillCache`; ``indices`` are the samples' numbers).
    """
    n, c = len(streams), tables.shape[0]
    out = np.empty((n, c, *size) if chw else (n, *size, c), tables.dtype)
    hidden = np.zeros((n, *size), bool) if rec.mode == "none" else None
    indexed = (rec.mode == "none" or (rec.mode == "mean" and not rec.snap)) and streams.bits < 8
    for h, w in sorted({(int(a), int(b)) for a, b in zip(streams.heights, streams.widths)}):
        pos = np.flatnonzero((streams.heights == h) & (streams.widths == w))
        part = streams.take(pos)
        if indexed:
            out[pos] = _crop_indexed(part, palettes, rec.mode, tables, boxes[pos], flips[pos], size, bilinear, chw,
                                     hidden, pos)
            continue
        full = np.empty((pos.size, c, h, w), np.uint8)
        todo = np.ones(pos.size, bool) if cache is None or indices is None else ~cache.get(indices[pos], full)
        if todo.any():
            rows = np.flatnonzero(todo)
            sub = part.take(rows) if rows.size < pos.size else part
            dropped = torch.from_numpy(sub.grids(rec.patch))
            own = torch.from_numpy(palettes.palettes[sub.palette_ids]) if rec.snap else None
            decoded = decode_images(sub, palettes, np.empty((rows.size, c, h, w), np.uint8), True)
            full[rows] = rec.fill(torch.from_numpy(decoded), dropped, own).numpy()
            if cache is not None and indices is not None:
                cache.put(indices[pos][rows], full[rows])
        out[pos] = crop_pixels(full, tables, boxes[pos], flips[pos], size, bilinear, chw)
        if hidden is not None:  # "none" on 8-bit maps: the pixel masks cropped like the pixels
            m = pixel_mask(torch.from_numpy(part.grids(rec.patch)), rec.patch, h, w).numpy().astype(np.uint8)
            hidden[pos] = crop_pixels(m, channel_tables(1, None, None, False), boxes[pos], flips[pos], size,
                                      False, True)[:, 0] != 0
    return out, hidden


def _crop_indexed(part: Streams, palettes: PaletteSet, mode: str, tables: np.ndarray, boxes: np.ndarray,
                  flips: np.ndarray, size: tuple[int, int], bilinear: bool, chw: bool,
                  hidden: np.ndarray | None, pos: np.ndarray) -> np.ndarray:
    """Samples of one size (bits < 8) refilled by ``"none"`` (level 0) or ``"mean"`` (the
    rounded mean visible colour) and cropped in one fused pass over their index maps.

    Each map holds index + 1 for a decoded pixel and 0 for a dropped one; sample k's table is
    its palette's values through ``tables`` behind one extra entry, the fill's value. The same
    pixels, so the same output, as refilling decoded images and cropping them (tests check it).
    """
    m, k = len(part), 1 << part.bits
    h, w = part.size() or (0, 0)
    shifted = PaletteSet(np.arange(1, k + 1, dtype=np.uint8).reshape(1, k, 1), part.bits)
    maps = decode_images(replace(part, palette_ids=np.zeros(m, np.int64)), shifted,
                         np.empty((m, h, w, 1), np.uint8), False).reshape(m, h * w)
    c = tables.shape[0]
    pal = palettes.palettes[part.palette_ids]  # (m, K, C)
    table = np.empty((m, k + 1, c), tables.dtype)
    level = np.zeros((m, c), np.int64)
    if mode == "mean":  # Reconstructor.fill's float32 mean, rounded half to even, from index counts
        if k <= 16:  # a comparison per index beats bincount's scatter for small palettes
            counts = np.stack([np.count_nonzero(maps == v, axis=1) for v in range(1, k + 1)], 1)
        else:
            counts = np.bincount((maps.astype(np.int64) + (np.arange(m) * (k + 1))[:, None]).reshape(-1),
                                 minlength=m * (k + 1)).reshape(m, k + 1)[:, 1:]
        sums = (counts[:, :, None] * pal).sum(1)
        kept = np.maximum(counts.sum(1), 1)
        level = np.round(sums.astype(np.float32) / kept.astype(np.float32)[:, None]).astype(np.int64)
    for ch in range(c):
        table[:, 1:, ch] = tables[ch, pal[..., ch], 0]
        table[:, 0, ch] = tables[ch, level[:, ch], 0]
    data = maps.reshape(-1)
    offsets = np.arange(m, dtype=np.int64) * (h * w)
    hs, ws = np.full(m, h, np.int64), np.full(m, w, np.int64)
    boxes = np.ascontiguousarray(boxes, np.float64)
    flips = np.ascontiguousarray(flips, np.bool_)
    out = np.empty((m, c, *size) if chw else (m, *size, c), tables.dtype)
    kernels.decode_resample_batch(data, offsets, hs, ws, np.arange(m, dtype=np.int64), table,
                                  tables[:, 0, 0].copy(), 8, boxes, flips, bilinear,
                                  0.5 if tables.dtype.kind in "ui" else 0.0, out, chw)
    if hidden is not None:  # the dropped pixels of the output: index 0, sampled nearest
        marks = np.zeros((1, k + 1, 1), np.uint8)
        marks[0, 0, 0] = 1
        seen = np.empty((m, 1, *size), np.uint8)
        kernels.decode_resample_batch(data, offsets, hs, ws, np.zeros(m, np.int64), marks, np.zeros(1, np.uint8), 8,
                                      boxes, flips, False, 0.5, seen, True)
        hidden[pos] = seen[:, 0] != 0
    return out


def refilled_images(reader: DcqReader, indices: np.ndarray, rec: Reconstructor) -> np.ndarray:
    """Samples ``indices`` of one size as uint8 (N, H, W, C), dropped patches refilled by ``rec``:
    the NumPy view of the one refill path (``dcq export``, the benchmarks)."""
    streams = reader.streams(indices)
    size = streams.size()
    if size is None:
        raise ValueError("refilled_images needs samples of one size")
    boxes = np.tile([0.0, 0.0, *size], (len(streams), 1))
    out, _ = refill_and_crop(streams, reader.palette_set, rec, channel_tables(reader.channels, None, None, False),
                             boxes, np.zeros(len(streams), bool), size, False, False)
    return out
