"""Decoding, apart from storage.

A :class:`Streams` value says what to decode: the bit streams of some samples (checked and,
for zstd, decompressed), where each starts, each sample's size and palette, and the drop masks
of samples with dropped patches. :meth:`dcqformat.DcqReader.streams` makes one from a file's
memory map, :func:`dcqformat.format.dcqi.streams_of` from ``.dcqi`` WebDataset members; the functions
below decode it, whatever it came from: whole images (:func:`decode_images`) and fused
crops/flips/resizes (:func:`decode_crops`; :func:`decode_masked_crops` with dropped patches
set to a value or the image's mean colour). Refilling dropped patches with a model or the
harmonic fill needs whole images and lives in :mod:`dcqformat.loaders.reconstruct`.

Only this module (and the reader's checks) calls :mod:`dcqformat.decode.kernels`; the NumPy twins in
:mod:`dcqformat.decode.bitpack` and :mod:`dcqformat.decode.resample` serve the tests only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import bitpack, deband, kernels
from .kernels import set_parallel

__all__ = ["PaletteSet", "Streams", "concat", "crop_arguments", "decode_crops", "decode_debanded", "decode_images",
           "decode_indices", "decode_masked_crops", "kept_pixels", "resample_planes", "set_parallel"]

_LUT_CACHE_BYTES = 64 << 20


@dataclass(frozen=True)
class Streams:
    """What to decode: ``n`` samples' bit streams and how to read them.

    ``data`` holds every stream (uint8); sample ``k`` starts at ``offsets[k]``, is a
    ``heights[k] x widths[k]`` image of ``bits``-bit indices into palette ``palette_ids[k]``.
    A sample with ``mask_offsets[k] >= 0`` has dropped patches of ``patch`` (ph, pw): its drop
    mask (spec §7) is at ``mask_data[mask_offsets[k]]`` and its stream holds the kept pixels only.
    """

    data: np.ndarray
    offsets: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    palette_ids: np.ndarray
    bits: int
    patch: tuple[int, int] | None = None
    mask_data: np.ndarray | None = None
    mask_offsets: np.ndarray | None = None
    uniform: tuple[int, int] | None = None  # (height, width) when the source knows all samples share it

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def masked(self) -> np.ndarray:
        """(n,) bool: which samples have a drop mask."""
        if self.mask_offsets is None:
            return np.zeros(len(self), bool)
        return self.mask_offsets >= 0

    def any_masked(self) -> bool:
        return self.mask_offsets is not None and bool((self.mask_offsets >= 0).any())

    def take(self, rows: np.ndarray) -> Streams:
        """The samples ``rows`` of this value (views: nothing is copied but the small arrays)."""
        return replace(self, offsets=self.offsets[rows], heights=self.heights[rows], widths=self.widths[rows],
                       palette_ids=self.palette_ids[rows],
                       mask_offsets=None if self.mask_offsets is None else self.mask_offsets[rows])

    def size(self) -> tuple[int, int] | None:
        """The one (height, width) of every sample, or None when they differ (or there are none)."""
        if self.uniform is not None and len(self):
            return self.uniform
        if not len(self) or (self.heights != self.heights[0]).any() or (self.widths != self.widths[0]).any():
            return None
        return int(self.heights[0]), int(self.widths[0])

    def dropped(self, k: int) -> np.ndarray | None:
        """The (gh, gw) bool drop mask of sample ``k`` (True = dropped), or None."""
        if self.mask_offsets is None or self.mask_offsets[k] < 0:
            return None
        assert self.patch is not None and self.mask_data is not None
        h, w = int(self.heights[k]), int(self.widths[k])
        gh, gw = bitpack.grid_shape(h, w, *self.patch)
        off = int(self.mask_offsets[k])
        return bitpack.unpack_mask(self.mask_data[off : off + bitpack.mask_nbytes(h, w, *self.patch)], gh, gw)

    def grids(self, patch: tuple[int, int]) -> np.ndarray:
        """(n, gh, gw) drop masks of samples of one size (all False for unmasked samples)."""
        size = self.size()
        assert size is not None, "grids() needs samples of one size"
        gh, gw = bitpack.grid_shape(*size, *patch)
        out = np.zeros((len(self), gh, gw), bool)
        rows = np.flatnonzero(self.masked)
        if rows.size:  # one gather and one unpack for every mask (same size: same byte count)
            assert self.mask_data is not None and self.mask_offsets is not None
            nbytes = bitpack.mask_nbytes(*size, *patch)
            raw = self.mask_data[self.mask_offsets[rows][:, None] + np.arange(nbytes)]
            bits = np.unpackbits(raw, axis=1, bitorder="little")[:, : gh * gw]
            out[rows] = bits.reshape(-1, gh, gw).astype(bool)
        return out

    def rows(self, nbytes: int) -> np.ndarray:
        """(n, nbytes) uint8: each stream's first bytes, zero-padded (for decoding on a device)."""
        out = np.zeros((len(self), nbytes), np.uint8)
        lengths = self.stream_lengths()
        for k, (o, ln) in enumerate(zip(self.offsets.tolist(), lengths.tolist())):
            out[k, : min(ln, nbytes)] = self.data[o : o + min(ln, nbytes)]
        return out

    def stream_lengths(self) -> np.ndarray:
        """Bytes of each stream: its pixels (kept pixels of a masked sample) times bits, rounded up."""
        return bitpack.packed_size(kept_pixels(self.heights, self.widths, self.mask_data, self.mask_offsets,
                                               self.patch), self.bits)


