"""Resumable conversion: each stage's results kept in a work directory, read back by a rerun.

``dcq convert SRC DST`` keeps, beside ``DST``, a work directory (``.DST.work/``, or
``--work-dir``) holding what each finished stage produced: the attention model
(safetensors), the clusters, the palettes and the MAE (npz, safetensors), each with the state
of the random generator after it, and the finished part files of a dataset directory
(:mod:`.output`). Nothing is pickled (npz files are read with
``allow_pickle=False``). Each stage's files are kept with their SHA-256, and a rerun uses a
stage only if its files still match: a changed or damaged checkpoint runs again, with a note,
never a traceback and never a different file. A rerun of the same command over the same data
finds the directory, checks its fingerprint (the settings that shape the result, the library version, and the
decoded images' labels, sources, sizes and leading bytes) and continues after the last
finished stage: the file it writes is byte-identical to an uninterrupted run's. A directory of
another conversion is replaced, with a note. It is removed when the conversion succeeds;
``--no-resume`` starts over.

Under torchrun each rank keeps its own directory inside it (``rank-R-of-W``). The ranks resume
after the stages that all of them finished (a rank killed first may have finished fewer), so
their collective calls stay in step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _json as strict_json
from .._version import __version__
from ..errors import DcqError
from ..format.files import plain_name
from .distributed import Group
from .imaging import ImageCache
from .options import ConvertConfig
from .progress import note

# Settings that do not change the output: a resumed run may differ in them.
NEUTRAL = ("work_dir", "resume", "device", "batch")
STATE = "state.json"
PARTS = "parts"


def settings(cfg: ConvertConfig) -> dict[str, Any]:
    """The settings that shape the output (what goes into the fingerprint)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in NEUTRAL}


def file_settings(cfg: ConvertConfig) -> dict[str, Any]:
    """The settings recorded in the file's metadata: all but where and whether stages were kept."""
    return {k: v for k, v in cfg.to_dict().items() if k not in ("work_dir", "resume")}


