"""DcqReader: memory-mapped random access to a .dcq file (spec/FORMAT.md, "Reader rules")."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .. import _layout as L
from .. import codecs
from ..decode import (
    PaletteSet,
    Streams,
    bitpack,
    crop_arguments,
    crop_rows,
    decode_crops,
    decode_images,
    decode_indices,
    kept_pixels,
    output_array,
)
from ..errors import CorruptFile, DcqError, FileChanged
from .checksums import BlockChecks
from .files import open_regular
from .header import Header, check_crc, parse_header
from .masks import parse_masks
from .meta import FileMeta, parse_meta
from .palettes import corrected, parse_corrections, parse_palettes
from .records import RecordTable, RecordViews, validate_records
from .weights import load_weights, validate_safetensors

Layout = Literal["NHWC", "NCHW"]


def open(path: str | os.PathLike[str], *, verify: bool = False) -> "DcqReader":  # noqa: A001
    """Open a .dcq file for reading (``verify=True`` also checks every payload byte now)."""
    return DcqReader(path, verify=verify)


class DcqReader(RecordViews):
    """Random access to the samples of a .dcq file.

    Opening validates the header, the section table, the checksums of every section but
    DATA, and every record's offsets and sizes. DATA is checked block by block (CRC-32 per
    block, section DCRC) the first time a sample touching the block is decoded.

    The reader pickles as its path and reopens lazily, so it can cross into DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = False) -> None:
        self.path = Path(path)
        self._verify_on_open = verify
        self._mm: mmap.mmap | None = None
        self._open()
        if verify:
            self.verify()

    # -- opening ---------------------------------------------------------------------------
    def _open(self) -> None:
        with open_regular(self.path) as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                self._buf = np.zeros(0, dtype=np.uint8)
            else:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                self._buf = np.frombuffer(self._mm, dtype=np.uint8)
        try:
            self._parse()
        except DcqError as exc:
            self.close()
            exc.path = str(self.path)
            raise
        except (RecursionError, MemoryError, OverflowError) as exc:  # hostile input
            self.close()
            err = CorruptFile(f"{type(exc).__name__}: {exc}")
            err.path = str(self.path)
            raise err from None

    def _section(self, tag: bytes) -> np.ndarray:
        s = self.header.sections[tag]
        return self._buf[s.offset : s.offset + s.length]

    def _parse(self) -> None:
        """Assemble the file from its sections (each checked by its own module)."""
        self.header: Header = parse_header(self._buf)
        secs = self.header.sections
        for tag, sec in secs.items():
            if tag != L.TAG_DATA:
                check_crc(self._buf, sec)
        self.metadata: FileMeta = parse_meta(self._section(L.TAG_META).tobytes(), secs[L.TAG_META].offset)
        self.meta: dict[str, Any] = self.metadata.raw
        self.bits, self.channels, self.palettes = parse_palettes(self._section(L.TAG_PALT), secs[L.TAG_PALT].offset)
        self._records = RecordTable(self._section(L.TAG_RECS), secs[L.TAG_RECS].offset)
        # Every sample stores at least one byte of payload or of mask (spec §4): a file cannot
        # claim more samples than that, and opening stays bounded by the file's size.
        room = secs[L.TAG_DATA].length + (secs[L.TAG_MASK].length if L.TAG_MASK in secs else 0)
        if self._records.count > room:
            raise CorruptFile("more samples than the file has bytes for", section="RECS",
                              offset=secs[L.TAG_RECS].offset, expected=f"<= length(DATA) + length(MASK) = {room}",
                              found=self._records.count)
        codec = codecs.by_id(self._records.codec)
        self.codec: str = codec.name
        self._data = self._section(L.TAG_DATA)
        self._blocks = BlockChecks(self._section(L.TAG_DCRC), secs[L.TAG_DCRC].offset, self._data,
                                   secs[L.TAG_DATA].offset)
        self.patch_size: tuple[int, int] | None = None
        self._masks: np.ndarray | None = None
        if L.TAG_MASK in secs:
            self.patch_size, self._masks = parse_masks(self._section(L.TAG_MASK), secs[L.TAG_MASK].offset)
        self._decoder = codec.decoder({tag: (sec.offset, self._section(tag)) for tag, sec in secs.items()},
                                      self.bits)
        for tag in L.MODEL_TAGS:
            if tag in secs:
                validate_safetensors(self._section(tag), secs[tag].offset, section=tag.decode())
        validate_records(self._records, secs, self.palettes.shape[0], self.bits, self._masks, self.patch_size,
                         self._decoder.check_lengths)
        self.shared_palette_count = len(self.palettes)
        self.correction_step: int | None = None  # PCOR's step, for files with palette corrections
        self._corrected_ids: np.ndarray | None = None
        self._corrections: tuple[np.ndarray, np.ndarray] | None = None
        if L.TAG_PCOR in secs:  # each sample decodes with its own corrected palette, numbered after PALT's
            n, shared = self._records.count, len(self.palettes)
            self.correction_step, deltas = parse_corrections(self._section(L.TAG_PCOR), secs[L.TAG_PCOR].offset, n,
                                                             self.bits, self.channels)
            self._corrections = (self._records.get("palette_id"), deltas)
            own = corrected(self.palettes, self._corrections[0], self.correction_step, deltas)
            self.palettes = np.concatenate([self.palettes, own])
            self.palettes.flags.writeable = False
            self._corrected_ids = np.arange(shared, shared + n, dtype=np.int64)
            self._corrected_ids.flags.writeable = False
        self._palette_set = PaletteSet(self.palettes, self.bits)
        self._cache: dict[str, np.ndarray] = {}
        self._sizes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- record fields ---------------------------------------------------------------------
    def __len__(self) -> int:
        return self._records.count

    def field(self, name: str) -> np.ndarray:
        """All values of a record field (see spec), as a read-only int64 array; cached."""
        if name == "palette_id" and self._corrected_ids is not None:
            return self._corrected_ids  # the palette each sample decodes with (RECS holds its shared parent)
        if name not in self._cache:
            values = self._records.get(name)
            values.flags.writeable = False
            self._cache[name] = values
        return self._cache[name]

    def corrections(self) -> tuple[np.ndarray, np.ndarray] | None:
        """For a file with palette corrections (PCOR, spec §3.1): each sample's shared palette id
        and its (K, C) deltas (in units of :attr:`correction_step`), as stored; else None. The
        palette a sample decodes with is ``palettes[palette_ids[i]]``."""
        return self._corrections

    @property
    def has_masks(self) -> bool:
        """Whether any sample has dropped patches."""
        return bool((self.field("flags") & L.RECORD_FLAG_MASKED).any())

    @property
    def palette_set(self) -> PaletteSet:
        """The palettes with their cached decode tables (for :mod:`dcqformat.decode`)."""
        return self._palette_set

    @property
    def identity(self) -> tuple[int, int]:
        """(file size, header CRC): what tells this file from another written at the same path."""
        return self.header.file_size, self.header.crc

    def check_identity(self, expected: tuple[int, int]) -> None:
        """Raise :class:`FileChanged` unless this is the file whose :attr:`identity` is ``expected``."""
        if self.identity != tuple(expected):
            raise FileChanged(f"{self.path}: the file changed since it was first opened: expected "
                              f"{expected[0]:,} bytes with header CRC {expected[1]:#010x}, found {self.identity[0]:,} "
                              f"bytes with {self.identity[1]:#010x}")

    @property
    def version(self) -> tuple[int, int]:
        return self.header.major, self.header.minor

    @property
    def classes(self) -> list[str] | None:
        classes = self.metadata.classes
        return list(classes) if classes is not None else None

    def _index(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples")
        return i % n

    def _index_array(self, indices: Iterable[int] | np.ndarray) -> np.ndarray:
        """Sample indices as int64, negative ones counted from the end; IndexError when out of range."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"sample index out of range for {n} samples")
        return idx % max(n, 1)

    def mask(self, i: int) -> np.ndarray | None:
        """The (gh, gw) drop mask of sample ``i`` (True = dropped patch), or None."""
        i = self._index(i)
        if not self._records.value("flags", i) & L.RECORD_FLAG_MASKED:
            return None
        assert self.patch_size is not None and self._masks is not None  # checked at open
        h, w = self._records.value("height", i), self._records.value("width", i)
        gh, gw = bitpack.grid_shape(h, w, *self.patch_size)
        off = self._records.value("mask_offset", i)
        return bitpack.unpack_mask(self._masks[off : off + bitpack.mask_nbytes(h, w, *self.patch_size)], gh, gw)

    # -- payload bytes ---------------------------------------------------------------------
    def payload(self, i: int) -> np.ndarray:
        """The bit stream of sample ``i`` (decompressed for ``zstd``), checksum-verified."""
        s = self.streams([self._index(i)])
        start = int(s.offsets[0])
        return s.data[start : start + int(s.stream_lengths()[0])]

    def raw_payload(self, i: int) -> np.ndarray:
        """The payload of sample ``i`` as stored (coded by the file's codec), checksum-verified."""
        i = self._index(i)
        start = int(self._records.get("payload_offset", np.array([i]))[0])
        end = start + int(self._records.get("payload_length", np.array([i]))[0])
        self._blocks.check(np.array([start]), np.array([end]))
        return self._data[start:end]

    def codec_sections(self) -> dict[bytes, bytes]:
        """The codec's own sections (``CTXM``, ``ZDCT``) as stored: what decodes its payloads."""
        return {tag: self._section(tag).tobytes() for tag in L.CODEC_TAGS if tag in self.header.sections}

    def decode_payloads(self, payloads: list[np.ndarray], heights: np.ndarray, widths: np.ndarray) -> list[np.ndarray]:
        """The bit streams (spec §5) of unmasked samples' ``payloads`` coded by this file's codec
        but stored elsewhere (WebDataset members, spec/WEBDATASET.md §2), one call for them all;
        a payload that does not decode raises :class:`CorruptFile` naming its position in the list."""
        hs, ws = np.asarray(heights, np.int64), np.asarray(widths, np.int64)
        lengths = np.array([p.size for p in payloads], np.int64)
        offsets = np.zeros(len(payloads), np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        data = np.concatenate([*payloads, np.zeros(1, np.uint8)])
        sizes = np.ascontiguousarray(bitpack.packed_size(hs * ws, self.bits), dtype=np.int64)
        self._decoder.check_lengths(0, lengths, sizes, 0)
        out, at = self._decoder.decode(data, np.arange(len(payloads)), offsets, lengths, sizes, 0,
                                       codecs.Shapes(hs, ws))
        return [out[a : a + s] for a, s in zip(at.tolist(), sizes.tolist())]

    # -- decoding --------------------------------------------------------------------------
    def indices(self, i: int) -> np.ndarray:
        """The (H, W) palette-index map of sample ``i`` (dropped pixels read 0)."""
        return decode_indices(self.streams([self._index(i)]))[0]

    def decode(self, i: int, layout: Layout = "NHWC") -> np.ndarray:
        """Sample ``i`` as uint8 pixels, (H, W, C) or with ``layout="NCHW"`` (C, H, W)."""
        i = self._index(i)
        return self.decode_batch([i], layout=layout)[0]

    def __getitem__(self, i: int) -> np.ndarray:
        return self.decode(i)

    def decode_batch(
        self,
        indices: Iterable[int] | np.ndarray,
        out: np.ndarray | None = None,
        layout: Layout = "NHWC",
    ) -> np.ndarray:
        """Decode samples of one size into ``out`` (N, H, W, C) or (N, C, H, W) uint8, in parallel."""
        if layout not in ("NHWC", "NCHW"):
            raise ValueError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}")
        idx = self._index_array(indices)
        rec = self._records
        h, w = rec.constant("height"), rec.constant("width")
        if h is None or w is None:
            hs, ws = rec.get("height", idx), rec.get("width", idx)
            if idx.size and (np.any(hs != hs[0]) or np.any(ws != ws[0])):
                raise ValueError("decode_batch needs samples of one size; decode() them one by one instead")
            h, w = (int(hs[0]), int(ws[0])) if idx.size else (0, 0)
        c = self.channels
        shape = (idx.size, h, w, c) if layout == "NHWC" else (idx.size, c, h, w)
        out = output_array(out, shape, np.uint8)
        if idx.size:
            decode_images(self._named_streams(idx), self._palette_set, out, layout == "NCHW")
        return out

    def streams(self, indices: Iterable[int] | np.ndarray, *, rows: np.ndarray | None = None) -> Streams:
        """What decoding samples ``indices`` needs (:class:`dcqformat.decode.Streams`): their bit
        streams, checksum-verified and (zstd) decompressed, sizes, palettes and drop masks. With
        ``rows`` (N, 2), only rows ``rows[k, 0]`` to ``rows[k, 1] - 1`` of sample ``k`` need be
        right (a crop's; codec ``ctxs`` then decodes only the stripes that hold them)."""
        return self._named_streams(self._index_array(indices), rows)

    def _uniform_sizes(self, n: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Read-only arrays of ``n`` heights and widths of a file of one image size (cached by n)."""
        sizes = self._sizes.get(n)
        if sizes is None:
            hs, ws = np.full(n, h, np.int64), np.full(n, w, np.int64)
            hs.flags.writeable = ws.flags.writeable = False
            sizes = self._sizes[n] = (hs, ws)
            if len(self._sizes) > 64:
                self._sizes.pop(next(iter(self._sizes)))
        return sizes

    def _named_streams(self, idx: np.ndarray, rows: np.ndarray | None = None) -> Streams:
        """:meth:`streams` of checked indices (only rows ``rows``, when given, need be right: see
        :class:`dcqformat.codecs.Shapes`); errors name the file."""
        try:
            return self._streams(idx, rows)
        except DcqError as exc:
            exc.path = exc.path or str(self.path)
            raise

    def _streams(self, idx: np.ndarray, rows: np.ndarray | None = None) -> Streams:
        rec = self._records
        offsets, lengths = rec.get("payload_offset", idx), rec.get("payload_length", idx)
        h, w = rec.constant("height"), rec.constant("width")
        uniform = (h, w) if h is not None and w is not None else None
        if h is not None and w is not None:
            hs, ws = self._uniform_sizes(idx.size, h, w)
        else:
            hs, ws = rec.get("height", idx), rec.get("width", idx)
        self._blocks.check(offsets, offsets + lengths)
        mask_offsets = None
        if self._masks is not None and rec.constant("flags") != 0:  # open() checked: masked => MASK
            masked = (rec.get("flags", idx) & L.RECORD_FLAG_MASKED) != 0
            mask_offsets = np.where(masked, rec.get("mask_offset", idx), -1)
        sizes = np.zeros(0, np.int64)
        if self._decoder.needs_sizes:
            pixels = kept_pixels(hs, ws, self._masks, mask_offsets, self.patch_size)
            sizes = np.ascontiguousarray(bitpack.packed_size(pixels, self.bits), dtype=np.int64)
        shapes = codecs.Shapes(hs, ws, self.patch_size, self._masks, mask_offsets, rows)
        data, offsets = self._decoder.decode(self._data, idx, offsets, lengths, sizes,
                                             self.header.sections[L.TAG_DATA].offset, shapes)
        return Streams(data, offsets, hs, ws, self.field("palette_id")[idx], self.bits, self.patch_size,
                       self._masks if mask_offsets is not None else None, mask_offsets, uniform)

    def decode_crops(
        self,
        indices: Iterable[int] | np.ndarray,
        boxes: np.ndarray,
        size: tuple[int, int],
        *,
        flips: np.ndarray | None = None,
        interpolation: Literal["nearest", "bilinear"] = "nearest",
        layout: Layout = "NCHW",
        table: np.ndarray | None = None,
        fill: np.ndarray | float = 0,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Decode samples of any sizes straight into crops of one ``size``, in one parallel pass.

        ``boxes`` (N, 4) holds each sample's source window ``(y0, x0, h, w)`` in pixels (it may
        reach outside the image: those pixels take ``fill``); ``flips`` (N,) mirrors outputs.
        ``table`` replaces the palettes, e.g. by normalised float32 values of the same shape:
        the output takes its dtype. Random crops, centre crops, resizes and random-resized
        crops are all such windows (see ``dcqformat.loaders``).
        """
        if layout not in ("NHWC", "NCHW"):
            raise ValueError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}")
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
        idx = self._index_array(indices)
        table = self.palettes if table is None else np.asarray(table)
        if table.shape != self.palettes.shape:
            raise ValueError(f"table must have the palettes' shape {self.palettes.shape}, got {table.shape}")
        boxes, flips, fill_c = crop_arguments(idx.size, self.channels, table, fill, boxes, flips)
        oh, ow = size
        shape = (idx.size, self.channels, oh, ow) if layout == "NCHW" else (idx.size, oh, ow, self.channels)
        out = output_array(out, shape, table.dtype)
        if idx.size:
            decode_crops(self._named_streams(idx, crop_rows(boxes)), table, fill_c, boxes, flips, out,
                                bilinear=interpolation == "bilinear", chw=layout == "NCHW")
        return out

    # -- whole-file checks -----------------------------------------------------------------
    def verify(self) -> None:
        """Check every checksum and decode every sample; raise the first problem found."""
        try:
            self._verify_all()
        except DcqError as exc:
            exc.path = exc.path or str(self.path)
            raise

    def _verify_all(self) -> None:
        data_sec = self.header.sections[L.TAG_DATA]
        check_crc(self._buf, data_sec)
        self._blocks.verify_all()
        self._check_padding()
        for i in range(len(self)):
            self.payload(i)

    def _check_padding(self) -> None:
        pos = L.HEADER_SIZE
        spans = sorted((s.offset, s.offset + s.length) for s in self.header.sections.values())
        for start, end in spans + [(self.header.table_offset, self.header.file_size)]:
            gap = self._buf[pos:start]
            if gap.any():
                raise CorruptFile("padding between sections is not zero", section="padding",
                                  offset=pos + int(np.argmax(gap != 0)), expected=0,
                                  found=int(gap[np.argmax(gap != 0)]))
            pos = end

    def weights(self) -> dict[str, np.ndarray]:
        """The embedded model weights (section WGHT) as NumPy arrays; empty when absent."""
        if L.TAG_WGHT not in self.header.sections:
            return {}
        return load_weights(self._section(L.TAG_WGHT))

    def weights_blob(self, section: str = "WGHT") -> bytes | None:
        """A model section as stored (a safetensors buffer), or None: ``WGHT`` (the MAE) or
        ``DEQW`` (the learned dequantizer)."""
        tag = section.encode("ascii")
        if tag not in L.MODEL_TAGS:
            raise ValueError(f"model sections are WGHT and DEQW, got {section!r}")
        if tag not in self.header.sections:
            return None
        return self._section(tag).tobytes()

    def info(self) -> dict[str, Any]:
        """A summary of the file: version, codec, sizes, sections."""
        size = self.header.file_size
        pixels = int((self.field("height") * self.field("width")).sum())
        raw = pixels * self.channels
        return {
            "path": str(self.path),
            "version": f"{self.header.major}.{self.header.minor}",
            "samples": len(self),
            "bits": self.bits,
            "channels": self.channels,
            "palettes": self.shared_palette_count,
            "palette_correction_step": self.correction_step,
            "codec": self.codec,
            "patch_size": list(self.patch_size) if self.patch_size else None,
            "masked_samples": int(np.count_nonzero(self.field("flags") & L.RECORD_FLAG_MASKED)),
            "file_bytes": size,
            "raw_uint8_bytes": raw,
            "bits_per_pixel": 8 * size / pixels if pixels else 0.0,
            "compression_ratio": raw / size if size else 0.0,
            "sections": [
                {"tag": s.name, "offset": s.offset, "length": s.length, "crc32": f"{s.crc:08x}",
                 "skippable": bool(s.flags & L.SECTION_FLAG_SKIPPABLE)}
                for s in self.header.sections.values()
            ],
        }

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Release the memory map (arrays handed out keep it alive until they are dropped)."""
        for name in ("_buf", "_data", "palettes", "_masks", "_blocks", "_records", "_palette_set", "_decoder",
                     "_cache"):
            self.__dict__.pop(name, None)
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # views still held by the caller; the map goes when they do
            self._mm = None

    def __enter__(self) -> "DcqReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "verify": False, "identity": self.identity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        DcqReader.__init__(self, state["path"], verify=state["verify"])
        if "identity" in state:
            try:
                self.check_identity(state["identity"])
            except FileChanged:
                self.close()
                raise

    def __repr__(self) -> str:
        return (f"DcqReader({str(self.path)!r}, samples={len(self)}, bits={self.bits}, "
                f"channels={self.channels}, palettes={len(self.palettes)}, codec={self.codec!r})")
