"""Read image datasets for conversion: ImageFolder trees, WebDataset shards, CIFAR pickles, .npz.

``open_source(SRC)`` detects the kind and returns a :class:`Source`, which iterates
:class:`Item` (index, image or None, label, problem). Images come out as (H, W, C) uint8 with
the requested channels: grayscale, palette, 16-bit and alpha images are converted (alpha is
dropped or composited, as asked); an unreadable one comes with ``image=None`` and the reason,
so that every input index is either written or reported.
"""

from __future__ import annotations

import glob
import io
import os
import pickle
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DcqError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
MAX_SOURCE_PIXELS = 1 << 28


@dataclass(frozen=True)
class Sizing:
    """How images are resized while they are read (as FFCV's ``max_resolution``).

    ``short_side``: scale so the shorter side is that long (up or down), keeping the aspect;
    with ``center_crop`` then cut the central ``short_side`` square. ``max_side``: scale down
    (never up) so the longer side is at most that long. Both may be given (``short_side``
    first). JPEGs are decoded at a reduced scale when that suffices (Pillow's ``draft``), so a
    large photo never costs its full-size pixels.
    """

    short_side: int | None = None
    max_side: int | None = None
    center_crop: bool = False

    def target(self, width: int, height: int) -> tuple[int, int]:
        """The size (width, height) an image of ``width x height`` is resized to (before any crop)."""
        w, h = float(width), float(height)
        if self.short_side is not None:
            f = self.short_side / min(w, h)
            w, h = w * f, h * f
        if self.max_side is not None and max(w, h) > self.max_side:
            f = self.max_side / max(w, h)
            w, h = w * f, h * f
        return max(1, round(w)), max(1, round(h))

    def apply(self, img: Image.Image) -> Image.Image:
        size = self.target(img.width, img.height)
        if size != img.size:
            img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        if self.center_crop and self.short_side is not None:
            s = min(self.short_side, img.width, img.height)
            left, top = (img.width - s) // 2, (img.height - s) // 2
            img = img.crop((left, top, left + s, top + s))
        return img

    def __bool__(self) -> bool:
        return self.short_side is not None or self.max_side is not None


@dataclass
class Item:
    index: int
    image: np.ndarray | None
    label: int
    problem: str | None = None
    name: str = ""  # where the sample comes from: a file path, shard:key, array[index]
    nbytes: int | None = None  # the encoded image's size, for sources of image files


@dataclass
class Source:
    """A dataset to convert: its kind, class names, and how to iterate it (any number of times)."""

    kind: str
    classes: list[str]
    items: Callable[[], Iterator[tuple[int, Any, int, str]]]  # raw (index, image bytes/array/loader, label)
    notes: dict = field(default_factory=dict)
    length: int | None = None

    def __iter__(self) -> Iterator[tuple[int, Any, int, str]]:
        return self.items()


def to_array(raw: bytes | np.ndarray | Image.Image, channels: int = 3, alpha: str = "drop",
             sizing: Sizing | None = None) -> np.ndarray:
    """Decode and normalise one image: (H, W, channels) uint8, resized by ``sizing`` when given.
    Raises DcqError if unreadable.

    ``raw`` is encoded image bytes, a PIL image, or an array (H, W[, C]) of uint8, of integers
    (scaled by their maximum) or of floats in [0, 1].
    """
    if isinstance(raw, Image.Image):
        img = raw
    elif isinstance(raw, np.ndarray):
        arr = raw
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise DcqError(f"an image array must be (H, W[, C]) with C 1, 3 or 4, got {arr.shape}")
        if arr.dtype.kind == "f" and float(arr.max(initial=0.0)) <= 1.0:
            arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        elif arr.dtype != np.uint8:
            arr = (arr.astype(np.float64) * (255.0 / max(float(arr.max()), 1.0))).round().astype(np.uint8)
        img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    else:
        try:
            img = Image.open(io.BytesIO(raw))  # reads the header only
            if img.width * img.height > MAX_SOURCE_PIXELS:
                raise DcqError(f"image too large ({img.width}x{img.height})")
            if sizing and img.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that suffices
                img.draft(img.mode, sizing.target(img.width, img.height))
            img.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DcqError(f"unreadable image ({type(exc).__name__}: {exc})") from None
    if img.width * img.height > MAX_SOURCE_PIXELS:
        raise DcqError(f"image too large ({img.width}x{img.height})")
    if img.mode in ("I;16", "I;16B", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((a * (255.0 / max(a.max(), 1.0))).round().astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        if alpha == "composite":  # over white
            rgba = img.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, rgba)
        img = img.convert("RGB" if img.mode != "LA" else "L")
    img = img.convert("L" if channels == 1 else "RGB")
    if sizing:
        img = sizing.apply(img)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _image_folder(root: Path) -> Source:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((root / name).rglob("*"))
             if f.suffix.lower() in IMAGE_EXTS]
    if not files:
        raise DcqError(f"{root}: no images in class sub-folders")

    def items() -> Iterator[tuple[int, object, int, str]]:
        for i, (f, c) in enumerate(files):
            yield i, f.read_bytes, c, str(f)

    return Source("imagefolder", classes, items, length=len(files))


