"""The per-sample record table (section RECS): fixed-width rows of per-file field widths.

Each field of :data:`~dcqformat._layout.FIELDS` is either *stored* in every row as a
little-endian integer of 1, 2, 4 or 8 bytes, or *affine*: ``base + step * i`` for record
``i``, taking no bytes. Record ``i`` is always found in O(1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .. import _layout as L
from ..decode import bitpack, kernels
from ..errors import CorruptFile, UnsupportedVersion
from .header import Section

_CHUNK = 1 << 16


@dataclass(frozen=True)
class Field:
    """How one field is encoded."""

    name: str
    mode: int
    width: int
    column: int
    base: int
    step: int

    @property
    def dtype(self) -> np.dtype:
        kind = "i" if self.name in L.SIGNED_FIELDS else "u"
        return np.dtype(f"<{kind}{self.width}")


def rows_start(field_count: int) -> int:
    """Offset of the first row inside RECS."""
    size = L.RECS_HEADER.size + field_count * L.FIELD.size
    return -(-size // L.RECS_ROWS_ALIGN) * L.RECS_ROWS_ALIGN


def _fits(lo: int, hi: int, width: int, signed: bool) -> bool:
    if signed:
        return -(1 << (8 * width - 1)) <= lo and hi < (1 << (8 * width - 1))
    return lo >= 0 and hi < (1 << (8 * width))


def choose_fields(values: "Iterator[np.ndarray]") -> list[Field]:
    """Pick the smallest encoding of every field from chunks of (n, F) int64 rows."""
    nf = len(L.FIELDS)
    lo = np.full(nf, np.iinfo(np.int64).max)
    hi = np.full(nf, np.iinfo(np.int64).min)
    base = step = np.zeros(nf, dtype=np.int64)
    affine = np.ones(nf, dtype=bool)
    start = 0
    for chunk in values:
        if start == 0:
            base = chunk[0].copy()
            step = chunk[1] - chunk[0] if len(chunk) > 1 else np.zeros(nf, dtype=np.int64)
        i = np.arange(start, start + len(chunk), dtype=np.int64)[:, None]
        affine &= (chunk == base + step * i).all(axis=0)
        lo = np.minimum(lo, chunk.min(axis=0))
        hi = np.maximum(hi, chunk.max(axis=0))
        start += len(chunk)
    fields, column = [], 0
    for f, name in enumerate(L.FIELDS):
        if start == 0 or affine[f]:
            fields.append(Field(name, L.MODE_AFFINE, 0, 0, int(base[f]), int(step[f])))
            continue
        width = next(w for w in L.STORED_WIDTHS if _fits(int(lo[f]), int(hi[f]), w, name in L.SIGNED_FIELDS))
        fields.append(Field(name, L.MODE_STORED, width, column, 0, 0))
        column += width
    return fields


def encode_header(count: int, codec: int, fields: list[Field]) -> bytes:
    """RECS header, descriptors and padding up to the first row."""
    stride = sum(f.width for f in fields)
    out = bytearray(L.RECS_HEADER.pack(count, stride, len(fields), codec, bytes(7)))
    for f in fields:
        out += L.FIELD.pack(f.mode, f.width, f.column, 0, f.base, f.step)
    out += bytes(rows_start(len(fields)) - len(out))
    return bytes(out)


def encode_rows(chunk: np.ndarray, fields: list[Field]) -> bytes:
    """Rows of a chunk of (n, F) int64 values."""
    stride = sum(f.width for f in fields)
    rows = np.empty((len(chunk), stride), dtype=np.uint8)
    for f, field in enumerate(fields):
        if field.mode == L.MODE_STORED:
            col = chunk[:, f].astype(field.dtype).view(np.uint8).reshape(len(chunk), field.width)
            rows[:, field.column : field.column + field.width] = col
    return rows.tobytes()


class RecordViews:
    """Per-sample arrays derived from :meth:`field` (a reader, or a set of files read as one)."""

    def field(self, name: str) -> np.ndarray:
        raise NotImplementedError

    @property
    def labels(self) -> np.ndarray:
        """Class label of every sample (int64; -1 where unlabelled)."""
        return self.field("label")

    @property
    def palette_ids(self) -> np.ndarray:
        return self.field("palette_id")

    @property
    def source_indices(self) -> np.ndarray:
        """Position of every sample in the dataset it was converted from (uint64)."""
        return self.field("source_index")

    @property
    def shapes(self) -> np.ndarray:
        """(N, 2) heights and widths."""
        return np.stack([self.field("height"), self.field("width")], axis=1)


def _result_dtype(name: str) -> type:
    return np.uint64 if name in L.UNSIGNED64_FIELDS else np.int64


class RecordTable:
    """Read-only view of a RECS section held in ``buf`` (a uint8 array over the mmap)."""

    def __init__(self, buf: np.ndarray, file_offset: int) -> None:
        def corrupt(msg: str, at: int, expected: object = None, found: object = None) -> CorruptFile:
            return CorruptFile(msg, section="RECS", offset=file_offset + at, expected=expected, found=found)

        if buf.size < L.RECS_HEADER.size:
            raise corrupt("section too short for its header", 0, f">= {L.RECS_HEADER.size} bytes", buf.size)
        count, stride, nfields, codec, _ = L.RECS_HEADER.unpack_from(buf, 0)
        if codec not in L.CODEC_NAMES:
            raise UnsupportedVersion(f"unknown payload codec id {codec} (this reader knows {sorted(L.CODEC_NAMES)})")
        if nfields < len(L.FIELDS) or nfields > 255:
            raise corrupt("bad field count", 12, f"{len(L.FIELDS)}..255", nfields)
        start = rows_start(nfields)
        if buf.size < start or (buf.size - start) != count * stride:
            raise corrupt("length does not match sample_count * row_stride", 0,
                          f"{start} + {count} * {stride} = {start + count * stride} bytes", buf.size)
        self.count = int(count)
        self.stride = int(stride)
        self.codec = int(codec)
        self.fields: dict[str, Field] = {}
        for f in range(nfields):
            at = L.RECS_HEADER.size + f * L.FIELD.size
            mode, width, column, _, base, step = L.FIELD.unpack_from(buf, at)
            if f >= len(L.FIELDS):
                continue  # fields added by a later minor version: ignored
            name = L.FIELDS[f]
            if mode == L.MODE_AFFINE:
                if width != 0:
                    raise corrupt(f"affine field {name} has a width", at + 1, 0, width)
                last = base + step * max(self.count - 1, 0)
                if not -(1 << 62) <= last < (1 << 62) or not -(1 << 62) <= base < (1 << 62):
                    raise corrupt(f"affine field {name} overflows", at + 8, "values within +-2**62",
                                  f"base {base}, step {step}")
            elif mode == L.MODE_STORED:
                if width not in L.STORED_WIDTHS or column + width > stride:
                    raise corrupt(f"stored field {name} does not fit a row", at + 1,
                                  f"width in {L.STORED_WIDTHS}, column + width <= {stride}",
                                  f"width {width}, column {column}")
            else:
                raise corrupt(f"unknown mode of field {name}", at, "0 or 1", mode)
            self.fields[name] = Field(name, mode, width, column, base, step)
        self._rows = buf[start:].reshape(self.count, self.stride) if self.stride else None

    def get(self, name: str, idx: np.ndarray | slice | None = None) -> np.ndarray:
        """Values of field ``name`` for ``idx`` (an index array or slice; all if None): int64, but
        uint64 for ``source_index``, whose stored values may reach 2**64 - 1."""
        field = self.fields[name]
        if idx is None:
            idx = slice(0, self.count)
        if field.mode == L.MODE_AFFINE:
            i = np.arange(*idx.indices(self.count)) if isinstance(idx, slice) else np.asarray(idx, np.int64)
            return (field.base + field.step * i).astype(_result_dtype(name))
        assert self._rows is not None
        raw = self._rows[idx, field.column : field.column + field.width]
        return np.ascontiguousarray(raw).view(field.dtype).reshape(-1).astype(_result_dtype(name))

    def affine_range(self, name: str) -> tuple[int, int] | None:
        """The least and greatest value of an affine field (None for a stored one)."""
        field = self.fields[name]
        if field.mode != L.MODE_AFFINE:
            return None
        last = field.base + field.step * max(self.count - 1, 0)
        return min(field.base, last), max(field.base, last)

    def constant(self, name: str) -> int | None:
        """The value every record has for ``name``, when the encoding makes it one."""
        field = self.fields[name]
        if field.mode == L.MODE_AFFINE and (field.step == 0 or self.count <= 1):
            return field.base
        return None

    def value(self, name: str, i: int) -> int:
        """One field of record ``i``."""
        field = self.fields[name]
        if field.mode == L.MODE_AFFINE:
            return field.base + field.step * i
        assert self._rows is not None
        raw = self._rows[i, field.column : field.column + field.width]
        return int(np.frombuffer(raw.tobytes(), dtype=field.dtype)[0])

    def chunks(self) -> Iterator[slice]:
        """Slices over all records, in bounded chunks (for validation)."""
        for start in range(0, self.count, _CHUNK):
            yield slice(start, min(start + _CHUNK, self.count))


def validate_records(rec: RecordTable, sections: dict[bytes, Section], palette_count: int, bits: int,
                     masks: np.ndarray | None, patch: tuple[int, int] | None,
                     check_lengths: Callable[[int, np.ndarray, np.ndarray, int], None]) -> None:
    """Check every record against the file before any kernel touches the bytes (spec §4).

    ``masks`` is the MASK section (with ``patch``) or None; ``check_lengths`` the codec's rule
    for payload lengths given each stream's size.
    """
    sec = sections[L.TAG_RECS]
    data_size = sections[L.TAG_DATA].length
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
        bad("palette_id", (pid >= 0) & (pid < palette_count), f"0..{palette_count - 1}", pid)
        h, w = rec.get("height", sl), rec.get("width", sl)
        bad("height", (h >= 1) & (h <= L.MAX_SIDE), f"1..{L.MAX_SIDE}", h)
        bad("width", (w >= 1) & (w <= L.MAX_SIDE), f"1..{L.MAX_SIDE}", w)
        bad("pixel count", h * w <= L.MAX_PIXELS, f"<= {L.MAX_PIXELS}", h * w)
        flags = rec.get("flags", sl)
        bad("flags", (flags & ~L.RECORD_FLAGS_KNOWN) == 0, f"bits {L.RECORD_FLAGS_KNOWN:#x}", flags)
        off, length = rec.get("payload_offset", sl), rec.get("payload_length", sl)
        bad("payload_offset", off >= 0, ">= 0", off)
        bad("payload_length", length >= 0, ">= 0", length)
        bad("payload end", off + length <= data_size, f"<= DATA length {data_size}", off + length)
        pixels = h * w
        masked = (flags & L.RECORD_FLAG_MASKED) != 0
        if masked.any():
            if patch is None or masks is None:
                raise CorruptFile(f"record {sl.start + int(np.argmax(masked))} is masked but there is no "
                                  "MASK section", section="RECS", offset=sec.offset)
            ph, pw = patch
            mo = rec.get("mask_offset", sl)[masked]
            mh, mw = h[masked], w[masked]
            nbytes = bitpack.mask_nbytes(mh, mw, ph, pw)
            ok = (mo >= L.MASK_HEADER.size) & (mo + nbytes <= masks.size)
            if not ok.all():
                i = int(np.argmin(ok))
                raise CorruptFile(f"record {sl.start + int(np.flatnonzero(masked)[i])}: mask out of range",
                                  section="RECS", offset=sec.offset,
                                  expected=f"{L.MASK_HEADER.size}..{masks.size - int(nbytes[i])}",
                                  found=int(mo[i]))
            kept = kernels.kept_pixel_counts(masks, mo, mh, mw, ph, pw)
            if (kept < 0).any():
                i = int(np.argmax(kept < 0))
                raise CorruptFile(f"record {sl.start + int(np.flatnonzero(masked)[i])}: mask padding bits are set",
                                  section="MASK", offset=sections[L.TAG_MASK].offset + int(mo[i]),
                                  expected="padding bits of the last mask byte 0", found="bits set")
            pixels = pixels.copy()
            pixels[masked] = kept
        check_lengths(sl.start, length, bitpack.packed_size(pixels, bits), sec.offset)