def fingerprint(cfg: ConvertConfig, cache: ImageCache) -> str:
    h = hashlib.sha256(json.dumps(settings(cfg), sort_keys=True).encode())
    h.update(__version__.encode())
    h.update(np.asarray(cache.labels, np.int64).tobytes())
    h.update(np.asarray(cache.sources, np.int64).tobytes())
    for i in range(len(cache)):
        img = cache.image(i)
        h.update(np.asarray(img.shape, np.int64).tobytes())
        h.update(img.reshape(-1)[:64].tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class KeptParts:
    """Where a conversion keeps its finished part files across a kill, and its fingerprint: each
    kept part is recorded with the fingerprint and its SHA-256 (:meth:`record`), and a rerun
    keeps only parts whose record matches (:meth:`matches`)."""

    directory: Path
    key: str

    def _record_of(self, part: Path) -> Path:
        return part.parent / f".{part.name}.json"

    def record(self, part: Path, contents: Path | None = None) -> None:
        """Record ``part`` as this conversion's, with the SHA-256 of ``contents`` (the finished
        file about to be renamed to ``part``; default: ``part`` itself)."""
        tmp = part.parent / f".{part.name}.json.tmp"
        tmp.write_text(json.dumps({"fingerprint": self.key, "sha256": _digest(contents or part)}))
        os.replace(tmp, self._record_of(part))

    def matches(self, part: Path) -> bool:
        try:
            record = strict_json.loads(self._record_of(part).read_text())
        except (OSError, ValueError, RecursionError):
            return False
        return isinstance(record, dict) and record.get("fingerprint") == self.key \
            and record.get("sha256") == _digest(part)

    def forget(self, part: Path) -> None:
        part.unlink(missing_ok=True)
        self._record_of(part).unlink(missing_ok=True)


class Checkpoints:
    """The work directory of one conversion (``directory`` None: nothing is kept)."""

    def __init__(self, directory: Path | None, key: str, resume: bool, progress: bool,
                 group: Group | None = None) -> None:
        self.directory, self.key = directory, key
        self.done: list[str] = []
        self.group = group or Group()
        if directory is None:
            return
        state = directory / STATE
        if directory.exists() and not state.exists() and any(directory.iterdir()):
            raise DcqError(f"{directory}: not a dcq work directory (no {STATE}); give --work-dir an empty or new one")
        found: list[str] = []  # the stages this rank finished before
        self.digests: dict[str, dict[str, str]] = {}  # stage -> its files' SHA-256
        if directory.exists():
            try:
                old = strict_json.loads(state.read_text())
            except (OSError, ValueError, RecursionError):
                old = {}
            old = old if isinstance(old, dict) else {}
            if resume and old.get("fingerprint") == key:
                found = self._verified(old, progress)
            else:
                if resume and old:
                    note(f"{directory} holds another conversion's stages: starting over", progress)
                shutil.rmtree(directory)
        self.done = self._common(found)
        if self.done:
            note(f"resuming from {directory}: {', '.join(self.done)} done", progress)
        directory.mkdir(parents=True, exist_ok=True)
        self._write_state()
        if self.group.distributed and not self.done and self.group.leader:
            shutil.rmtree(directory.parent / PARTS, ignore_errors=True)  # some rank starts over: so do the parts

    def parts(self, dst: Path) -> KeptParts | None:
        """Where the part files of a dataset directory ``dst`` are written and kept across a kill:
        ``parts/`` of the work directory (of the ranks' common one under torchrun); None without
        a work directory or when it is on another file system than ``dst`` (parts are renamed)."""
        if self.directory is None:
            return None
        base = self.directory.parent if self.group.distributed else self.directory
        dst.parent.mkdir(parents=True, exist_ok=True)
        return KeptParts(base / PARTS, self.key) if os.stat(base).st_dev == os.stat(dst.parent).st_dev else None

    def _verified(self, old: dict[str, Any], progress: bool) -> list[str]:
        """The leading finished stages of a kept state whose files still have the digests saved
        with them; a stage that does not (changed, damaged, missing, or kept by a version that
        saved no digests) and every later one run again, with a note."""
        done, digests = old.get("done"), old.get("digests")
        if not isinstance(done, list) or not isinstance(digests, dict):
            return []
        found: list[str] = []
        for stage in done:
            files = digests.get(stage) if isinstance(stage, str) else None
            files = files if isinstance(files, dict) and files else {"no digest": None}
            bad = next((name for name, digest in files.items()
                        if not plain_name(name) or _digest(self.path(name)) != digest), None)
            if bad is not None:
                note(f"the kept {stage!r} stage does not match what was saved ({bad}): it runs again", progress)
                break
            found.append(stage)
            self.digests[stage] = files
        return found

    def _common(self, done: list[str]) -> list[str]:
        """The stages every rank finished: the longest prefix of all ranks' lists (one collective
        call on every rank, whatever it found)."""
        lists = self.group.all_gather(done)
        common: list[str] = []
        for stages in zip(*lists):
            if len(set(stages)) != 1:
                break
            common.append(stages[0])
        return common

    def _write_state(self) -> None:
        assert self.directory is not None
        tmp = self.directory / f".{STATE}.tmp"
        digests = {stage: self.digests[stage] for stage in self.done if stage in self.digests}
        tmp.write_text(json.dumps({"fingerprint": self.key, "done": self.done, "digests": digests}))
        os.replace(tmp, self.directory / STATE)

    def path(self, name: str) -> Path:
        assert self.directory is not None
        return self.directory / name

    def has(self, stage: str) -> bool:
        return stage in self.done

    def load(self, stage: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """A finished stage's arrays and JSON-able info."""
        with np.load(self.path(f"{stage}.npz"), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return arrays, strict_json.loads(self.path(f"{stage}.json").read_text())

    def save(self, stage: str, arrays: dict[str, np.ndarray], info: dict[str, Any],
             files: Callable[[Callable[[str], Path]], None] | None = None) -> None:
        """Record a finished stage (its files written first, then the state that names it)."""
        if self.directory is None:
            return
        names = {f"{stage}.npz", f"{stage}.json"}

        def named(name: str) -> Path:  # the stage's own files, each kept with its digest
            names.add(name)
            return self.path(name)

        np.savez(self.path(f"{stage}.npz"), **arrays)  # type: ignore[arg-type]
        self.path(f"{stage}.json").write_text(json.dumps(info))
        if files is not None:
            files(named)
        self.digests[stage] = {name: _digest(self.path(name)) or "" for name in sorted(names)}
        self.done.append(stage)
        self._write_state()
        if os.environ.get("DCQ_KILL_AFTER") == stage:  # tests: a kill right after this stage
            os.kill(os.getpid(), signal.SIGKILL)

    def finish(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            if self.group.distributed:  # the ranks' directories sit in the conversion's: the last one out removes it
                self.group.barrier()
                if self.group.leader:
                    shutil.rmtree(self.directory.parent, ignore_errors=True)


def _digest(path: Path) -> str | None:
    """SHA-256 of a kept file (None when it cannot be read as a regular file)."""
    try:
        if not path.is_file() or path.is_symlink():
            return None
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return dict(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state
