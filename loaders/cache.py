"""A cache of refilled images for later epochs: the refill (the MAE, harmonic inpainting) is
deterministic and runs before augmentation, so each sample's refilled image is computed once.

The images live in one memory-mapped file that the DataLoader workers share (``/dev/shm`` when
it exists, else the temporary directory; ``DCQ_CACHE_DIR`` overrides). Its space is reserved
when it is created (so a full tmpfs is an error then, never a crash later), bounded (samples
past the bound are refilled every epoch), and the file is removed when the dataset that made it
is garbage-collected or the process exits. Each sample has a flag byte, set after its pixels are
written: a worker that finds it set reads pixels that are complete.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path

import numpy as np

DEFAULT_LIMIT = 2 << 30  # bytes of images kept, at most


def cache_dir() -> Path:
    """Where caches go: ``$DCQ_CACHE_DIR``, else /dev/shm (memory) when writable, else the temp dir."""
    if os.environ.get("DCQ_CACHE_DIR"):
        return Path(os.environ["DCQ_CACHE_DIR"])
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def _remove(path: str, owner: int) -> None:
    if os.getpid() == owner:  # not a forked worker's copy
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class RefillCache:
    """Refilled uint8 (C, H, W) images of samples ``0..n-1`` of sizes ``shapes`` (n, 3) as
    (height, width, channels), the first ones up to ``limit`` bytes. Picklable: workers map the
    same file."""

    def __init__(self, shapes: np.ndarray, limit: int = DEFAULT_LIMIT, directory: str | Path | None = None) -> None:
        shapes = np.asarray(shapes, np.int64).reshape(-1, 3)
        sizes = shapes.prod(1)
        ends = np.cumsum(sizes)
        self.count = int(np.searchsorted(ends, limit, side="right"))  # samples 0..count-1 are kept
        self.shapes = shapes[: self.count]
        self.starts = self.count + np.concatenate([[0], ends[:-1]])[: self.count]  # flags first, then pixels
        nbytes = self.count + int(ends[self.count - 1] if self.count else 0)
        fd, self.path = tempfile.mkstemp(prefix="dcq-refill-", suffix=".cache", dir=directory or cache_dir())
        try:
            if nbytes:
                os.posix_fallocate(fd, 0, nbytes)  # reserve now: a full tmpfs fails here, not with SIGBUS later
        except OSError:
            os.close(fd)
            os.unlink(self.path)
            raise
        os.close(fd)
        self.nbytes = nbytes
        self._finalizer = weakref.finalize(self, _remove, self.path, os.getpid())
        self._map: np.ndarray | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_map", "_finalizer")} | {"_map": None, "_pid": -1}

    @property
    def map(self) -> np.ndarray:
        if self._map is None or self._pid != os.getpid():
            # a plain ndarray view of the map: np.memmap's slicing costs microseconds per slice
            self._map = np.memmap(self.path, np.uint8, "r+", shape=(self.nbytes,)).view(np.ndarray) \
                if self.nbytes else np.zeros(0, np.uint8)
            self._pid = os.getpid()
        return self._map

    def get(self, indices: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Fill ``out[k]`` (C, H, W) for every cached sample ``indices[k]``; (k,) bool: which were."""
        m = self.map
        indices = np.asarray(indices, np.int64)
        found = indices < self.count
        found[found] = m[indices[found]] != 0
        assert out.flags.c_contiguous  # written through a flat view
        flat = out.reshape(len(out), -1)
        size = flat.shape[1]
        for k, a in zip(np.flatnonzero(found).tolist(), self.starts[indices[found]].tolist()):
            flat[k] = m[a : a + size]
        return found

    def put(self, indices: np.ndarray, images: np.ndarray) -> None:
        """Keep ``images[k]`` (C, H, W) uint8 as sample ``indices[k]``'s (those within the bound)."""
        m = self.map
        for k, i in enumerate(np.asarray(indices).tolist()):
            if i < self.count and not m[i]:
                h, w, c = self.shapes[i]
                if images[k].shape != (c, h, w):
                    raise ValueError(f"sample {i}: refilled image {images[k].shape}, expected {(c, h, w)}")
                a = int(self.starts[i])
                m[a : a + images[k].size] = images[k].reshape(-1)
                m[i] = 1  # after the pixels

    def close(self) -> None:
        """Remove the file now (the creating process only)."""
        self._map = None
        if getattr(self, "_finalizer", None) is not None:
            self._finalizer()
