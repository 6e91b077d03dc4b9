"""Datasets of many .dcq files, read as one.

A dataset directory holds part files and ``manifest.json`` (``{"format": "dcq-set/1", "files":
[{"path", "samples", "bytes"}], "samples", "classes", "bits", "channels"}``); ``dcq convert
--samples-per-file N`` writes one. :func:`resolve` turns a file, a directory, a glob or a list
into the files, and :class:`DcqSet` reads them as one dataset: sample ``i`` of the set is sample
``i - start[f]`` of file ``f``, palettes are numbered across files, and batch decoding makes one
call per file that the batch touches.
"""

from __future__ import annotations

import glob as globlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import bitpack, kernels
from .decode import PaletteSet, Streams, crop_arguments, decode_crops, decode_images
from .errors import CorruptFile, DcqError
from .reader import DcqReader
from .reader import open as open_dcq
from .records import RecordViews
from .writer import DcqWriter, publish

MANIFEST = "manifest.json"
FORMAT = "dcq-set/1"
PathLike = str | os.PathLike[str]


def resolve(source: PathLike | Sequence[PathLike]) -> list[Path]:
    """The .dcq files of a file, a dataset directory (its manifest, else its ``*.dcq``), a glob
    pattern, or a list of any of these."""
    if not isinstance(source, (str, os.PathLike)):
        return [f for item in source for f in resolve(item)]
    path = Path(source)
    if path.is_dir():
        manifest = path / MANIFEST
        if manifest.is_file():
            return [path / entry["path"] for entry in read_manifest(manifest)["files"]]
        files = sorted(path.glob("*.dcq"))
        if not files:
            raise DcqError(f"{path}: no {MANIFEST} and no .dcq files")
        return files
    if any(c in str(source) for c in "*?[") and not path.exists():
        files = [Path(f) for f in sorted(globlib.glob(str(source)))]
        if not files:
            raise DcqError(f"{source}: the pattern matches no file")
        return files
    return [path]


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DcqError(f"{path}: not a readable manifest ({exc})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if manifest.get("format") != FORMAT or not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and "/" not in f["path"] for f in files):
        raise DcqError(f"{path}: not a {FORMAT} manifest")
    return manifest


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
            entries.append({"path": Path(f).name, "samples": len(r), "bytes": Path(f).stat().st_size})
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
            if r.weights_blob() != first.weights_blob():
                raise CorruptFile(f"{r.path}: its model weights differ from {first.path}'s", section="WGHT")
        self.bits, self.channels, self.patch_size = first.bits, first.channels, first.patch_size
        self.classes = first.classes
        counts = np.array([len(r) for r in self.readers], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        pal_counts = np.array([len(r.palettes) for r in self.readers], np.int64)
        self.palette_starts = np.concatenate([[0], np.cumsum(pal_counts)])
        self.palettes = np.concatenate([r.palettes for r in self.readers])
        self.palette_set = PaletteSet(self.palettes, self.bits)
        self._fields: dict[str, np.ndarray] = {}

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

    def weights_blob(self) -> bytes | None:
        return self.readers[0].weights_blob()

    # -- decoding ---------------------------------------------------------------------------
    def parts(self, indices: Iterable[int] | np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(file, positions in the batch, indices in the file)`` for each file a batch touches."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"sample index out of range for {len(self)} samples")
        files = np.searchsorted(self.starts, idx, side="right") - 1
        for f in np.unique(files).tolist():
            pos = np.flatnonzero(files == f)
            yield f, pos, idx[pos] - self.starts[f]

    def decode_batch(self, indices: Iterable[int] | np.ndarray,
                     layout: Literal["NHWC", "NCHW"] = "NHWC") -> np.ndarray:
        """:meth:`DcqReader.decode_batch` over the files: one decode of the batch's streams."""
        s = self.streams(indices)
        size = s.size()
        if size is None and len(s):
            raise ValueError("decode_batch needs samples of one size")
        h, w = size or (0, 0)
        shape = (len(s), h, w, self.channels) if layout == "NHWC" else (len(s), self.channels, h, w)
        return decode_images(s, self.palette_set, np.empty(shape, np.uint8), layout == "NCHW")

    def decode_crops(self, indices: Iterable[int] | np.ndarray, boxes: np.ndarray, size: tuple[int, int], *,
                     flips: np.ndarray | None = None, interpolation: Literal["nearest", "bilinear"] = "nearest",
                     layout: Literal["NHWC", "NCHW"] = "NCHW", table: np.ndarray | None = None,
                     fill: np.ndarray | float = 0) -> np.ndarray:
        """:meth:`DcqReader.decode_crops` over the files (``table`` has the set's palettes' shape):
        the streams of the whole batch are gathered into one buffer and decoded in one call."""
        table = self.palettes if table is None else np.asarray(table)
        s = self.streams(indices)
        boxes, flip, fill_c = crop_arguments(len(s), self.channels, table, fill, boxes, flips)
        shape = (len(s), self.channels, *size) if layout == "NCHW" else (len(s), *size, self.channels)
        return decode_crops(s, table, fill_c, boxes, flip, np.empty(shape, table.dtype),
                            bilinear=interpolation == "bilinear", chw=layout == "NCHW")

    def streams(self, indices: Iterable[int] | np.ndarray) -> Streams:
        """One :class:`Streams` of samples from any files: their stream bytes (and drop masks)
        gathered into one buffer, a copy of the batch's payload bytes only; palette ids numbered
        across the set."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        parts = [(f, pos, self.readers[f].streams(local)) for f, pos, local in self.parts(idx)]
        offsets, heights, widths, pids, mask_offsets = (np.zeros(idx.size, np.int64) for _ in range(5))
        mask_offsets[:] = -1
        lengths = [s.stream_lengths() for _, _, s in parts]
        mask_lengths = [np.where(s.masked, bitpack.mask_nbytes(s.heights, s.widths, *s.patch), 0) if s.patch
                        else np.zeros(len(s), np.int64) for _, _, s in parts]
        data = np.zeros(sum(int(ln.sum()) for ln in lengths) + 1, np.uint8)
        masks = np.zeros(sum(int(ml.sum()) for ml in mask_lengths) + 1, np.uint8)
        base = mask_base = 0
        for (f, pos, s), ln, ml in zip(parts, lengths, mask_lengths):
            offsets[pos] = _gather(s.data, s.offsets, ln, data, base)
            if s.mask_data is not None and s.mask_offsets is not None and ml.any():
                sel = ml > 0
                mask_offsets[pos[sel]] = _gather(s.mask_data, s.mask_offsets[sel], ml[sel], masks, mask_base)
                mask_base += int(ml.sum())
            heights[pos], widths[pos] = s.heights, s.widths
            pids[pos] = s.palette_ids + self.palette_starts[f]
            base += int(ln.sum())
        masked = mask_base > 0
        return Streams(data, offsets, heights, widths, pids, self.bits, self.patch_size,
                       masks if masked else None, mask_offsets if masked else None)

    def close(self) -> None:
        for r in self.readers:
            r.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"files": [str(r.path) for r in self.readers]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        DcqSet.__init__(self, state["files"])


def _gather(src: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, dst: np.ndarray, base: int) -> np.ndarray:
    """Copy the byte runs ``src[offsets[k] : offsets[k] + lengths[k]]`` back to back into ``dst``
    from ``base``; return where each landed."""
    starts = base + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    kernels.gather_bytes(src, offsets, lengths, dst, starts)
    return starts


def open_set(source: PathLike | Sequence[PathLike]) -> DcqReader | DcqSet:
    """A reader for one file, or a :class:`DcqSet` for several (see :func:`resolve`)."""
    files = resolve(source)
    return open_dcq(files[0]) if len(files) == 1 else DcqSet(files)


class DcqSetWriter:
    """Write a dataset directory: part files of at most ``samples_per_file`` samples and the manifest.

    The interface of :class:`~dcqformat.DcqWriter` (``add_palette``, ``add``, ``set_weights``,
    ``close``, ``with``); every part gets the palettes given at construction, the metadata and
    the weights. Parts are written into a temporary directory beside ``directory``, renamed into
    place when all are done: nothing partial appears at the destination.
    """

    def __init__(self, directory: PathLike, samples_per_file: int, **writer_args: Any) -> None:
        if samples_per_file < 1:
            raise ValueError(f"samples_per_file must be >= 1, got {samples_per_file}")
        self.directory = Path(directory)
        if self.directory.exists():
            raise DcqError(f"{self.directory} exists")
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.directory.name}.", dir=self.directory.parent))
        self.per_file, self.args = samples_per_file, writer_args
        self.parts: list[Path] = []
        self._writer: DcqWriter | None = None
        self._weights: bytes | None = None
        self.count = 0

    def _current(self) -> DcqWriter:
        if self._writer is None or self._writer.count >= self.per_file:
            if self._writer is not None:
                self._writer.close()
            path = self._tmp / f"part-{len(self.parts):05d}.dcq"
            self._writer = DcqWriter(path, **self.args)
            if self._weights is not None:
                self._writer.set_weights(self._weights)
            self.parts.append(path)
        return self._writer

    def set_weights(self, safetensors_bytes: bytes) -> None:
        """Weights for every part (give them before the samples)."""
        if self.parts:
            raise ValueError("give the weights before the first sample")
        self._weights = bytes(safetensors_bytes)

    def add_palette(self, palette: np.ndarray) -> int:
        return self._current().add_palette(palette)

    def add(self, indices: np.ndarray, **sample: Any) -> int:
        self._current().add(indices, **sample)
        self.count += 1
        return self.count - 1

    def close(self) -> Path:
        try:
            self._current().close()  # an empty dataset still gets one (empty) part
            write_manifest(self._tmp, self.parts)
            publish(self._tmp, self.directory, directory=True)
        except BaseException:
            self.abort()
            raise
        return self.directory

    def abort(self) -> None:
        if self._writer is not None and not self._writer._closed:
            self._writer.abort()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> DcqSetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
