"""Refilling dropped patches after batch decode: by the file's MAE, by harmonic inpainting from
the visible pixels around them, by the image's mean colour, or not at all (zeros, and the mask
goes to the caller).

Reconstruction by the MAE or the harmonic fill works on whole decoded images (the MAE sees
the full patch grid), so for those the fused decode+crop of the plain path is split in two:
decode to uint8, refill (or read the refill cache), then crop/flip/resize (and normalise) the
pixels with the same kernel, each colour channel read as an 8-bit "indexed" plane through a
per-channel table. ``"none"`` and ``"mean"`` stay fused: kept indices decoded straight into the
crop, dropped pixels taking the fill's value. Visible pixels stay exactly as decoded.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from dcqformat import DcqError, DcqReader
from dcqformat.decode import PaletteSet, Streams, decode_crops, decode_masked_crops, resample_planes
from dcqformat.decode.inpaint import harmonic_fill

from .cache import RefillCache
from .dequantize import Restorer
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
            inpainting from the visible pixels, :mod:`dcqformat.decode.inpaint`; needs no weights),
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


def refill_and_crop(streams: Streams, palettes: PaletteSet, rec: Reconstructor | None, tables: np.ndarray,
                    boxes: np.ndarray, flips: np.ndarray, size: tuple[int, int], bilinear: bool,
                    chw: bool, cache: RefillCache | None = None, indices: np.ndarray | None = None,
                    masks: bool = False, restorer: Restorer | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The one refill path (DCQDataset, the WebDataset decoder, dcq export, the benchmarks).

    Refills the dropped patches of the samples of ``streams`` as ``rec`` says (None: a file
    without dropped patches), dequantizes them as ``restorer`` says (None: palette lookup) and
    crops, flips, resizes (and normalises through the per-channel ``tables``) them to ``size``.
    Returns the batch and, with ``masks`` and ``reconstruct="none"``, its (n, OH, OW)
    dropped-pixel mask.

    With lookup, ``"none"`` and ``"mean"`` never leave the palette: one fused pass decodes each
    sample's kept indices straight into its crop, the dropped pixels taking level 0 or the mean
    colour (:func:`_crop_indexed`). Otherwise whole images are decoded (looked up or debanded),
    one batch per image size, refilled, run through the learned dequantizer if there is one
    (or read from ``cache``, a :class:`RefillCache`; ``indices`` are the samples' numbers) and
    cropped.
    """
    lookup = restorer is None or not restorer.whole_images
    if rec is not None and lookup and (rec.mode == "none" or (rec.mode == "mean" and not rec.snap)):
        return _crop_indexed(streams, palettes, rec.mode, tables, boxes, flips, size, bilinear, chw,
                             masks and rec.mode == "none")
    if masks and rec is not None and rec.mode == "none":
        raise ValueError("the dropped-pixel masks (masks=True) come with dequantize='lookup' only")
    restorer = restorer or Restorer("lookup", weights=None)
    n, c = len(streams), tables.shape[0]
    out = np.empty((n, c, *size) if chw else (n, *size, c), tables.dtype)
    for h, w in sorted({(int(a), int(b)) for a, b in zip(streams.heights, streams.widths)}):
        pos = np.flatnonzero((streams.heights == h) & (streams.widths == w))
        part = streams.take(pos)
        full = np.empty((pos.size, c, h, w), np.uint8)
        todo = np.ones(pos.size, bool) if cache is None or indices is None else ~cache.get(indices[pos], full)
        if todo.any():
            rows = np.flatnonzero(todo)
            sub = part.take(rows) if rows.size < pos.size else part
            decoded = restorer.decode(sub, palettes, np.empty((rows.size, c, h, w), np.uint8))
            if rec is not None:
                dropped = torch.from_numpy(sub.grids(rec.patch))
                own = torch.from_numpy(palettes.palettes[sub.palette_ids]) if rec.snap else None
                decoded = rec.fill(torch.from_numpy(decoded), dropped, own).numpy()
            full[rows] = restorer.refine(decoded)
            if cache is not None and indices is not None:
                cache.put(indices[pos][rows], full[rows])
        out[pos] = resample_planes(full, tables, boxes[pos], flips[pos], size, bilinear, chw)
    return out, None


def _crop_indexed(streams: Streams, palettes: PaletteSet, mode: str, tables: np.ndarray, boxes: np.ndarray,
                  flips: np.ndarray, size: tuple[int, int], bilinear: bool, chw: bool,
                  masks: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Samples of any sizes refilled by ``"none"`` (level 0) or ``"mean"`` (the rounded mean
    kept colour) and cropped in one fused pass from their kept indices: the same pixels, so the
    same output, as refilling decoded images and cropping them (tests check it)."""
    n, c = len(streams), tables.shape[0]
    ids, inverse = np.unique(streams.palette_ids, return_inverse=True)  # only the palettes in use
    colours = palettes.palettes[ids]  # (P, K, C) uint8
    table = np.stack([tables[ch, colours[..., ch], 0] for ch in range(c)], -1)  # their values
    black = tables[:, 0, 0].copy()  # level 0: the fill of "none", and outside the image
    out = np.empty((n, c, *size) if chw else (n, *size, c), tables.dtype)
    hidden = np.zeros((n, *size), bool) if masks else None
    own = replace(streams, palette_ids=inverse.reshape(-1).astype(np.int64))
    if not streams.any_masked():  # nothing dropped in this batch
        decode_crops(own, table, black, boxes, flips, out, bilinear=bilinear, chw=chw)
        return out, hidden
    decode_masked_crops(own, table, np.tile(black, (n, 1)), black, boxes, flips, out, bilinear=bilinear, chw=chw,
                        mean_of=(colours, tables[:, :, 0]) if mode == "mean" else None, hidden=hidden)
    return out, hidden


def refilled_images(reader: DcqReader, indices: np.ndarray, rec: Reconstructor | None,
                    restorer: Restorer | None = None) -> np.ndarray:
    """Samples ``indices`` of one size as uint8 (N, H, W, C), dropped patches refilled by ``rec``
    and dequantized by ``restorer``: the NumPy view of the one refill path (``dcq export``, the
    benchmarks)."""
    streams = reader.streams(indices)
    size = streams.size()
    if size is None:
        raise ValueError("refilled_images needs samples of one size")
    boxes = np.tile([0.0, 0.0, *size], (len(streams), 1))
    out, _ = refill_and_crop(streams, reader.palette_set, rec, channel_tables(reader.channels, None, None, False),
                             boxes, np.zeros(len(streams), bool), size, False, False, restorer=restorer)
    return out
