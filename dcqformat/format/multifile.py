"""Datasets of many .dcq files, read as one.

A dataset directory holds part files and ``manifest.json`` (``{"format": "dcq-set/1", "files":
[{"path", "samples", "bytes"}], "samples", "classes", "bits", "channels"}``); ``dcq convert
--samples-per-file N`` writes one. :func:`resolve` turns a file, a directory, a glob or a list
into the files, and :class:`DcqSet` reads them as one dataset: sample ``i`` of the set is sample
``i - start[f]`` of file ``f``, palettes are numbered across files, and a batch's streams are
gathered from every file it touches into one buffer and decoded in one call.
"""

from __future__ import annotations

import glob as globlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .. import _json as strict_json
from .. import _layout as L
from ..decode import (
    PaletteSet,
    Streams,
    bitpack,
    crop_arguments,
    crop_rows,
    decode_crops,
    decode_images,
    kernels,
    output_array,
)
from ..errors import CorruptFile, DcqError
from .files import file_kind, open_regular, plain_name
from .reader import DcqReader
from .reader import open as open_dcq
from .records import RecordViews
from .writer import DcqWriter, publish

MANIFEST = "manifest.json"
FORMAT = "dcq-set/1"
PathLike = str | os.PathLike[str]


def resolve(source: PathLike | Sequence[PathLike]) -> list[Path]:
    """The .dcq files of a file, a dataset directory (its manifest, else its ``*.dcq``), a glob
    pattern, or a list of any of these. A dataset directory's parts are checked against its
    manifest (spec §13): plain names of regular files inside the directory, each with the
    samples, bytes and header checksum the manifest records, and no part left out."""
    if not isinstance(source, (str, os.PathLike)):
        return [f for item in source for f in resolve(item)]
    path = Path(source)
    if path.is_dir():
        manifest = path / MANIFEST
        if manifest.exists() or manifest.is_symlink():
            return _checked_parts(path, read_manifest(manifest))
        files = sorted(path.glob("*.dcq"))
        if not files:
            raise DcqError(f"{path}: no {MANIFEST} and no .dcq files")
        for f in files:
            _regular_inside(path, f.name, f"{path}: part {f.name!r}")
        return files
    if any(c in str(source) for c in "*?[") and not path.exists():
        files = [Path(f) for f in sorted(globlib.glob(str(source)))]
        if not files:
            raise DcqError(f"{source}: the pattern matches no file")
        return files
    return [path]


MAX_MANIFEST_BYTES = 64 << 20


def _bad(path: Path, what: str, expected: object = None, found: object = None) -> CorruptFile:
    err = CorruptFile(what, section="manifest", expected=expected, found=found)
    err.path = str(path)
    return err


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 63


def _regular_inside(directory: Path, name: str, what: str) -> os.stat_result:
    """``directory / name``'s status if it is a regular file (not a link, FIFO or device)."""
    try:
        st = os.lstat(directory / name)
    except OSError as exc:
        raise DcqError(f"{what} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DcqError(f"{what} is not a regular file but a {file_kind(st.st_mode)}: a dataset directory holds "
                       f"regular files only")
    return st


def read_manifest(path: Path) -> dict[str, Any]:
    """A dataset directory's manifest, checked (spec §13): a regular file, a JSON object of format
    ``dcq-set/1`` whose ``files`` are distinct plain names with their ``samples`` and ``bytes``,
    and whose ``samples`` is their sum."""
    path = Path(path)
    st = _regular_inside(path.parent, path.name, f"{path}")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise _bad(path, "manifest too large", f"<= {MAX_MANIFEST_BYTES} bytes", st.st_size)
    try:
        with open_regular(path) as f:
            manifest = strict_json.loads(f.read(st.st_size + 1).decode("utf-8"))  # read(n) allocates n
    except (OSError, ValueError, RecursionError) as exc:
        raise _bad(path, f"not a readable manifest ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _bad(path, f"not a {FORMAT} manifest", f"an object with format {FORMAT!r}",
                   type(manifest).__name__ if not isinstance(manifest, dict) else repr(manifest.get("format")))
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise _bad(path, "manifest lists no part", "a non-empty list of files", repr(files)[:60])
    seen: set[str] = set()
    for k, entry in enumerate(files):
        if not isinstance(entry, dict) or not plain_name(entry.get("path")):
            raise _bad(path, f"entry {k}: path is not a plain file name", "a name inside the directory",
                       repr(entry.get("path") if isinstance(entry, dict) else entry)[:80])
        name = entry["path"]
        if name in seen:
            raise _bad(path, f"entry {k}: part {name!r} is listed twice")
        seen.add(name)
        for key in ("samples", "bytes"):
            if not _is_count(entry.get(key)):
                raise _bad(path, f"entry {k} ({name!r}): {key} is not a count", "an integer >= 0",
                           repr(entry.get(key))[:40])
    total = manifest.get("samples")
    listed = sum(int(e["samples"]) for e in files)
    if not _is_count(total) or total != listed:
        raise _bad(path, "samples is not the sum of the parts' samples", listed, repr(total)[:40])
    return manifest


