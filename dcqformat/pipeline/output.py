"""Writing a conversion's rows: one file, or a dataset directory of part files (one set of parts
per rank under torchrun), whose finished parts a killed conversion keeps.

With a work directory (:mod:`.checkpoint`) the parts of a dataset directory are written into
``parts/`` inside it (shared by the ranks) and renamed to the destination at the end. A part is
complete once it has its name (each is written to a temporary file and renamed), so a rerun
keeps the leading full parts it finds, skips the rows they hold (whole batches are not even
quantized), and writes the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import functools
import os
import signal
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..decode.bitpack import dropped_pixels, mask_nbytes
from ..errors import DcqError
from ..format.multifile import DcqSetWriter, finish_set
from ..format.reader import open as open_dcq
from ..format.writer import DcqWriter
from .checkpoint import KeptParts
from .distributed import Group
from .options import ConvertConfig
from .progress import note

# A quantized sample on its way to the writer: indices, palette (id of a stored one, its colours,
# or (id, correction) in a file with palette corrections), label, source index, drop mask (or None).
Row = tuple[np.ndarray, "int | np.ndarray | tuple[int, np.ndarray]", int, int, "np.ndarray | None"]
# The rows from a position on: ``rows(start)`` yields this rank's rows from row ``start`` (a
# multiple of the conversion's batch) to the end.
Rows = Callable[[int], Iterable[Row]]


@dataclass
class Written:
    """What writing the file produced, for the summary (:meth:`ConvertSummary.add`)."""

    written: int = 0
    raw_bytes: int = 0
    dropped_pixels: int = 0
    mask_bytes: int = 0
    mae_bytes: int = 0
    mae: dict[str, Any] = field(default_factory=dict)

    def count(self, idx: np.ndarray, dropped: np.ndarray | None, patch: int | None, channels: int) -> None:
        self.written += 1
        self.raw_bytes += idx.size * channels
        if dropped is not None and patch is not None:
            h, w = idx.shape[:2]
            self.dropped_pixels += int(dropped_pixels(dropped, patch, patch, h, w).sum())
            self.mask_bytes += mask_nbytes(h, w, patch, patch)


def kept_parts(keep: KeptParts, prefix: str, per_file: int, written: Written, patch: int | None,
               channels: int, progress: bool = False) -> list[Path]:
    """The leading full parts ``prefix-00000.dcq``, ``-00001``... that this conversion finished
    (their records match: same fingerprint, same SHA-256) and that open; the others, and the
    temporary files of a killed writer, are deleted. What they hold is counted into ``written``."""
    parts: list[Path] = []
    for path in sorted(keep.directory.glob(f"{prefix}-*.dcq")):
        next_part = path.name == f"{prefix}-{len(parts):05d}.dcq"
        ok = next_part and keep.matches(path)
        if next_part and not ok:
            note(f"kept part {path.name} is not one this conversion finished (changed, damaged or another "
                 f"conversion's): it is written again", progress)
        try:
            if ok:
                with open_dcq(path) as r:
                    ok = len(r) == per_file
                    if ok:
                        for i in range(len(r)):
                            written.count(r.indices(i), r.mask(i), patch, channels)
        except DcqError:
            ok = False
        if not ok:
            break
        parts.append(path)
    for path in keep.directory.glob(f"{prefix}-*.dcq"):
        if path not in parts:
            keep.forget(path)
    for path in keep.directory.glob(f".{prefix}-*.tmp"):  # what this rank's killed writer left
        path.unlink()
    return parts


def write_rows(dst: str | Path, cfg: ConvertConfig, meta: dict[str, Any], palettes: np.ndarray | None,
               rows: Rows, patch: int | None = None, weights: bytes | None = None,
               samples_per_file: int | None = None, group: Group | None = None, keep: KeptParts | None = None,
               progress: bool = False, dequantizer: bytes | None = None) -> Written:
    """Write the file (or, with ``samples_per_file``, a dataset directory of part files): ``meta``,
    the ``palettes`` (or one per row), the rows, the MAE weights (WGHT) and the learned
    dequantizer's (DEQW). Over several ranks (``group``)
    each writes its rows into part files of its own (``part-rRRR-KKKKK.dcq``) in a directory
    shared by all, and rank 0 writes the manifest and renames it into place. ``keep``: where
    parts are written and kept across a kill (a directory of the work directory), or None."""
    group = group or Group()
    out = Written(mae_bytes=len(weights) if weights is not None else 0)
    args: dict[str, Any] = {"bits": cfg.bits, "channels": cfg.channels, "palettes": palettes, "codec": cfg.codec,
                            "meta": meta, "patch_size": patch, "correction_step": cfg.palette_corrections or None}
    dst = Path(dst)
    shared, start = None, 0
    if samples_per_file is None:
        writer: Any = DcqWriter(dst, **args)
    else:
        prefix = f"part-r{group.rank:03d}" if group.distributed else "part"
        if keep is not None:
            keep.directory.mkdir(parents=True, exist_ok=True)
            shared = keep.directory
        elif group.distributed:
            if group.leader:
                dst.parent.mkdir(parents=True, exist_ok=True)
            shared = Path(group.broadcast(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent)
                                          if group.leader else None))
        before_part = None if keep is None else functools.partial(_record_part, keep)
        writer = DcqSetWriter(dst, samples_per_file, into=shared, prefix=prefix, before_part=before_part,
                              on_part=_kill_hook, **args)
        if keep is not None:
            done = kept_parts(keep, prefix, samples_per_file, out, patch, cfg.channels, progress)
            writer.resume(done)
            start = len(done) * samples_per_file
            if done:
                note(f"{len(done)} finished part files kept: continuing after sample {start:,}", progress)
    with writer as w:
        if weights is not None:
            w.set_weights(weights)
        if dequantizer is not None:
            w.set_weights(dequantizer, "DEQW")
        first = start - start % cfg.batch  # rows() starts at a batch: the batches are the uninterrupted run's
        for k, (idx, pal, label, src_index, dropped) in enumerate(rows(first), first):
            if k < start:
                continue
            correction = None
            if isinstance(pal, tuple):
                pal, correction = pal
            pid = pal if isinstance(pal, int) else w.add_palette(pal)
            w.add(idx, palette=pid, label=label, source_index=src_index, dropped=dropped, correction=correction)
            out.count(idx, dropped, patch, cfg.channels)
    if keep is not None and samples_per_file is not None:  # complete: the records stay out of the dataset
        for record in keep.directory.glob(f".{prefix}-*.dcq.json"):
            record.unlink()
    if shared is not None:
        ok = group.all_gather(True)  # every rank's parts are complete
        if group.leader and all(ok):
            finish_set(shared, dst)
        group.barrier()  # the dataset is in place for everyone
    return out


def _record_part(keep: KeptParts, finished: Path, part: Path) -> None:
    """Record a part before it gets its name: a kill at any moment leaves no named part without
    its record, so a rerun keeps every part that has its name."""
    keep.record(part, contents=finished)


def _kill_hook(part: Path) -> None:
    """Tests: ``DCQ_KILL_AFTER=part-K`` kills the conversion once part K is finished."""
    number = part.stem.rsplit("-", 1)[-1]
    if os.environ.get("DCQ_KILL_AFTER") == f"part-{int(number)}":
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["Row", "Rows", "Written", "kept_parts", "write_rows"]
