"""A disk-backed store of decoded images, so conversion passes stream and memory stays flat."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import numpy as np


class ImageCache:
    """Append (H, W, C) uint8 images to a temporary file; read them back by number or in batches."""

    def __init__(self, directory: str | None = None) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)
        self._records: list[tuple[int, int, int, int]] = []  # offset, h, w, c (24-32 bytes a sample)
        self.labels: list[int] = []
        self.sources: list[int] = []
        self._size = 0
        self._map: np.memmap | None = None

    def add(self, image: np.ndarray, label: int, source_index: int) -> None:
        data = np.ascontiguousarray(image, dtype=np.uint8)
        self._file.write(data.tobytes())
        self._records.append((self._size, *data.shape))
        self._size += data.size
        self.labels.append(label)
        self.sources.append(source_index)
        self._map = None

    def __len__(self) -> int:
        return len(self._records)

    def _view(self) -> np.memmap:
        if self._map is None:
            self._file.flush()
            self._map = np.memmap(self._file, dtype=np.uint8, mode="r", shape=(max(self._size, 1),))
        return self._map

    def image(self, i: int) -> np.ndarray:
        off, h, w, c = self._records[i]
        return np.array(self._view()[off : off + h * w * c]).reshape(h, w, c)

    def shape(self, i: int) -> tuple[int, int, int]:
        return self._records[i][1:]

    def uniform(self) -> tuple[int, int, int] | None:
        shapes = {r[1:] for r in self._records}
        return next(iter(shapes)) if len(shapes) == 1 else None

    def batches(self, size: int, indices: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        """(indices, images) in batches of ``size``, in order."""
        order = np.arange(len(self)) if indices is None else np.asarray(indices)
        for s in range(0, len(order), size):
            chunk = order[s : s + size]
            yield chunk, [self.image(int(i)) for i in chunk]

    def subset(self, positions: np.ndarray) -> "ImageCache":
        """A new cache holding the images at ``positions`` (labels and source indices kept)."""
        out = ImageCache()
        for i in np.asarray(positions).tolist():
            out.add(self.image(i), self.labels[i], self.sources[i])
        return out

    def close(self) -> None:
        self._map = None
        self._file.close()