def kept_pixels(heights: np.ndarray, widths: np.ndarray, mask_data: np.ndarray | None,
                mask_offsets: np.ndarray | None, patch: tuple[int, int] | None) -> np.ndarray:
    """Pixels each sample's stream holds: all of them, or a masked sample's kept ones (masks
    checked already: their padding bits are zero)."""
    pixels = heights * widths
    if mask_offsets is not None and mask_data is not None and patch is not None:
        sel = mask_offsets >= 0
        if sel.any():
            pixels[sel] = kernels.kept_pixel_counts(mask_data, mask_offsets[sel], heights[sel], widths[sel], *patch)
    return pixels


def concat(parts: list[tuple[np.ndarray, int, int, int, np.ndarray | None]], bits: int,
           patch: tuple[int, int] | None) -> Streams:
    """A :class:`Streams` of separate samples ``(stream, height, width, palette id, drop mask)``
    (the drop mask a (gh, gw) bool array or None), e.g. parsed ``.dcqi`` members."""
    streams = [p[0] for p in parts]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in streams])[:-1]]).astype(np.int64)
    masks = [bitpack.pack_mask(p[4]) if p[4] is not None else None for p in parts]
    mask_offsets = None
    mask_data = None
    if any(m is not None for m in masks):
        sizes = [len(m) if m is not None else 0 for m in masks]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        mask_offsets = np.where([m is not None for m in masks], starts, -1).astype(np.int64)
        mask_data = np.concatenate([m for m in masks if m is not None] + [np.zeros(1, np.uint8)])
    return Streams(np.concatenate(streams + [np.zeros(1, np.uint8)]), offsets,
                   np.array([p[1] for p in parts], np.int64), np.array([p[2] for p in parts], np.int64),
                   np.array([p[3] for p in parts], np.int64), bits, patch, mask_data, mask_offsets)


