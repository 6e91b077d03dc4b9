"""DcqWriter: stream samples into a .dcq file (spec/FORMAT.md, "Writer rules")."""

from __future__ import annotations

import glob
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from .. import _layout as L
from .. import codecs
from ..decode import bitpack
from ..errors import DcqError
from . import masks, palettes
from .checksums import BlockCrcWriter
from .header import pack_header, pack_section
from .records import choose_fields, encode_header, encode_rows

_SPILL_CHUNK = 1 << 16


class _Spill:
    """An anonymous temporary file of fixed-size rows, read back in chunks."""

    def __init__(self, dtype: npt.DTypeLike, row: int) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile()
        self.dtype = np.dtype(dtype)
        self.row = row
        self.count = 0

    def append(self, values: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.count += 1

    def chunks(self, rows: int = _SPILL_CHUNK) -> Iterator[np.ndarray]:
        self.file.seek(0)
        itemsize = self.dtype.itemsize * self.row
        while True:
            raw = self.file.read(rows * itemsize)
            if not raw:
                return
            yield np.frombuffer(raw, dtype=self.dtype).reshape(-1, self.row)

    def close(self) -> None:
        self.file.close()


def publish(tmp: str | os.PathLike[str], dst: str | os.PathLike[str], directory: bool = False) -> None:
    """Rename a finished temporary file (or ``directory``) into place, with the permissions a new
    one gets from the umask (mkstemp creates temporaries 0600, mkdtemp 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
    os.replace(tmp, dst)


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed writers of ``path`` left beside it; return them.

    A writer's temporary file is ``.NAME.PID.XXXXXXXX.tmp``; it is stale when no process PID
    runs on this machine. Temporaries of live writers (another process converting to the same
    destination) are left alone.
    """
    path = Path(path)
    prefix = _tmp_prefix(path)
    removed = []
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DcqWriter:
    """Write a .dcq file sample by sample; memory stays flat whatever the sample count.

    The file is written to a temporary file beside ``path`` and renamed into place by
    :meth:`close` (or on leaving a ``with`` block without an exception); on error nothing
    is left behind.

    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.dcq")
    >>> pal = np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)  # one 1-bit palette
    >>> with DcqWriter(path, bits=1, palettes=pal, meta={"classes": ["a"]}) as w:
    ...     w.add(np.eye(4, dtype=np.uint8), palette=0, label=0)
    0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        bits: int,
        channels: int = 3,
        palettes: np.ndarray | None = None,
        codec: str = "packed",
        meta: Mapping[str, Any] | None = None,
        patch_size: int | tuple[int, int] | None = None,
        zstd_level: int = 19,
        zstd_dictionary: bytes | None = None,
        dict_samples: int = 2048,
        dict_size: int = 16384,
        block_size: int = 1 << 16,
        codec_sections: Mapping[bytes, bytes] | None = None,
        correction_step: int | None = None,
    ) -> None:
        """``codec_sections`` (tag -> bytes) are written instead of the encoder's: the model of a
        file whose payloads live elsewhere (a WebDataset sidecar, spec/WEBDATASET.md §3); such a
        writer takes no samples. ``correction_step`` (1..255, files of 1-4 bits) gives every
        sample a correction of its palette (section PCOR, spec §3.1): ``add(..., correction=)``."""
        if bits not in L.BITS:
            raise ValueError(f"bits must be {L.MIN_BITS}..{L.MAX_BITS}, got {bits}")
        if channels not in L.CHANNELS:
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if correction_step is not None and (not 1 <= correction_step <= 255 or bits > L.PCOR_MAX_BITS):
            raise ValueError(f"correction_step must be 1..255 in a file of 1..{L.PCOR_MAX_BITS} bits, got "
                             f"{correction_step} at {bits} bits")
        if block_size & (block_size - 1) or not L.MIN_BLOCK <= block_size <= L.MAX_BLOCK:
            raise ValueError(f"block_size must be a power of two in {L.MIN_BLOCK}..{L.MAX_BLOCK}")
        self.path = Path(path)
        self.bits, self.channels, self.codec = bits, channels, codec
        self.meta = dict(meta or {})
        try:  # NaN and the infinities are not JSON (spec §8): refused here, not written
            self._json_meta = json.dumps(self.meta, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                                         allow_nan=False)
        except ValueError as exc:
            raise ValueError(f"meta must be JSON without NaN or infinities ({exc})") from None
        if patch_size is None:
            self.patch = None
        else:
            ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
            if not (1 <= ph <= L.MAX_SIDE and 1 <= pw <= L.MAX_SIDE):
                raise ValueError(f"patch size must be 1..{L.MAX_SIDE}, got {patch_size}")
            self.patch = (ph, pw)
        self._encoder = codecs.by_name(codec).encoder(bits, zstd_level, zstd_dictionary, dict_size, dict_samples)
        self._codec_sections = dict(codec_sections) if codec_sections is not None else None
        self._pending: list[tuple[codecs.Sample, dict[str, int]]] = []  # held back until the encoder has started
        self._started = False
        self._models: dict[bytes, bytes] = {}  # WGHT, DEQW

        if self.path.is_dir():
            raise DcqError(f"{self.path}: the destination is a directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(self.path) + f"{os.getpid()}.", suffix=".tmp",
                                   dir=self.path.parent)
        try:  # an error (or SIGTERM) before the writer is complete leaves no temporary file
            self._tmp = Path(tmp)
            self._file = os.fdopen(fd, "w+b")
            self._file.write(bytes(L.HEADER_SIZE))
            self._crc = BlockCrcWriter(block_size)
            self._records = _Spill(np.int64, len(L.FIELDS))
            k = 1 << bits
            self._palettes = _Spill(np.uint8, k * channels)
            self.correction_step = correction_step
            self._corrections = _Spill(np.int8, k * channels) if correction_step is not None else None
            self._masks = tempfile.TemporaryFile()
            self._mask_bytes = L.MASK_HEADER.size
            self.count = 0
            self._closed = False
            if palettes is not None:
                for pal in np.asarray(palettes).reshape(-1, k, channels):
                    self.add_palette(pal)
        except BaseException:
            file = self.__dict__.get("_file")
            if file is not None:
                file.close()
            else:
                os.close(fd)
            Path(tmp).unlink(missing_ok=True)
            self._closed = True
            raise

    # -- input -----------------------------------------------------------------------------
    def add_palette(self, palette: np.ndarray) -> int:
        """Append a (2**bits, channels) uint8 palette (fewer entries are padded); return its id."""
        pal = np.asarray(palette)
        k = 1 << self.bits
        if pal.dtype != np.uint8 or pal.ndim != 2 or pal.shape[1] != self.channels or pal.shape[0] > k:
            raise ValueError(
                f"palette must be uint8 (<= {k}, {self.channels}), got {pal.dtype} {pal.shape}"
            )
        if pal.shape[0] < k:
            pal = np.concatenate([pal, np.zeros((k - pal.shape[0], self.channels), np.uint8)])
        if self._palettes.count >= L.MAX_PALETTES:
            raise ValueError(f"too many palettes (limit {L.MAX_PALETTES})")
        self._palettes.append(pal)
        return self._palettes.count - 1

    def set_weights(self, safetensors_bytes: bytes, section: str = "WGHT") -> None:
        """Embed model weights: a safetensors buffer (spec/FORMAT.md), in section ``WGHT`` (the
        MAE, §9) or ``DEQW`` (the learned dequantizer, §9.3)."""
        from .weights import validate_safetensors

        tag = section.encode("ascii")
        if tag not in L.MODEL_TAGS:
            raise ValueError(f"model weights go to section WGHT or DEQW, got {section!r}")
        validate_safetensors(safetensors_bytes, section=section)
        self._models[tag] = bytes(safetensors_bytes)

    def add(
        self,
        indices: np.ndarray,
        *,
        palette: int,
        label: int = -1,
        source_index: int | None = None,
        dropped: np.ndarray | None = None,
        correction: np.ndarray | None = None,
    ) -> int:
        """Append one sample: an (H, W) map of palette indices; return its record number.

        ``dropped`` is an optional (gh, gw) boolean patch mask (True = dropped patch) on the
        grid of ``patch_size``; the dropped pixels are not stored. ``correction`` (a writer with
        ``correction_step`` only; default zeros): (2**bits, channels) integers in -8..7, the
        sample decodes with ``palette + correction_step * correction`` (clipped).
        """
        self._check_open()
        if self._codec_sections is not None:
            raise ValueError("a writer given codec_sections takes no samples (they were coded under another model)")
        idx = np.asarray(indices)
        if idx.ndim != 2 or idx.dtype.kind not in "ui":
            raise ValueError(f"indices must be an (H, W) integer array, got {idx.dtype} {idx.shape}")
        h, w = idx.shape
        if not (1 <= h <= L.MAX_SIDE and 1 <= w <= L.MAX_SIDE) or h * w > L.MAX_PIXELS:
            raise ValueError(f"image size {h}x{w} outside 1..{L.MAX_SIDE} per side, {L.MAX_PIXELS} pixels")
        if idx.size and (idx.min() < 0 or idx.max() >= (1 << self.bits)):
            raise ValueError(f"indices must be in 0..{(1 << self.bits) - 1}, got {idx.min()}..{idx.max()}")
        if not 0 <= palette < self._palettes.count:
            raise ValueError(f"palette id {palette} not added yet ({self._palettes.count} palettes)")
        delta = self._correction(correction)
        flags, mask_offset = 0, 0
        flat = idx.astype(np.uint8).reshape(-1)
        if dropped is not None:
            if self.patch is None:
                raise ValueError("a drop mask needs the writer's patch_size")
            gh, gw = bitpack.grid_shape(h, w, *self.patch)
            dropped = np.asarray(dropped, dtype=bool)
            if dropped.shape != (gh, gw):
                raise ValueError(f"drop mask must be {(gh, gw)} for a {h}x{w} image, got {dropped.shape}")
            flat = flat[bitpack.kept_pixel_order(h, w, *self.patch, dropped)]
            mask_offset = self._mask_bytes
            packed_mask = bitpack.pack_mask(dropped).tobytes()
            self._masks.write(packed_mask)
            self._mask_bytes += len(packed_mask)
            flags |= L.RECORD_FLAG_MASKED
        sample = codecs.Sample(bitpack.pack_indices(flat, self.bits).tobytes(), h, w, dropped,
                               self.patch if dropped is not None else None)
        src = self.count if source_index is None else int(source_index)
        if not 0 <= src < 1 << 63:
            raise ValueError(f"source_index must be in 0..2**63-1 (what this writer stores), got {src}")
        record = {"palette_id": palette, "label": int(label), "height": h, "width": w, "source_index": src,
                  "mask_offset": mask_offset, "flags": flags}
        if self._started:
            self._emit(sample, record)
        else:
            self._pending.append((sample, record))
            if len(self._pending) >= self._encoder.warmup:
                self._start()
        if self._corrections is not None:
            self._corrections.append(delta)
        self.count += 1
        return self.count - 1

    def _correction(self, correction: np.ndarray | None) -> np.ndarray:
        """A sample's correction, checked (zeros if None)."""
        shape = (1 << self.bits, self.channels)
        if self._corrections is None:
            if correction is not None:
                raise ValueError("a correction needs the writer's correction_step")
            return np.zeros(0, np.int8)
        if correction is None:
            return np.zeros(shape, np.int8)
        delta = np.asarray(correction)
        if delta.shape != shape or delta.dtype.kind not in "ui" or delta.min() < -8 or delta.max() > 7:
            raise ValueError(f"correction must be {shape} integers in -8..7, got {delta.dtype} {delta.shape}")
        return delta.astype(np.int8)

    # -- output ----------------------------------------------------------------------------
    def _emit(self, sample: codecs.Sample, record: dict[str, int]) -> None:
        payload = self._encoder.encode(sample)
        record["payload_offset"] = self._crc.total
        record["payload_length"] = len(payload)
        self._file.write(payload)
        self._crc.update(payload)
        self._records.append(np.array([record[name] for name in L.FIELDS], dtype=np.int64))

    def _start(self) -> None:
        """Start the encoder on the streams held back so far (a zstd dictionary is trained on them)."""
        self._encoder.start([p for p, _ in self._pending])
        self._started = True
        pending, self._pending = self._pending, []
        for sample, record in pending:
            self._emit(sample, record)

    def _pad(self) -> None:
        pos = self._file.tell()
        self._file.write(bytes(-pos % L.ALIGN))

    def _section(self, tag: bytes, parts: Iterable[bytes]) -> bytes:
        """Write one section (64-byte aligned); return its table entry."""
        self._pad()
        offset = self._file.tell()
        crc, length = 0, 0
        for part in parts:
            self._file.write(part)
            crc = zlib.crc32(part, crc)
            length += len(part)
        return pack_section(tag, offset, length, crc, L.SECTION_FLAG_SKIPPABLE if tag in L.SKIPPABLE_TAGS else 0)

    def _sections(self) -> Iterator[tuple[bytes, Iterable[bytes]]]:
        """Every section after DATA, in the canonical order, each built by its own module."""
        fields = choose_fields(self._records.chunks())
        codec_id = L.CODECS[self.codec]
        own = self._encoder.sections() if self._codec_sections is None else self._codec_sections
        for tag in L.WRITE_ORDER:
            if tag == L.TAG_RECS:
                rows = (encode_rows(c, fields) for c in self._records.chunks())
                yield tag, [encode_header(self.count, codec_id, fields), *rows]
            elif tag == L.TAG_MASK and self.patch is not None:
                self._masks.seek(0)
                yield tag, [masks.pack_header(self.patch), self._masks.read()]
            elif tag == L.TAG_DCRC:
                yield tag, [self._crc.section()]
            elif tag == L.TAG_PALT:
                head = palettes.pack_header(self._palettes.count, self.bits, self.channels)
                yield tag, [head, *(c.tobytes() for c in self._palettes.chunks())]
            elif tag == L.TAG_PCOR and self._corrections is not None:
                assert self.correction_step is not None
                head = L.PCOR_HEADER.pack(self.count, self.correction_step, bytes(3))
                yield tag, [head, *(palettes.pack_deltas(c) for c in self._corrections.chunks())]
            elif tag in own:
                yield tag, [own[tag]]
            elif tag in self._models:
                yield tag, [self._models[tag]]
            elif tag == L.TAG_META:
                yield tag, [self._json_meta.encode("utf-8")]

    def close(self, before_publish: Callable[[Path], None] | None = None) -> Path:
        """Finish the file and rename it into place; return its path. ``before_publish`` is
        called with the finished temporary file (synced) just before the rename."""
        self._check_open()
        try:
            if not self._started:
                self._start()
            table = [pack_section(L.TAG_DATA, L.HEADER_SIZE, self._crc.total, self._crc.crc)]
            for tag, parts in self._sections():
                table.append(self._section(tag, parts))
            self._pad()
            table_offset = self._file.tell()
            table_bytes = b"".join(table)
            self._file.write(table_bytes)
            minor = max(L.MINOR_OF_CODEC[L.CODECS[self.codec]], L.MINOR_OF_PCOR if self._corrections is not None else 0)
            head = pack_header(self._file.tell(), table_offset, table_bytes, minor)
            self._file.seek(0)
            self._file.write(head)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            if before_publish is not None:
                before_publish(self._tmp)
            publish(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        finally:
            self._release()
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; the destination is left untouched."""
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)
        self._release()

    def __del__(self) -> None:
        # A writer dropped without close() leaves no temporary file behind.
        if not getattr(self, "_closed", True):
            self.abort()

    def _release(self) -> None:
        self._closed = True
        self._records.close()
        self._palettes.close()
        if self._corrections is not None:
            self._corrections.close()
        self._masks.close()
        self._crc.blocks.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("writer is closed")

    def __enter__(self) -> "DcqWriter":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self.abort()
