"""Resumable conversion: each stage's results kept in a work directory, read back by a rerun.

``dcq convert SRC DST`` keeps, beside ``DST``, a work directory (``.DST.work/``, or
``--work-dir``) holding what each finished stage produced: the attention model
(safetensors), the clusters, the palettes and the MAE (npz, safetensors), each with the state
of the random generator after it, and the finished part files of a dataset directory
(:mod:`.output`). Nothing is pickled (npz files are read with
``allow_pickle=False``). A rerun of the same command over the same data finds the directory,
checks its fingerprint (the settings that shape the result, the library version, and the
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
from pathlib import Path
from typing import Any

import numpy as np

from .. import _json as strict_json
from .._version import __version__
from ..errors import DcqError
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
        if directory.exists():
            try:
                old = strict_json.loads(state.read_text())
            except (OSError, ValueError):
                old = {}
            if resume and old.get("fingerprint") == key:
                found = [s for s in old.get("done", []) if isinstance(s, str)]
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

    def parts(self, dst: Path) -> Path | None:
        """Where the part files of a dataset directory ``dst`` are written and kept across a kill:
        ``parts/`` of the work directory (of the ranks' common one under torchrun); None without
        a work directory or when it is on another file system than ``dst`` (parts are renamed)."""
        if self.directory is None:
            return None
        base = self.directory.parent if self.group.distributed else self.directory
        dst.parent.mkdir(parents=True, exist_ok=True)
        return base / PARTS if os.stat(base).st_dev == os.stat(dst.parent).st_dev else None

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
        tmp.write_text(json.dumps({"fingerprint": self.key, "done": self.done}))
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
        np.savez(self.path(f"{stage}.npz"), **arrays)  # type: ignore[arg-type]
        self.path(f"{stage}.json").write_text(json.dumps(info))
        if files is not None:
            files(self.path)
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


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return dict(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state