class PaletteSet:
    """Palettes (P, K, C) uint8 and the expansion tables built from them, cached per layout."""

    def __init__(self, palettes: np.ndarray, bits: int) -> None:
        self.palettes = palettes
        self.bits = bits
        self._tables: dict[object, np.ndarray] = {}

    @property
    def channels(self) -> int:
        return int(self.palettes.shape[2])

    def luts(self, pids: np.ndarray, chw: bool) -> tuple[np.ndarray, np.ndarray]:
        """Expansion tables for palettes ``pids`` and each sample's row in them."""
        _, luts, rows = self._per_palette(("lut", chw), 256 * self.channels * (8 // self.bits),
                                          lambda pal: kernels.build_luts(pal, self.bits, chw), pids)
        return luts, rows

    def weights(self, pids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Palettes, their debanding weight tables (:func:`deband.weight_tables`) and each
        sample's row in them, for palettes ``pids``."""
        k = self.palettes.shape[1]
        colours, weights, rows = self._per_palette("weights", k * k * 4, deband.weight_tables, pids)
        return colours, weights, np.asarray(rows, np.int64)

    def _per_palette(self, key: object, nbytes: int, build: Callable[[np.ndarray], np.ndarray],
                     pids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``build``'s tables (``nbytes`` per palette) of every palette, built once and kept under
        ``key`` while they fit the cache, else of the palettes ``pids`` use; returned with those
        palettes and each sample's row in them."""
        if len(self.palettes) * nbytes <= _LUT_CACHE_BYTES:
            if key not in self._tables:
                self._tables[key] = build(self.palettes)
            return self.palettes, self._tables[key], pids
        used, inverse = np.unique(pids, return_inverse=True)
        colours = np.ascontiguousarray(self.palettes[used])
        return colours, build(colours), inverse.reshape(-1).astype(np.int64)


def decode_images(s: Streams, palettes: PaletteSet, out: np.ndarray, chw: bool) -> np.ndarray:
    """Decode samples of one size into ``out`` (N, H, W, C) or (N, C, H, W) uint8; dropped pixels 0."""
    if not len(s):
        return out
    size = s.size()
    if size is None:
        raise ValueError("decode_images needs samples of one size")
    n = size[0] * size[1]
    flat = out.reshape(len(s), -1)
    if s.any_masked():
        assert s.patch is not None and s.mask_data is not None and s.mask_offsets is not None
        kernels.decode_masked_batch(s.data, s.offsets, s.palette_ids, palettes.palettes, s.bits, size[0], size[1],
                                    s.mask_data, s.mask_offsets, s.patch[0], s.patch[1], flat, chw)
        return out
    per_byte = 8 // s.bits
    if 8 % s.bits == 0 and n % per_byte == 0:
        luts, lut_ids = palettes.luts(s.palette_ids, chw)
        kernels.decode_lut_batch(s.data, s.offsets, lut_ids, luts, n // per_byte,
                                 flat.view(kernels.WORD_DTYPES[s.bits]), chw)
    else:
        kernels.decode_packed_batch(s.data, s.offsets, s.palette_ids, palettes.palettes, s.bits, n, flat, chw)
    return out


def decode_debanded(s: Streams, palettes: PaletteSet, out: np.ndarray) -> np.ndarray:
    """:func:`decode_images` (N, C, H, W) with the palette's false contours softened
    (:mod:`dcqformat.decode.deband`); dropped pixels 0, and no one's neighbour."""
    if not len(s):
        return out
    maps = decode_indices(s)
    hidden = np.zeros((0, 1, 1), np.bool_)
    if s.any_masked():
        assert s.patch is not None
        hidden = np.ascontiguousarray(bitpack.dropped_pixels(s.grids(s.patch), *s.patch, *maps.shape[1:]))
    colours, weights, ids = palettes.weights(s.palette_ids)
    deband.deband_batch(maps, ids, colours, weights, hidden, out)
    return out


def decode_indices(s: Streams) -> np.ndarray:
    """The (N, H, W) uint8 palette-index maps of samples of one size (dropped pixels 0)."""
    size = s.size()
    if size is None:
        raise ValueError("decode_indices needs samples of one size")
    identity = PaletteSet(np.arange(1 << s.bits, dtype=np.uint8).reshape(1, -1, 1), s.bits)
    out = np.empty((len(s), *size, 1), np.uint8)
    decode_images(replace(s, palette_ids=np.zeros(len(s), np.int64)), identity, out, False)
    return out[..., 0]


def decode_crops(s: Streams, table: np.ndarray, fill: np.ndarray, boxes: np.ndarray, flips: np.ndarray,
                 out: np.ndarray, *, bilinear: bool, chw: bool) -> np.ndarray:
    """Decode samples of any sizes straight into crops: ``out`` (N, C, OH, OW) or (N, OH, OW, C).

    ``table`` (P, K, C) gives each index its value (uint8 colours or normalised float32), ``fill``
    (C,) the value outside the image; ``boxes`` (N, 4) each source window ``(y0, x0, h, w)`` and
    ``flips`` (N,) the mirrored outputs (see :func:`kernels.decode_resample_batch`). Dropped
    pixels of masked samples take ``fill`` too.
    """
    if not len(s):
        return out
    if s.any_masked():  # the masked kernel decodes the plain samples among them too
        return decode_masked_crops(s, table, np.tile(fill, (len(s), 1)), fill, boxes, flips, out, bilinear=bilinear,
                                   chw=chw)
    kernels.decode_resample_batch(s.data, s.offsets, s.heights, s.widths, s.palette_ids, table, fill, s.bits,
                                  np.ascontiguousarray(boxes, np.float64), np.ascontiguousarray(flips, np.bool_),
                                  bilinear, 0.5 if table.dtype.kind in "ui" else 0.0, out, chw)
    return out


def decode_masked_crops(s: Streams, table: np.ndarray, drop: np.ndarray, fill: np.ndarray, boxes: np.ndarray,
                        flips: np.ndarray, out: np.ndarray, *, bilinear: bool, chw: bool,
                        mean_of: tuple[np.ndarray, np.ndarray] | None = None,
                        hidden: np.ndarray | None = None) -> np.ndarray:
    """:func:`decode_crops` of samples with dropped patches (plain ones too) in one fused pass
    (:func:`kernels.decode_masked_resample_batch`): a dropped pixel takes ``drop[k]`` (N, C),
    or with ``mean_of = (colours, values)`` the value in ``values`` (C, 256) of the sample's
    mean kept colour, its palette ``colours[palette_ids[k]]`` (uint8, ``table``'s colours).
    ``hidden`` (N, OH, OW) bool, when given, is set where the nearest source pixel is dropped."""
    rounding = 0.5 if table.dtype.kind in "ui" else 0.0
    colours, values = mean_of if mean_of is not None else (np.zeros((0, 1, 1), np.uint8),
                                                           np.zeros((0, 256), table.dtype))
    assert s.patch is not None and s.mask_data is not None and s.mask_offsets is not None
    kernels.decode_masked_resample_batch(
        s.data, s.offsets, s.heights, s.widths, s.palette_ids, table, drop, fill, s.bits, s.mask_data,
        s.mask_offsets, s.patch[0], s.patch[1], colours, values, np.ascontiguousarray(boxes, np.float64),
        np.ascontiguousarray(flips, np.bool_), bilinear, rounding, out, chw,
        hidden if hidden is not None else np.zeros((0, 1, 1), np.bool_))
    return out


def resample_planes(images: np.ndarray, tables: np.ndarray, boxes: np.ndarray, flips: np.ndarray,
                    size: tuple[int, int], bilinear: bool, chw: bool = True) -> np.ndarray:
    """Crop/flip/resize uint8 (N, C, H, W) images to (N, C, OH, OW), or (N, OH, OW, C) unless
    ``chw``, through per-channel ``tables`` (C, 256, 1), with :func:`decode_crops`' sampling
    rules. Outside the image: the table's value of 0."""
    n, c = images.shape[:2]
    out = np.empty((n, c, *size) if chw else (n, *size, c), tables.dtype)
    kernels.resample_pixels_batch(np.ascontiguousarray(images), np.ascontiguousarray(tables[:, :, 0]),
                                  np.ascontiguousarray(boxes, np.float64), np.ascontiguousarray(flips, np.bool_),
                                  bilinear, 0.5 if tables.dtype.kind in "ui" else 0.0, out, chw)
    return out


def crop_rows(boxes: np.ndarray) -> np.ndarray:
    """(N, 2) rows ``(first, end)`` that crops of windows ``boxes`` (N, 4: y0, x0, h, w) can read,
    nearest or bilinear (one row of margin each side; clipped to the image by the codec)."""
    first = np.floor(boxes[:, 0]) - 1
    end = np.ceil(boxes[:, 0] + boxes[:, 2]) + 2
    return np.clip(np.stack([first, end], 1), 0, None).astype(np.int64)


def output_array(out: np.ndarray | None, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``out`` checked to be a C-contiguous array of ``shape`` and ``dtype`` (a new one if None)."""
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != tuple(shape) or out.dtype != np.dtype(dtype) or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {np.dtype(dtype)} array of shape {tuple(shape)}, "
                         f"got {out.dtype} {out.shape}")
    return out


def crop_arguments(n: int, channels: int, table: np.ndarray, fill: Any, boxes: np.ndarray,
                   flips: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, flips and fill in the types :func:`decode_crops` takes."""
    boxes = np.ascontiguousarray(boxes, dtype=np.float64).reshape(n, 4)
    flips = np.zeros(n, np.bool_) if flips is None else np.ascontiguousarray(flips, np.bool_).reshape(n)
    fill_c = np.broadcast_to(np.asarray(fill, table.dtype), (channels,)).copy()
    return boxes, flips, fill_c
