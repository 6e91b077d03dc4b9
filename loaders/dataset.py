"""DCQDataset: a map-style torch Dataset over a .dcq file, in torchvision's conventions."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from dcqformat.decode import set_parallel
from dcqformat.decode.bitpack import packed_size
from dcqformat.format.multifile import DcqSet, open_set, resolve
from dcqformat.format.reader import DcqReader, Layout

from .augment import output_size
from .cache import DEFAULT_LIMIT, RefillCache
from .dequantize import Dequantize, Restorer
from .memory import empty_batch
from .reconstruct import Mode, Reconstructor, refill_and_crop
from .tables import channel_tables, normalized_fill, normalized_table


class DCQDataset(Dataset):
    """Samples of a .dcq file as ``(image, label)``; the image is a uint8 CHW tensor by default.

    Args:
        path: the .dcq file.
        transform, target_transform: callables applied per sample, as in torchvision (the image
            is given as ``output``: a tensor, a numpy array or a PIL image).
        augment: a fused batch augmentation from :mod:`dcqformat.loaders.augment`
            (``RandomCrop``, ``RandomResizedCrop``, ``CenterCrop``, ``Resize``), applied while
            decoding; it also gives files of varying image sizes one output size.
        layout: ``"CHW"`` (default) or ``"HWC"``.
        dtype: ``torch.uint8`` (default) or ``torch.float32`` (values / 255, then ``mean`` and
            ``std`` if given, computed through the palettes at no extra cost).
        output: ``"tensor"`` (default), ``"numpy"`` or ``"pil"`` (for PIL-only transforms).
        reconstruct: how dropped patches are refilled, for files that have them: ``"auto"``
            (default: the file's MAE when it has one, else ``"smooth"``), ``"mae"`` (the file's
            MAE, one forward pass per batch), ``"smooth"`` (harmonic inpainting from the visible
            pixels, no model), ``"mean"`` (the image's mean colour) or ``"none"`` (zeros;
            ``get_batch(..., masks=True)`` also returns the dropped pixels of the output as bool
            (N, H, W)). Visible pixels are exact.
        snap: snap refilled pixels to the image's palette.
        dequantize: what a palette image becomes (:mod:`dcqformat.loaders.dequantize`):
            ``"auto"`` (default: the file's learned dequantizer when it has one, else
            ``"lookup"``), ``"lookup"`` (each index its palette colour: exact, fused with the
            crop), ``"deband"`` (the debanding filter: false contours softened, no stored bytes)
            or ``"learned"`` (the file's DEQW network, one forward pass per batch).
        refill_cache: keep refilled images for later epochs (``"mae"``, ``"smooth"`` and snapped
            refills, and images through the learned dequantizer;
            :class:`~dcqformat.loaders.cache.RefillCache`, shared by the DataLoader workers):
            ``True`` (default) up to 2 GiB, a number of bytes, or ``False``.

    Items are always ``(image, label)``. DataLoader batches are decoded by one parallel call
    through ``__getitems__``. The file is opened lazily in each process, and the dataset pickles
    as its arguments. Decoding on a GPU instead: :meth:`packed_view` and :meth:`device_decoder`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        *,
        augment: Any = None,
        layout: Literal["CHW", "HWC"] = "CHW",
        dtype: torch.dtype = torch.uint8,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        output: Literal["tensor", "numpy", "pil"] = "tensor",
        reconstruct: Mode = "auto",
        snap: bool = False,
        dequantize: Dequantize = "auto",
        refill_cache: bool | int = True,
    ) -> None:
        if layout not in ("CHW", "HWC"):
            raise ValueError(f"layout must be 'CHW' or 'HWC', got {layout!r}")
        if output not in ("tensor", "numpy", "pil"):
            raise ValueError(f"output must be 'tensor', 'numpy' or 'pil', got {output!r}")
        if (mean is not None or std is not None) and dtype == torch.uint8:
            dtype = torch.float32
        if dtype not in (torch.uint8, torch.float32):
            raise ValueError(f"dtype must be torch.uint8 or torch.float32, got {dtype}")
        self.files = resolve(path)  # a file, a dataset directory, a glob or a list of them
        self.path = self.files[0] if len(self.files) == 1 else self.files[0].parent  # for repr()
        self.transform, self.target_transform = transform, target_transform
        self.augment, self.layout, self.dtype = augment, layout, dtype
        self.mean, self.std = mean, std
        self.output = output
        self._reader: DcqReader | DcqSet | None = None
        self._pid = -1
        self._identity: Any = None  # (size, header CRC) of the file, or one such pair per file
        reader = self.reader  # fail early on a bad file, in the constructor's process
        self.masked = reader.has_masks
        self.reconstructor = Reconstructor(reconstruct, weights=reader.weights_blob(), patch=reader.patch_size,
                                           snap=snap) if self.masked and reader.patch_size else None
        self.restorer = Restorer(dequantize, weights=reader.weights_blob("DEQW"))
        self.refill_cache: RefillCache | None = None
        rec = self.reconstructor
        costly = self.restorer.mode == "learned" or (
            rec is not None and (rec.mode in ("mae", "smooth") or (rec.snap and rec.mode != "none")))
        if refill_cache and costly:
            limit = DEFAULT_LIMIT if refill_cache is True else int(refill_cache)
            shapes = np.asarray(reader.shapes)
            self.refill_cache = RefillCache(np.column_stack([shapes, np.full(len(shapes), reader.channels)]), limit)
        self.classes: list[str] = reader.classes or []
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    # -- the file, opened once per process -------------------------------------------------
    @property
    def reader(self) -> DcqReader | DcqSet:
        """The open reader of this process (reopened after a fork)."""
        if self._reader is None or self._pid != os.getpid():
            if self._reader is not None:
                self._reader.close()  # the parent's map, inherited through fork
            if get_worker_info() is not None:
                set_parallel(False)  # the DataLoader workers are the parallelism
            self._reader = open_set(self.files)
            if self._identity is None:
                self._identity = self._reader.identity
            else:  # a worker, or a process after fork: the file must be the one first opened
                self._reader.check_identity(self._identity)
            self._pid = os.getpid()
            self._table = None if self.dtype == torch.uint8 else normalized_table(
                self._reader.palettes, self.mean, self.std)
        return self._reader

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"], state["_pid"], state["_table"] = None, -1, None
        return state

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def targets(self) -> list[int]:
        """Every label, as torchvision datasets have them."""
        return self.reader.labels.tolist()

    # -- decoding --------------------------------------------------------------------------
    @overload
    def __getitem__(self, index: int) -> tuple[Any, Any]: ...

    @overload
    def __getitem__(self, index: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...

    def __getitem__(self, index: int | Sequence[int] | np.ndarray) -> tuple[Any, Any]:
        """Sample ``index``; or, given a sequence of indices, the collated batch :meth:`get_batch`
        gives. The latter is what a DataLoader asks for when given a ``BatchSampler`` as its
        sampler and ``batch_size=None``: in its workers the batch is then decoded straight into
        shared memory, with none of the default collate's copy."""
        if isinstance(index, (Sequence, np.ndarray)):
            images, labels = self.get_batch(index)
            return images, labels
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, Any]]:
        r = self.reader
        idx = np.asarray(indices, dtype=np.int64)
        labels = [self._target(int(y)) for y in r.labels[idx]] if idx.size else []
        if self.transform is None and self.output == "tensor" and self._batchable(idx):
            return list(zip(self._decode(idx), labels))
        items = []
        for k, i in enumerate(idx.tolist()):
            img = self._to_output(self._decode(np.array([i]))[0].numpy())
            items.append((self.transform(img) if self.transform else img, labels[k]))
        return items

    def get_batch(self, indices: Sequence[int] | np.ndarray, generator: torch.Generator | None = None,
                  *, masks: bool = False) -> tuple[torch.Tensor, ...]:
        """A collated batch ``(images, labels)``, decoded (and augmented) in one call; with
        ``masks=True`` also the (N, H, W) bool dropped pixels of each output image (all False
        unless the file has dropped patches and ``reconstruct="none"``).

        What :class:`~dcqformat.loaders.DCQLoader` uses; ``transform`` and ``output`` do not
        apply here, ``target_transform`` does not either (labels come as an int64 tensor).
        """
        idx = np.asarray(indices, dtype=np.int64)
        if not self._batchable(idx):
            raise ValueError("images differ in size: give the dataset an augment (e.g. Resize)")
        labels = torch.from_numpy(np.array(self.reader.labels[idx]))
        hidden: list[np.ndarray] = []
        # shared=None: in a DataLoader worker, whose output goes through shared memory, decode it there
        images = self._decode(idx, generator, hidden if masks else None, shared=None)
        if not masks:
            return images, labels
        shape = (idx.size, *images.shape[2:]) if self.layout == "CHW" else images.shape[:3]
        return images, labels, torch.from_numpy(hidden[0]) if hidden else torch.zeros(shape, dtype=torch.bool)

    def _target(self, label: int) -> Any:
        return self.target_transform(label) if self.target_transform else label

    def _batchable(self, idx: np.ndarray) -> bool:
        if self.augment is not None:
            return True
        shapes = self.reader.shapes[idx]
        return not len(shapes) or bool((shapes == shapes[0]).all())

    def _decode(self, idx: np.ndarray, generator: torch.Generator | None = None,
                masks: list[np.ndarray] | None = None, *, shared: bool | None = False) -> torch.Tensor:
        """Decode a batch (N, C, H, W) or (N, H, W, C), augmented and typed as configured; with
        ``shared``, into shared memory where the path allows (None: if this is a DataLoader
        worker, as :func:`~dcqformat.loaders.memory.empty_batch` decides).

        For a masked file with ``reconstruct="none"``, the (N, H, W) dropped-pixel masks of the
        output are appended to ``masks``.
        """
        r = self.reader
        if self.masked or self.restorer.whole_images:
            return torch.from_numpy(self._decode_reconstructed(idx, generator, masks))
        layout: Layout = "NCHW" if self.layout == "CHW" else "NHWC"
        c = r.channels
        if self.augment is None and self._table is None:
            h, w = (int(v) for v in r.shapes[idx[0]]) if idx.size else (0, 0)
            target = empty_batch((idx.size, c, h, w) if layout == "NCHW" else (idx.size, h, w, c), np.uint8, shared)
            r.decode_batch(idx, layout=layout, out=target.numpy())
            return target
        boxes, flips, size, interp = self._windows(idx, generator)
        table = r.palettes if self._table is None else self._table
        fill = normalized_fill(c, self.mean, self.std) if self._table is not None else 0
        shape = (idx.size, c, *size) if layout == "NCHW" else (idx.size, *size, c)
        target = empty_batch(shape, table.dtype, shared)
        r.decode_crops(idx, boxes, size, flips=flips, layout=layout, table=table, fill=fill, out=target.numpy(),
                       interpolation="bilinear" if interp == "bilinear" else "nearest")
        return target

    def _windows(self, idx: np.ndarray, generator: torch.Generator | None
                 ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], str]:
        """Each sample's source window, flip, the output size and interpolation: the augment's,
        or without one the whole image (samples of one size)."""
        r = self.reader
        if self.augment is not None:
            boxes, flips = self.augment.windows(r.field("height")[idx], r.field("width")[idx], generator)
            return boxes, flips, output_size(self.augment), self.augment.interpolation
        h, w = (int(v) for v in r.shapes[idx[0]])
        return np.tile([0.0, 0.0, h, w], (idx.size, 1)), np.zeros(idx.size, bool), (h, w), "nearest"

    def _decode_reconstructed(self, idx: np.ndarray, generator: torch.Generator | None,
                              masks: list[np.ndarray] | None) -> np.ndarray:
        """Masked files, or dequantizing other than by lookup: decode whole images, refill
        dropped patches, dequantize, then crop and normalise."""
        r, rec = self.reader, self.reconstructor
        boxes, flips, size, interp = self._windows(idx, generator)
        tables = channel_tables(r.channels, self.mean, self.std, self._table is not None)
        out, hidden = refill_and_crop(r.streams(idx), r.palette_set, rec, tables, boxes, flips, size,
                                      interp == "bilinear", self.layout == "CHW", self.refill_cache, idx,
                                      masks=masks is not None, restorer=self.restorer)
        if masks is not None and hidden is not None:
            masks.append(hidden)
        return out

    def _to_output(self, img: np.ndarray) -> Any:
        if self.output == "numpy":
            return img
        if self.output == "pil":
            from PIL import Image

            hwc = img if self.layout == "HWC" else img.transpose(1, 2, 0)
            if hwc.dtype != np.uint8:
                raise ValueError("output='pil' needs dtype=torch.uint8")
            return Image.fromarray(hwc[..., 0] if hwc.shape[2] == 1 else hwc)
        return torch.from_numpy(img)

    # -- device decoding -------------------------------------------------------------------
    def packed_view(self) -> PackedView:
        """This file as items ``(packed indices, palette id, drop mask, label)`` to be decoded on a
        device by :meth:`device_decoder` (the drop mask is (gh, gw) bool, or (0, 0) when the file
        has no dropped patches)."""
        shapes = self.reader.shapes
        if len(shapes) and (shapes != shapes[0]).any():
            raise ValueError("device decoding needs images of one size")
        return PackedView(self)

    def packed(self, idx: np.ndarray) -> tuple[torch.Tensor, np.ndarray, torch.Tensor | None]:
        """Bit-packed index streams (N, bytes), palette ids and, for a masked file, the (N, gh, gw)
        patch masks of samples ``idx`` (a masked sample's stream holds its kept pixels, zero-padded)."""
        r = self.reader
        h, w = (int(v) for v in r.shapes[0])
        streams = r.streams(idx)
        rows = torch.from_numpy(streams.rows(packed_size(h * w, r.bits)))
        if not self.masked:
            return rows, r.palette_ids[idx], None
        assert r.patch_size is not None
        return rows, r.palette_ids[idx], torch.from_numpy(streams.grids(r.patch_size))

    def device_decoder(self, **kwargs: Any) -> torch.nn.Module:
        """A :class:`~dcqformat.loaders.gpu.DeviceDecoder` for this file (mean/std as configured)."""
        from .gpu import DeviceDecoder

        r = self.reader
        h, w = (int(v) for v in r.shapes[0])
        kwargs.setdefault("mean", self.mean)
        kwargs.setdefault("std", self.std)
        kwargs.setdefault("dtype", self.dtype)
        if self.masked:
            kwargs.setdefault("patch", r.patch_size)
            kwargs.setdefault("reconstructor", self.reconstructor)
        if self.restorer.mode == "deband":
            raise ValueError("dequantize='deband' runs in the CPU loaders only (a Numba kernel); on a device use "
                             "'lookup' or 'learned'")
        if self.restorer.mode == "learned":
            kwargs.setdefault("dequantizer", self.restorer.model)
        return DeviceDecoder(np.array(r.palettes), r.bits, h, w, **kwargs)

    def __repr__(self) -> str:
        lines = [f"Dataset {type(self).__name__}", f"    Number of datapoints: {len(self)}",
                 f"    Root location: {self.path}"]
        if self.augment is not None:
            lines.append(f"    Augment: {self.augment}")
        if self.transform is not None:
            lines.append(f"    Transform: {self.transform}")
        return "\n".join(lines)


class PackedView(Dataset):
    """A :class:`DCQDataset` as bit-packed items for decoding on a device (see
    :meth:`DCQDataset.packed_view`); picklable, batched through ``__getitems__``."""

    def __init__(self, dataset: DCQDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int, torch.Tensor, Any]]:
        idx = np.asarray(indices, dtype=np.int64)
        packed, pids, grids = self.dataset.packed(idx)
        labels = self.dataset.reader.labels[idx]
        none = torch.zeros((0, 0), dtype=torch.bool)
        return [(packed[k], int(pids[k]), none if grids is None else grids[k], self.dataset._target(int(labels[k])))
                for k in range(idx.size)]