def expand_braces(pattern: str) -> list[str]:
    """WebDataset-style brace expansion: ``a-{000..004}.tar`` and ``{a,b}``."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    body, head, tail = m.group(1), pattern[: m.start()], pattern[m.end() :]
    r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if r:
        width = len(r.group(1))
        options = [str(i).zfill(width) for i in range(int(r.group(1)), int(r.group(2)) + 1)]
    else:
        options = body.split(",")
    return [p for o in options for p in expand_braces(head + o + tail)]


def _shards(pattern: str) -> Source:
    paths = [p for part in expand_braces(pattern) for p in (sorted(glob.glob(part)) or [part])]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DcqError(f"shard not found: {missing[0]}")
    classes: list[str] = []
    for cand in (Path(paths[0]).parent / "classes.txt",):
        if cand.is_file():
            classes = cand.read_text().split()

    def items() -> Iterator[tuple[int, object, int, str]]:
        for index, fields in enumerate(tar_samples(paths)):
            image, label = _shard_sample(fields)
            yield index, image, label, f"{fields['__url__'].decode()}:{fields['__key__'].decode()}"

    return Source("webdataset", classes, items)


def tar_samples(paths: list[str] | list[Path]) -> Iterator[dict[str, bytes]]:
    """The samples of WebDataset tar shards, in order: ``{"__key__": key, "__url__": shard, ext: bytes}``,
    members grouped by key (the path up to the first dot of the file name), as webdataset does."""
    for path in paths:
        with tarfile.open(path) as tar:
            sample: dict[str, bytes] = {}
            for member in tar:
                if not member.isfile():
                    continue
                name = os.path.basename(member.name)
                k, _, ext = name.partition(".")
                key = os.path.join(os.path.dirname(member.name), k)
                if sample and key.encode() != sample["__key__"]:
                    yield sample
                    sample = {}
                sample["__key__"] = key.encode()
                sample["__url__"] = str(path).encode()
                f = tar.extractfile(member)
                if f is None:
                    raise DcqError(f"{path}: member {member.name} cannot be read")
                sample[ext.lower()] = f.read()
            if sample:
                yield sample


def _shard_sample(fields: dict[str, bytes]) -> tuple[object, int]:
    image = next((v for k, v in fields.items() if k in {"jpg", "jpeg", "png", "webp", "ppm", "bmp"}), None)
    label = -1
    for key in ("cls", "label", "class"):
        if key in fields:
            try:
                label = int(fields[key].decode().strip())
            except ValueError:
                pass
            break
    return (image if image is not None else b""), label


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's batch files: dicts, lists, strings, bytes and numpy arrays only."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DcqError(f"refusing to unpickle {module}.{name} from a CIFAR batch file")


def _load_batch(path: Path) -> dict:
    with open(path, "rb") as f:
        return _ArrayUnpickler(f, encoding="bytes").load()


def _cifar(root: Path) -> Source:
    batches = sorted(root.glob("data_batch_*")) or sorted(p for p in [root / "train"] if p.exists())
    batches = batches or sorted(root.glob("test_batch")) or [root / "test"]
    meta_path = next((p for p in (root / "batches.meta", root / "meta") if p.exists()), None)
    classes: list[str] = []
    if meta_path is not None:
        meta = _load_batch(meta_path)
        names = meta.get(b"label_names") or meta.get(b"fine_label_names") or []
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    def items() -> Iterator[tuple[int, object, int, str]]:
        index = 0
        for path in batches:
            batch = _load_batch(path)
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            labels = batch.get(b"labels", batch.get(b"fine_labels"))
            if labels is None:
                raise DcqError(f"{path}: a CIFAR batch without labels")
            for k in range(len(data)):
                yield index, data[k], int(labels[k]), f"{path.name}[{k}]"
                index += 1

    return Source("cifar", classes, items)


def _npz_header(z: np.lib.npyio.NpzFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of member ``name`` of an .npz, read from its header (the data stays put)."""
    assert z.zip is not None
    with z.zip.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def _npz(path: Path) -> Source:
    def bad(what: str) -> DcqError:
        return DcqError(f"{path}: {what}")

    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise bad("an .npz source needs an array 'x' (N, H, W[, C]) and optionally 'y'")
            shape, dtype = _npz_header(z, "x")
            if dtype.hasobject or dtype.kind not in "uifb":
                raise bad(f"'x' must hold numbers, found dtype {dtype}")
            if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3, 4)):
                raise bad(f"'x' must be (N, H, W) or (N, H, W, C) with C 1, 3 or 4, found shape {shape}")
            n = shape[0]
            if "y" in z.files:
                y_shape, y_dtype = _npz_header(z, "y")
                if y_dtype.kind not in "iu" or len(y_shape) != 1 or y_shape[0] != n:
                    raise bad(f"'y' must be {n} integer labels, one per image of 'x', found {y_dtype} {y_shape}")
            classes = [str(c) for c in z["classes"]] if "classes" in z.files else []
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DcqError):
            raise
        raise bad(f"not a readable .npz of arrays ({exc})") from None

    def items() -> Iterator[tuple[int, object, int, str]]:
        with np.load(path, allow_pickle=False, mmap_mode="r") as z:
            x = z["x"]
            y = z["y"] if "y" in z else np.full(n, -1)
            for i in range(n):
                yield i, np.asarray(x[i]), int(y[i]), f"{path.name}: x[{i}]"

    return Source("npz", classes, items, length=n)