def _checked_parts(directory: Path, manifest: dict[str, Any]) -> list[Path]:
    """The parts of a manifest, each checked against its entry; no .dcq file left out."""
    where = directory / MANIFEST
    files = []
    for k, entry in enumerate(manifest["files"]):
        name = entry["path"]
        st = _regular_inside(directory, name, f"{where}: entry {k}, part {name!r},")
        if st.st_size != entry["bytes"]:
            raise _bad(where, f"entry {k}: part {name!r} has another size than the manifest says", entry["bytes"],
                       st.st_size)
        with open_dcq(directory / name) as r:
            if len(r) != entry["samples"]:
                raise _bad(where, f"entry {k}: part {name!r} has other samples than the manifest says",
                           entry["samples"], len(r))
            if "crc" in entry and entry["crc"] != r.header.crc:
                raise _bad(where, f"entry {k}: part {name!r} is not the file the manifest lists (header crc)",
                           entry["crc"], r.header.crc)
        files.append(directory / name)
    unlisted = sorted({f.name for f in directory.glob("*.dcq")} - {e["path"] for e in manifest["files"]})
    if unlisted:
        raise _bad(where, f"part file(s) in the directory but not in the manifest: {', '.join(unlisted[:5])}",
                   f"{len(manifest['files'])} parts", f"{len(manifest['files']) + len(unlisted)} .dcq files")
    return files


def write_manifest(directory: PathLike, files: Iterable[PathLike]) -> Path:
    """Write ``manifest.json`` for part files inside ``directory`` (checked to agree)."""
    directory = Path(directory)
    entries: list[dict[str, Any]] = []
    first = None
    for f in files:
        with open_dcq(f) as r:
            if first is None:
                first = (r.classes, r.bits, r.channels)
            elif (r.classes, r.bits, r.channels) != first:
                raise DcqError(f"{f}: classes, bits or channels differ from the first file's")
            entries.append({"path": Path(f).name, "samples": len(r), "bytes": Path(f).stat().st_size,
                            "crc": r.header.crc})
    classes, bits, channels = first if first else (None, None, None)
    manifest = {"format": FORMAT, "files": entries, "samples": sum(int(e["samples"]) for e in entries),
                "classes": classes, "bits": bits, "channels": channels}
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".json", delete=False) as tmp:
        json.dump(manifest, tmp, indent=1)
    publish(tmp.name, directory / MANIFEST)
    return directory / MANIFEST


