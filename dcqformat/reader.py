"""DcqReader: memory-mapped random access to a .dcq file (spec/FORMAT.md, "Reader rules")."""

from __future__ import annotations

import builtins
import mmap
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zstandard

from . import _layout as L
from . import bitpack, kernels, zstdframe
from .decode import PaletteSet, Streams, crop_arguments, decode_crops, decode_images, decode_indices
from .errors import ChecksumMismatch, CorruptFile, DcqError, FileChanged
from .header import Header, Section, check_crc, parse_header
from .meta import FileMeta, parse_meta
from .records import RecordTable
from .weights import load_weights, validate_safetensors

Layout = Literal["NHWC", "NCHW"]


def open(path: str | os.PathLike[str], *, verify: bool = False) -> "DcqReader":  # noqa: A001
    """Open a .dcq file for reading (``verify=True`` also checks every payload byte now)."""
    return DcqReader(path, verify=verify)


class DcqReader:
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
        with builtins.open(self.path, "rb") as f:
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

    def _section_header(self, tag: bytes, layout: struct.Struct) -> tuple[np.ndarray, tuple]:
        """A section's bytes and its fixed header's fields, after checking it is long enough."""
        sec, buf = self.header.sections[tag], self._section(tag)
        if sec.length < layout.size:
            raise CorruptFile("too short for its header", section=sec.name, offset=sec.offset,
                              expected=f">= {layout.size} bytes", found=sec.length)
        return buf, layout.unpack_from(buf, 0)

    def _parse(self) -> None:
        self.header: Header = parse_header(self._buf)
        secs = self.header.sections
        for tag, sec in secs.items():
            if tag != L.TAG_DATA:
                check_crc(self._buf, sec)
        self.metadata: FileMeta = parse_meta(self._section(L.TAG_META).tobytes(), secs[L.TAG_META].offset)
        self.meta: dict[str, Any] = self.metadata.raw
        self._parse_palettes(secs[L.TAG_PALT])
        self._records = RecordTable(self._section(L.TAG_RECS), secs[L.TAG_RECS].offset)
        # Every sample stores at least one byte of payload or of mask (spec §4): a file cannot
        # claim more samples than that, and opening stays bounded by the file's size.
        room = secs[L.TAG_DATA].length + (secs[L.TAG_MASK].length if L.TAG_MASK in secs else 0)
        if self._records.count > room:
            raise CorruptFile("more samples than the file has bytes for", section="RECS",
                              offset=secs[L.TAG_RECS].offset, expected=f"<= length(DATA) + length(MASK) = {room}",
                              found=self._records.count)
        self.codec = L.CODEC_NAMES[self._records.codec]
        self._data = self._section(L.TAG_DATA)
        self._parse_dcrc(secs[L.TAG_DCRC])
        self.patch_size: tuple[int, int] | None = None
        if L.TAG_MASK in secs:
            self._parse_mask(secs[L.TAG_MASK])
        self._zdict = None
        if self.codec == "zstd" and L.TAG_ZDCT in secs:
            try:
                self._zdict = zstandard.ZstdCompressionDict(self._section(L.TAG_ZDCT).tobytes())
            except zstandard.ZstdError as exc:
                raise CorruptFile(f"bad zstd dictionary ({exc})", section="ZDCT",
                                  offset=secs[L.TAG_ZDCT].offset) from None
        if L.TAG_WGHT in secs:
            validate_safetensors(self._section(L.TAG_WGHT), secs[L.TAG_WGHT].offset)
        self._validate_records()
        self._dctx: zstandard.ZstdDecompressor | None = None
        self._palette_set = PaletteSet(self.palettes, self.bits)
        self._cache: dict[str, np.ndarray] = {}

    def _parse_palettes(self, sec: Section) -> None:
        buf, (count, bits, channels, _) = self._section_header(L.TAG_PALT, L.PALT_HEADER)
        if not 1 <= bits <= L.MAX_BITS or channels not in L.CHANNELS or not 1 <= count <= L.MAX_PALETTES:
            raise CorruptFile("bad palette header", section="PALT", offset=sec.offset,
                              expected=f"bits 1..8, channels 1|3, 1..{L.MAX_PALETTES} palettes",
                              found=f"bits {bits}, channels {channels}, {count} palettes")
        k = 1 << bits
        if sec.length != L.PALT_HEADER.size + count * k * channels:
            raise CorruptFile("length does not match the palette header", section="PALT", offset=sec.offset,
                              expected=L.PALT_HEADER.size + count * k * channels, found=sec.length)
        self.bits: int = bits
        self.channels: int = channels
        self.palettes: np.ndarray = buf[L.PALT_HEADER.size :].reshape(count, k, channels)

    def _parse_dcrc(self, sec: Section) -> None:
        buf, (block, _, count) = self._section_header(L.TAG_DCRC, L.DCRC_HEADER)
        want = -(-self._data.size // block) if block else -1
        if block & (block - 1) or not L.MIN_BLOCK <= block <= L.MAX_BLOCK or count != want \
                or sec.length != L.DCRC_HEADER.size + 4 * count:
            raise CorruptFile("bad block checksum table", section="DCRC", offset=sec.offset,
                              expected=f"power-of-two block size, {want} blocks",
                              found=f"block size {block}, {count} blocks, {sec.length} bytes")
        self._block_size = block
        self._block_shift = block.bit_length() - 1
        self._block_crcs = buf[L.DCRC_HEADER.size :].view("<u4")
        self._verified = np.zeros(count, dtype=np.bool_)
        self._unverified = count
        self._all_verified = count == 0

    def _parse_mask(self, sec: Section) -> None:
        buf, (ph, pw, _) = self._section_header(L.TAG_MASK, L.MASK_HEADER)
        if ph < 1 or pw < 1:
            raise CorruptFile("patch size is zero", section="MASK", offset=sec.offset, expected=">= 1",
                              found=(ph, pw))
        self.patch_size = (ph, pw)
        self._masks = buf

    def _validate_records(self) -> None:
        """Check every record against the file before any kernel touches the bytes."""
        rec, sec = self._records, self.header.sections[L.TAG_RECS]
        src = rec.affine_range("source_index")
        if src is not None and src[0] < 0:
            raise CorruptFile("affine source_index goes below 0", section="RECS", offset=sec.offset,
                              expected=">= 0", found=src[0])
        for sl in rec.chunks():
            def bad(name: str, ok: np.ndarray, expected: str, found: np.ndarray, first: int = sl.start) -> None:
                if not ok.all():
                    i = int(np.argmin(ok))
                    raise CorruptFile(f"record {first + i}: bad {name}", section="RECS", offset=sec.offset,
                                      expected=expected, found=int(found[i]))
            pid = rec.get("palette_id", sl)
            bad("palette_id", (pid >= 0) & (pid < len(self.palettes)), f"0..{len(self.palettes) - 1}", pid)
            h, w = rec.get("height", sl), rec.get("width", sl)
            bad("height", (h >= 1) & (h <= L.MAX_SIDE), f"1..{L.MAX_SIDE}", h)
            bad("width", (w >= 1) & (w <= L.MAX_SIDE), f"1..{L.MAX_SIDE}", w)
            bad("pixel count", h * w <= L.MAX_PIXELS, f"<= {L.MAX_PIXELS}", h * w)
            flags = rec.get("flags", sl)
            bad("flags", (flags & ~L.RECORD_FLAGS_KNOWN) == 0, f"bits {L.RECORD_FLAGS_KNOWN:#x}", flags)
            off, length = rec.get("payload_offset", sl), rec.get("payload_length", sl)
            bad("payload_offset", off >= 0, ">= 0", off)
            bad("payload_length", length >= 0, ">= 0", length)
            bad("payload end", off + length <= self._data.size, f"<= DATA length {self._data.size}", off + length)
            pixels = h * w
            masked = (flags & L.RECORD_FLAG_MASKED) != 0
            if masked.any():
                if self.patch_size is None:
                    raise CorruptFile(f"record {sl.start + int(np.argmax(masked))} is masked but there is no "
                                      "MASK section", section="RECS", offset=sec.offset)
                ph, pw = self.patch_size
                mo = rec.get("mask_offset", sl)[masked]
                mh, mw = h[masked], w[masked]
                nbytes = ((-(-mh // ph)) * (-(-mw // pw)) + 7) // 8
                ok = (mo >= L.MASK_HEADER.size) & (mo + nbytes <= self._masks.size)
                if not ok.all():
                    i = int(np.argmin(ok))
                    raise CorruptFile(f"record {sl.start + int(np.flatnonzero(masked)[i])}: mask out of range",
                                      section="RECS", offset=sec.offset,
                                      expected=f"{L.MASK_HEADER.size}..{self._masks.size - int(nbytes[i])}",
                                      found=int(mo[i]))
                kept = kernels.kept_pixel_counts(self._masks, mo, mh, mw, ph, pw)
                if (kept < 0).any():
                    i = int(np.argmax(kept < 0))
                    raise CorruptFile(f"record {sl.start + int(np.flatnonzero(masked)[i])}: mask padding bits are set",
                                      section="MASK", offset=self.header.sections[L.TAG_MASK].offset + int(mo[i]),
                                      expected="padding bits of the last mask byte 0", found="bits set")
                pixels = pixels.copy()
                pixels[masked] = kept
            if self.codec == "packed":
                want = (pixels * self.bits + 7) // 8
                bad("payload_length", length == want, "(kept pixels * bits + 7) // 8", length)

    # -- record fields ---------------------------------------------------------------------
    def __len__(self) -> int:
        return self._records.count

    def field(self, name: str) -> np.ndarray:
        """All values of a record field (see spec), as a read-only int64 array; cached."""
        if name not in self._cache:
            values = self._records.get(name)
            values.flags.writeable = False
            self._cache[name] = values
        return self._cache[name]

    @property
    def labels(self) -> np.ndarray:
        """Class label of every sample (int64; -1 where unlabelled)."""
        return self.field("label")

    @property
    def palette_ids(self) -> np.ndarray:
        return self.field("palette_id")

    @property
    def source_indices(self) -> np.ndarray:
        """Position of every sample in the dataset it was converted from."""
        return self.field("source_index")

    @property
    def shapes(self) -> np.ndarray:
        """(N, 2) heights and widths."""
        return np.stack([self.field("height"), self.field("width")], axis=1)

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
        assert self.patch_size is not None
        h, w = self._records.value("height", i), self._records.value("width", i)
        gh, gw = bitpack.grid_shape(h, w, *self.patch_size)
        off = self._records.value("mask_offset", i)
        return bitpack.unpack_mask(self._masks[off : off + (gh * gw + 7) // 8], gh, gw)

    # -- payload bytes ---------------------------------------------------------------------
    def _check_blocks(self, starts: np.ndarray, ends: np.ndarray) -> None:
        if self._all_verified or kernels.blocks_verified(self._verified, starts, ends, self._block_shift):
            return
        for s, e in zip(starts.tolist(), ends.tolist()):
            for blk in range(s >> self._block_shift, ((e - 1) >> self._block_shift) + 1 if e > s else 0):
                if not self._verified[blk]:
                    self._verify_block(blk)

    def _verify_block(self, blk: int) -> None:
        lo = blk << self._block_shift
        computed = zlib.crc32(self._data[lo : lo + self._block_size])
        stored = int(self._block_crcs[blk])
        if computed != stored:
            raise ChecksumMismatch("DATA", self.header.sections[L.TAG_DATA].offset + lo, stored, computed,
                                   block=blk, span=(lo, min(lo + self._block_size, self._data.size)))
        self._verified[blk] = True
        self._unverified -= 1
        self._all_verified = self._unverified == 0

    def payload(self, i: int) -> np.ndarray:
        """The bit stream of sample ``i`` (decompressed for ``zstd``), checksum-verified."""
        s = self.streams([self._index(i)])
        start = int(s.offsets[0])
        return s.data[start : start + int(s.stream_lengths()[0])]

    def _check_frames(self, idx: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, sizes: np.ndarray) -> None:
        """Refuse, before decompressing, any payload that is not one zstd frame of the right size."""
        status = zstdframe.frame_status(self._data, offsets, lengths, sizes)
        if status.any():
            k = int(np.argmax(status != 0))
            raise CorruptFile(f"sample {int(idx[k])}: payload {zstdframe.MESSAGES[int(status[k])]}", section="DATA",
                              offset=self.header.sections[L.TAG_DATA].offset + int(offsets[k]),
                              expected=f"one zstd frame of {int(lengths[k])} bytes decoding to {int(sizes[k])} bytes",
                              found=f"status {int(status[k])}")

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        if self._dctx is None:
            self._dctx = zstandard.ZstdDecompressor(dict_data=self._zdict)
        return self._dctx

    def _decompress(self, i: int, frame: np.ndarray, size: int) -> bytes:
        try:
            out = self._decompressor().decompress(frame.tobytes(), max_output_size=max(size, 1))
        except zstandard.ZstdError as exc:
            raise CorruptFile(f"sample {i}: zstd frame does not decode ({exc})", section="DATA") from None
        if len(out) != size:
            raise CorruptFile(f"sample {i}: zstd frame has the wrong size", section="DATA",
                              expected=f"{size} bytes", found=f"{len(out)} bytes")
        return out

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
        if out is None:
            out = np.empty(shape, dtype=np.uint8)
        elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}, got {out.dtype} {out.shape}")
        if idx.size:
            decode_images(self.streams(idx), self._palette_set, out, layout == "NCHW")
        return out

    def streams(self, indices: Iterable[int] | np.ndarray) -> Streams:
        """What decoding samples ``indices`` needs (:class:`dcqformat.decode.Streams`): their bit
        streams, checksum-verified and (zstd) decompressed, sizes, palettes and drop masks."""
        try:
            return self._streams(self._index_array(indices))
        except DcqError as exc:
            exc.path = exc.path or str(self.path)
            raise

    def _streams(self, idx: np.ndarray) -> Streams:
        rec = self._records
        offsets, lengths = rec.get("payload_offset", idx), rec.get("payload_length", idx)
        hs, ws = rec.get("height", idx), rec.get("width", idx)
        self._check_blocks(offsets, offsets + lengths)
        mask_offsets = None
        if self.patch_size is not None and rec.constant("flags") != 0:  # open() checked: masked => MASK
            masked = (rec.get("flags", idx) & L.RECORD_FLAG_MASKED) != 0
            mask_offsets = np.where(masked, rec.get("mask_offset", idx), -1)
        data = self._data
        if self.codec == "zstd":
            pixels = hs * ws
            if mask_offsets is not None and (mask_offsets >= 0).any():
                assert self.patch_size is not None
                sel = mask_offsets >= 0
                pixels = pixels.copy()
                pixels[sel] = kernels.kept_pixel_counts(self._masks, mask_offsets[sel], hs[sel], ws[sel],
                                                        *self.patch_size)
            sizes = np.ascontiguousarray((pixels * self.bits + 7) // 8, dtype=np.int64)
            self._check_frames(idx, offsets, lengths, sizes)
            data = self._decompress_many(idx, offsets, lengths, sizes)
            offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        return Streams(data, offsets, hs, ws, rec.get("palette_id", idx), self.bits, self.patch_size,
                              self._masks if mask_offsets is not None else None, mask_offsets)

    def _decompress_many(self, idx: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                         sizes: np.ndarray) -> np.ndarray:
        """The frames of samples ``idx`` decompressed back to back (each to exactly its size)."""
        frames: list[bytes | bytearray | memoryview] = [self._data[o : o + ln].tobytes()
                                                        for o, ln in zip(offsets.tolist(), lengths.tolist())]
        parts: list[bytes] | None = None
        if sizes.all():  # the batch call cannot take empty outputs (masked samples with every patch dropped)
            try:
                result = self._decompressor().multi_decompress_to_buffer(
                    frames, decompressed_sizes=sizes.astype(np.uint64).tobytes())
                parts = [result[k].tobytes() for k in range(len(result))]
            except zstandard.ZstdError:
                parts = None
        if parts is None or [len(p) for p in parts] != sizes.tolist():
            # One by one: names the bad frame, if any.
            parts = [self._decompress(i, self._data[o : o + ln], int(n))
                     for i, o, ln, n in zip(idx.tolist(), offsets.tolist(), lengths.tolist(), sizes.tolist())]
        return np.frombuffer(b"".join(parts) + b"\0", dtype=np.uint8)

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
        if out is None:
            out = np.empty(shape, dtype=table.dtype)
        elif out.shape != shape or out.dtype != table.dtype:
            raise ValueError(f"out must be {table.dtype} {shape}, got {out.dtype} {out.shape}")
        if idx.size:
            decode_crops(self.streams(idx), table, fill_c, boxes, flips, out,
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
        for blk in range(len(self._verified)):
            self._verify_block(blk)
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

    def weights_blob(self) -> bytes | None:
        """The WGHT section as stored (a safetensors buffer), or None."""
        if L.TAG_WGHT not in self.header.sections:
            return None
        return self._section(L.TAG_WGHT).tobytes()

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
            "palettes": len(self.palettes),
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
        for name in ("_buf", "_data", "palettes", "_masks", "_block_crcs", "_records", "_palette_set", "_cache"):
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