def from_dataset(dataset: Any) -> Source:
    """A map-style dataset (``len`` and ``[i] -> (image, label)``, as torchvision's) as a source:
    images as PIL images, arrays (H, W[, C]) or tensors (C, H, W), uint8 or floats in [0, 1]."""
    n = len(dataset)
    classes = [str(c) for c in getattr(dataset, "classes", None) or []]

    def load(i: int) -> tuple[Any, int]:
        image, label = dataset[i]
        if hasattr(image, "numpy") and hasattr(image, "dim"):  # a tensor, torchvision's C, H, W
            image = image.detach().cpu().numpy()
            if image.ndim == 3 and image.shape[0] in (1, 3, 4):
                image = image.transpose(1, 2, 0)
        return image, int(label)

    def items() -> Iterator[tuple[int, object, int, str]]:
        for i in range(n):
            try:
                image, label = load(i)
            except Exception as exc:  # noqa: BLE001 - the dataset's own failure, reported per sample
                yield i, _failing(exc), -1, f"dataset[{i}]"
                continue
            yield i, image, label, f"dataset[{i}]"

    return Source("dataset", classes, items, length=n)


def _failing(exc: Exception) -> Callable[[], Any]:
    def fail() -> Any:
        raise DcqError(f"the dataset failed to give it ({type(exc).__name__}: {exc})")
    return fail


def open_source(src: str | os.PathLike[str] | Any) -> Source:
    """Detect and open a source: ImageFolder dir, CIFAR pickle dir, .npz, tar shards, or a
    map-style dataset object (see :func:`from_dataset`)."""
    if not isinstance(src, (str, os.PathLike)):
        return from_dataset(src)
    s = str(src)
    p = Path(s)
    if p.is_dir():
        if any((p / n).exists() for n in ("data_batch_1", "test_batch", "train", "batches.meta", "meta")) \
                and not any(d.is_dir() for d in p.iterdir()):
            return _cifar(p)
        return _image_folder(p)
    if p.suffix == ".npz" and p.is_file():
        return _npz(p)
    if ".tar" in s or "{" in s or "*" in s:
        return _shards(s)
    raise DcqError(f"{src}: not an ImageFolder, a CIFAR folder, an .npz or tar shards")


def iter_images(source: Source, channels: int = 3, alpha: str = "drop", sizing: Sizing | None = None,
                share: tuple[int, int] = (0, 1)) -> Iterator[Item]:
    """Every item of a source with its image decoded (and resized by ``sizing``), or the problem
    that stopped it. ``share=(rank, world)``: only the items whose index is ``rank`` modulo
    ``world`` (the others are not decoded)."""
    rank, world = share
    for index, raw, label, name in source:
        if index % world != rank:
            continue
        try:
            data = raw() if callable(raw) else raw
            nbytes = len(data) if isinstance(data, bytes) else None
            yield Item(index, to_array(data, channels, alpha, sizing), label, None, name, nbytes)
        except DcqError as exc:
            yield Item(index, None, label, str(exc), name)
        except OSError as exc:
            yield Item(index, None, label, f"unreadable ({exc})", name)
