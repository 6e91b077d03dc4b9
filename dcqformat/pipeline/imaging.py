"""Images during conversion, below every stage: the disk-backed image cache and the image helpers
that the quantizers (dcqformat.quantize), the selection (dcqformat.select) and the MAE share."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


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

    def batches(self, size: int, indices: np.ndarray | None = None,
                start: int = 0) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        """(indices, images) in batches of ``size``, in order, from position ``start``."""
        order = np.arange(len(self)) if indices is None else np.asarray(indices)
        for s in range(start, len(order), size):
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


def to_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, size, size) in [-1, 1]."""
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1
    if x.shape[2] != size or x.shape[3] != size:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def model_input(images: list[np.ndarray], size: int) -> torch.Tensor:
    """Images of any sizes as one (N, 3, size, size) float batch in [-1, 1] for the attention model."""
    rgb = [im if im.shape[2] == 3 else im.repeat(3, 2) for im in images]
    if len({im.shape for im in rgb}) == 1:
        return to_input(torch.from_numpy(np.stack(rgb)), size)
    return torch.cat([to_input(torch.from_numpy(im)[None], size) for im in rgb])


def shrink(img: np.ndarray, max_pixels: int) -> np.ndarray:
    """An (H, W, C) uint8 image scaled down (keeping its aspect, Pillow's box filter) to at most
    ``max_pixels`` pixels; as it is when already that small. Images of one size stay of one size."""
    h, w = img.shape[:2]
    if h * w <= max_pixels:
        return img
    from PIL import Image

    f = (max_pixels / (h * w)) ** 0.5
    size = (max(1, int(w * f)), max(1, int(h * f)))
    planes = [np.asarray(Image.fromarray(img[..., c]).resize(size, Image.Resampling.BOX)) for c in range(img.shape[2])]
    return np.stack(planes, axis=2)


def as_rgb(img: np.ndarray, size: int | None) -> np.ndarray:
    """An (H, W, 1|3) image as RGB, resized (bilinear) to ``size`` x ``size`` when given."""
    rgb = img if img.shape[2] == 3 else img.repeat(3, 2)
    if size is None or rgb.shape[:2] == (size, size):
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Per-channel Sobel responses of (N, C, H, W): (N, 2C, H, W)."""
    c = x.shape[1]
    k = torch.stack([SOBEL, SOBEL.T]).to(x)[:, None].repeat(c, 1, 1, 1)  # (2C, 1, 3, 3)
    return nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)
