"""Small image sets for the demo, tests and benchmarks.

``load_default()`` uses CIFAR-10 from ``../shared/data/cifar10`` (or ``$DCQ_CIFAR10_DIR``)
when it is there, else the embedded ``photo-crops`` set that ships inside this package.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from ..pipeline.sources import tar_samples


@dataclass
class ImageSet:
    """Images (N, H, W, C) uint8 with labels and the encoded bytes they came from."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    source_bytes: int  # size of the files the images were decoded from


def find_cifar10() -> Path | None:
    """The CIFAR-10 shard folder, if this machine has one."""
    candidates = [os.environ.get("DCQ_CIFAR10_DIR", ""), "../shared/data/cifar10",
                  str(Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10")]
    for c in candidates:
        if c and (Path(c) / "classes.txt").is_file():
            return Path(c)
    return None


def load_cifar10(limit: int | None = None, split: str = "train", root: Path | None = None) -> ImageSet:
    """Decode the first ``limit`` samples of the CIFAR-10 WebDataset shards."""
    root = root or find_cifar10()
    if root is None:
        raise FileNotFoundError("CIFAR-10 shards not found (set DCQ_CIFAR10_DIR)")
    classes = (root / "classes.txt").read_text().split()
    images, labels, nbytes = [], [], 0
    for sample in tar_samples(sorted(root.glob(f"cifar10-{split}-*.tar"))):
        if "jpg" in sample and "cls" in sample:
            nbytes += len(sample["jpg"])
            images.append(np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB")))
            labels.append(int(sample["cls"]))
            if limit is not None and len(images) >= limit:
                break
    return ImageSet("cifar10", np.stack(images), np.array(labels), classes, nbytes)


def load_photo_crops(limit: int | None = None) -> ImageSet:
    """The embedded set: 640 32x32 crops of ten public-domain photos, 10 classes."""
    data = resources.files("dcqformat.cli") / "data"
    info = json.loads((data / "photo_crops.json").read_text())
    raw = (data / "photo_crops.png").read_bytes()
    mosaic = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
    s, per_row = info["side"], info["per_row"]
    tiles = mosaic.reshape(-1, s, per_row, s, 3).transpose(0, 2, 1, 3, 4).reshape(-1, s, s, 3)
    labels = np.arange(len(tiles)) // info["per_class"]
    order = np.random.default_rng(0).permutation(len(tiles))  # mix the classes, like CIFAR's shards
    tiles, labels = tiles[order], labels[order]
    if limit is not None:
        tiles, labels = tiles[:limit], labels[:limit]
    return ImageSet(info["name"], np.ascontiguousarray(tiles), labels, info["classes"],
                    len(raw) * len(tiles) // (len(order)))


DATASETS = ("auto", "cifar10", "photo-crops")


def load_default(limit: int | None = 2000, dataset: str = "auto") -> ImageSet:
    """CIFAR-10 (first ``limit`` training images) when present, else the embedded photo crops."""
    if dataset == "photo-crops" or (dataset == "auto" and find_cifar10() is None):
        return load_photo_crops(limit)
    return load_cifar10(limit)