class DcqSet(RecordViews):
    """Several .dcq files as one dataset, with the parts of :class:`DcqReader` that the loaders use."""

    def __init__(self, files: Sequence[PathLike]) -> None:
        self.readers = [open_dcq(f) for f in files]
        if not self.readers:
            raise DcqError("a dataset needs at least one file")
        first = self.readers[0]
        for r in self.readers[1:]:
            for what in ("bits", "channels", "classes", "patch_size"):
                if getattr(r, what) != getattr(first, what):
                    raise CorruptFile(f"{r.path}: {what} differs from {first.path}'s", section="file set",
                                      expected=getattr(first, what), found=getattr(r, what))
            for section in ("WGHT", "DEQW"):
                if r.weights_blob(section) != first.weights_blob(section):
                    raise CorruptFile(f"{r.path}: its model weights differ from {first.path}'s", section=section)
        self.bits, self.channels, self.patch_size = first.bits, first.channels, first.patch_size
        self.classes = first.classes
        counts = np.array([len(r) for r in self.readers], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        pal_counts = np.array([len(r.palettes) for r in self.readers], np.int64)
        self.palette_starts = np.concatenate([[0], np.cumsum(pal_counts)])
        self.palettes = np.concatenate([r.palettes for r in self.readers])
        self.palette_set = PaletteSet(self.palettes, self.bits)
        self._fields: dict[str, np.ndarray] = {}
        self._table = _SampleTable(self) if all(r._decoder.in_place for r in self.readers) else None

    # -- what a DcqReader offers ---------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def identity(self) -> tuple[tuple[int, int], ...]:
        return tuple(r.identity for r in self.readers)

    def check_identity(self, expected: tuple[tuple[int, int], ...]) -> None:
        if len(expected) != len(self.readers):
            raise DcqError(f"the dataset now has {len(self.readers)} files, it had {len(expected)}")
        for r, e in zip(self.readers, expected):
            r.check_identity(e)

    def field(self, name: str) -> np.ndarray:
        if name not in self._fields:
            values = np.concatenate([r.field(name) for r in self.readers])
            if name == "palette_id":
                values = values + np.repeat(self.palette_starts[:-1], np.diff(self.starts))
            values.flags.writeable = False
            self._fields[name] = values
        return self._fields[name]

    @property
    def has_masks(self) -> bool:
        return any(r.has_masks for r in self.readers)

    def weights_blob(self, section: str = "WGHT") -> bytes | None:
        return self.readers[0].weights_blob(section)

    # -- decoding ---------------------------------------------------------------------------
    def _indices(self, indices: Iterable[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"sample index out of range for {len(self)} samples")
        return idx

    def parts(self, indices: Iterable[int] | np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(file, positions in the batch, indices in the file)`` for each file a batch touches."""
        idx = self._indices(indices)
        files = np.searchsorted(self.starts, idx, side="right") - 1
        for f in np.unique(files).tolist():
            pos = np.flatnonzero(files == f)
            yield f, pos, idx[pos] - self.starts[f]

    def decode_batch(self, indices: Iterable[int] | np.ndarray, out: np.ndarray | None = None,
                     layout: Literal["NHWC", "NCHW"] = "NHWC") -> np.ndarray:
        """:meth:`DcqReader.decode_batch` over the files: one decode of the batch's streams."""
        s = self.streams(indices)
        size = s.size()
        if size is None and len(s):
            raise ValueError("decode_batch needs samples of one size")
        h, w = size or (0, 0)
        shape = (len(s), h, w, self.channels) if layout == "NHWC" else (len(s), self.channels, h, w)
        return decode_images(s, self.palette_set, output_array(out, shape, np.uint8), layout == "NCHW")

    def decode_crops(self, indices: Iterable[int] | np.ndarray, boxes: np.ndarray, size: tuple[int, int], *,
                     flips: np.ndarray | None = None, interpolation: Literal["nearest", "bilinear"] = "nearest",
                     layout: Literal["NHWC", "NCHW"] = "NCHW", table: np.ndarray | None = None,
                     fill: np.ndarray | float = 0, out: np.ndarray | None = None) -> np.ndarray:
        """:meth:`DcqReader.decode_crops` over the files (``table`` has the set's palettes' shape):
        the streams of the whole batch are gathered into one buffer and decoded in one call."""
        table = self.palettes if table is None else np.asarray(table)
        idx = self._indices(indices)
        boxes, flip, fill_c = crop_arguments(idx.size, self.channels, table, fill, boxes, flips)
        s = self.streams(idx, rows=crop_rows(boxes))
        shape = (len(s), self.channels, *size) if layout == "NCHW" else (len(s), *size, self.channels)
        return decode_crops(s, table, fill_c, boxes, flip, output_array(out, shape, table.dtype),
                            bilinear=interpolation == "bilinear", chw=layout == "NCHW")

    def streams(self, indices: Iterable[int] | np.ndarray, *, rows: np.ndarray | None = None) -> Streams:
        """One :class:`Streams` of samples from any files: their stream bytes (and drop masks)
        gathered into one buffer, a copy of the batch's payload bytes only; palette ids numbered
        across the set. Files whose streams are their payloads (``packed``) are gathered in one
        kernel call from a table of the whole set; others (``zstd``, ``ctx``) are decoded file by
        file (``rows``: as :meth:`DcqReader.streams`)."""
        idx = self._indices(indices)
        if self._table is not None:
            return self._table.streams(idx)
        parts = [(f, pos, self.readers[f].streams(local, rows=None if rows is None else rows[pos]))
                 for f, pos, local in self.parts(idx)]
        n = idx.size
        offsets, heights, widths, pids, mask_offsets = (np.zeros(n, np.int64) for _ in range(5))
        files = np.zeros(n, np.int64)
        mask_offsets[:] = -1
        lengths = np.zeros(n, np.int64)
        for f, pos, s in parts:
            offsets[pos], lengths[pos] = s.offsets, s.stream_lengths()
            heights[pos], widths[pos] = s.heights, s.widths
            pids[pos] = s.palette_ids + self.palette_starts[f]
            files[pos] = f
            if s.mask_offsets is not None:
                mask_offsets[pos] = s.mask_offsets
        touched = [f for f, _, _ in parts]
        data = _gather(kernels.array_list([s.data for _, _, s in parts]), np.searchsorted(touched, files),
                       offsets, lengths)
        masked = mask_offsets >= 0
        if not masked.any():
            return Streams(data[0], data[1], heights, widths, pids, self.bits, self.patch_size)
        mask_sources = kernels.array_list([_EMPTY if s.mask_data is None else s.mask_data for _, _, s in parts])
        sel = np.flatnonzero(masked)
        mask_data, mask_offsets[sel] = _gather(mask_sources, np.searchsorted(touched, files[sel]),
                                               mask_offsets[sel], self._mask_lengths(heights[sel], widths[sel]))
        return Streams(data[0], data[1], heights, widths, pids, self.bits, self.patch_size, mask_data, mask_offsets)

    def _mask_lengths(self, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
        assert self.patch_size is not None
        return np.asarray(bitpack.mask_nbytes(heights, widths, *self.patch_size), np.int64)

    def close(self) -> None:
        for r in self.readers:
            r.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"files": [str(r.path) for r in self.readers]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        DcqSet.__init__(self, state["files"])


_EMPTY = np.zeros(1, np.uint8)


def _gather(sources: Any, source_ids: np.ndarray, offsets: np.ndarray,
            lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The byte runs ``sources[source_ids[k]][offsets[k] : offsets[k] + lengths[k]]`` back to
    back in one new buffer, and where each landed (one kernel call; ``sources`` from
    :func:`kernels.array_list`)."""
    starts = np.zeros(lengths.size, np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    dst = np.empty(int(lengths.sum()) + 1, np.uint8)  # + 1: never empty
    kernels.gather_runs(sources, source_ids, offsets, lengths, dst, starts)
    return dst, starts


class _SampleTable:
    """Every sample of a set of in-place files in flat arrays (file, payload offset and length,
    size, global palette id, drop mask offset), so that a batch takes a few NumPy takes and one
    kernel call, whatever the number of files it touches. Each file's DATA blocks are verified
    (its lazy checksums) the first time a sample is read, through its reader."""

    def __init__(self, dset: DcqSet) -> None:
        readers = dset.readers
        self.dset = dset
        self.file = np.repeat(np.arange(len(readers), dtype=np.int64), np.diff(dset.starts))
        self.offsets = np.concatenate([r.field("payload_offset") for r in readers])
        self.lengths = np.concatenate([r.field("payload_length") for r in readers])
        self.heights = np.concatenate([r.field("height") for r in readers])
        self.widths = np.concatenate([r.field("width") for r in readers])
        self.pids = dset.field("palette_id")
        self.sources = kernels.array_list([r._data if r._data.size else _EMPTY for r in readers])
        same = self.file.size > 0 and (self.heights == self.heights[0]).all() and (self.widths == self.widths[0]).all()
        self.uniform = (int(self.heights[0]), int(self.widths[0])) if same else None
        self.mask_offsets: np.ndarray | None = None
        if dset.has_masks:
            self.mask_offsets = np.concatenate([np.where((r.field("flags") & L.RECORD_FLAG_MASKED) != 0,
                                                         r.field("mask_offset"), -1) for r in readers])
            self.mask_sources = kernels.array_list([r._masks if r._masks is not None and r._masks.size else _EMPTY
                                                    for r in readers])
        self.checked = np.zeros(len(self), bool)  # samples whose DATA blocks are verified

    def __len__(self) -> int:
        return self.file.size

    def streams(self, idx: np.ndarray) -> Streams:
        if not self.checked[idx].all():
            for f, _, local in self.dset.parts(idx):
                r = self.dset.readers[f]
                off = r.field("payload_offset")[local]
                r._blocks.check(off, off + r.field("payload_length")[local])
            self.checked[idx] = True
        files = self.file[idx]
        data, offsets = _gather(self.sources, files, self.offsets[idx], self.lengths[idx])
        heights, widths = self.heights[idx], self.widths[idx]
        mask_data = mask_offsets = None
        if self.mask_offsets is not None:
            mask_offsets = self.mask_offsets[idx]
            sel = np.flatnonzero(mask_offsets >= 0)
            if sel.size:
                mask_data, mask_offsets[sel] = _gather(self.mask_sources, files[sel], mask_offsets[sel],
                                                       self.dset._mask_lengths(heights[sel], widths[sel]))
            else:
                mask_offsets = None
        return Streams(data, offsets, heights, widths, self.pids[idx], self.dset.bits, self.dset.patch_size,
                       mask_data, mask_offsets, self.uniform)


def finish_set(tmp: PathLike, directory: PathLike) -> Path:
    """Write the manifest of the part files in ``tmp`` (in name order) and rename it into place."""
    tmp, directory = Path(tmp), Path(directory)
    write_manifest(tmp, sorted(tmp.glob("*.dcq")))
    publish(tmp, directory, directory=True)
    return directory


def open_set(source: PathLike | Sequence[PathLike]) -> DcqReader | DcqSet:
    """A reader for one file, or a :class:`DcqSet` for several (see :func:`resolve`)."""
    files = resolve(source)
    return open_dcq(files[0]) if len(files) == 1 else DcqSet(files)


class DcqSetWriter:
    """Write a dataset directory: part files of at most ``samples_per_file`` samples and the manifest.

    The interface of :class:`~dcqformat.DcqWriter` (``add_palette``, ``add``, ``set_weights``,
    ``close``, ``with``); every part gets the palettes given at construction, the metadata and
    the weights. Parts are written into a temporary directory beside ``directory``, renamed into
    place when all are done: nothing partial appears at the destination. Of each full part,
    ``before_part(temporary file, name)`` is told just before the part gets its name (the file is
    complete and synced), and ``on_part(name)`` just after.
    """

    def __init__(self, directory: PathLike, samples_per_file: int, *, into: PathLike | None = None,
                 prefix: str = "part", before_part: Callable[[Path, Path], None] | None = None,
                 on_part: Callable[[Path], None] | None = None, **writer_args: Any) -> None:
        if samples_per_file < 1:
            raise ValueError(f"samples_per_file must be >= 1, got {samples_per_file}")
        self.directory = Path(directory)
        self.prefix, self.shared = prefix, into is not None
        if into is None:  # the set's own temporary directory
            if self.directory.exists():
                raise DcqError(f"{self.directory} exists")
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.directory.name}.", dir=self.directory.parent))
        else:  # one writer of several (ranks) filling a temporary directory that finish_set publishes
            self._tmp = Path(into)
        self.per_file, self.args = samples_per_file, writer_args
        self.before_part, self.on_part = before_part, on_part
        self.parts: list[Path] = []
        self._writer: DcqWriter | None = None
        self._models: dict[str, bytes] = {}
        self.count = 0

    def _current(self) -> DcqWriter:
        if self._writer is None or self._writer.count >= self.per_file:
            if self._writer is not None:
                before, part = self.before_part, self.parts[-1]
                self._writer.close(None if before is None else lambda tmp: before(tmp, part))
                if self.on_part is not None:
                    self.on_part(part)
            path = self._tmp / f"{self.prefix}-{len(self.parts):05d}.dcq"
            self._writer = DcqWriter(path, **self.args)
            for section, blob in self._models.items():
                self._writer.set_weights(blob, section)
            self.parts.append(path)
        return self._writer

    def resume(self, parts: list[Path]) -> None:
        """Continue after ``parts``, full part files already in the directory (before any sample)."""
        if self.parts:
            raise ValueError("resume before the first sample")
        self.parts = list(parts)
        self.count = len(parts) * self.per_file

    def set_weights(self, safetensors_bytes: bytes, section: str = "WGHT") -> None:
        """Weights for every part, section WGHT or DEQW (give them before the samples)."""
        if self._writer is not None:
            raise ValueError("give the weights before the first sample")
        self._models[section] = bytes(safetensors_bytes)

    def add_palette(self, palette: np.ndarray) -> int:
        return self._current().add_palette(palette)

    def add(self, indices: np.ndarray, **sample: Any) -> int:
        self._current().add(indices, **sample)
        self.count += 1
        return self.count - 1

    def close(self) -> Path:
        try:
            if self._writer is not None:
                self._writer.close()
            elif not self.parts:  # an empty dataset still gets one (empty) part
                self._current().close()
            if not self.shared:
                finish_set(self._tmp, self.directory)
        except BaseException:
            self.abort()
            raise
        return self.directory

    def abort(self) -> None:
        if self._writer is not None and not self._writer._closed:
            self._writer.abort()
        if not self.shared:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> DcqSetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
