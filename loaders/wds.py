"""WebDataset adapter: .dcq samples as tar shard members (spec/WEBDATASET.md).

Each sample is a ``.dcqi`` member (a small header, the drop mask, the bit-packed indices) and
a ``.cls`` member; the palettes, metadata and any model weights live in a sidecar .dcq file
with no samples. :func:`write_shards` writes shards with webdataset's ``ShardWriter``;
:func:`dcqi_handler` plugs into ``WebDataset(...).decode(...)``; :func:`dcq_pipeline` is a
ready pipeline that decodes whole batches in one call.
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

import dcqformat
from dcqformat import DcqError, bitpack, kernels
from dcqformat.errors import ChecksumMismatch, CorruptFile

from .augment import output_size
from .dataset import normalized_fill, normalized_table
from .reconstruct import Mode, Reconstructor, channel_tables, pixel_mask, refill_and_crop

DCQI_MAGIC = b"DCQI"
DCQI = struct.Struct("<4sBBBBIHHQHHI")  # magic, version, bits, channels, flags, palette, h, w, src, ph, pw, crc
DCQI_VERSION = 1


@dataclass
class DcqiSample:
    """One parsed ``.dcqi`` member."""

    bits: int
    channels: int
    palette_id: int
    height: int
    width: int
    source_index: int
    patch: tuple[int, int] | None
    dropped: np.ndarray | None
    stream: np.ndarray


def encode_dcqi(reader: dcqformat.DcqReader, i: int) -> bytes:
    """The ``.dcqi`` member of sample ``i`` (its stream is stored unpacked from zstd)."""
    h, w = (int(v) for v in reader.shapes[i])
    mask = reader.mask(i)
    flags = 1 if mask is not None else 0
    ph, pw = reader.patch_size if mask is not None else (0, 0)  # type: ignore[misc]
    body = (bitpack.pack_mask(mask).tobytes() if mask is not None else b"") + reader.payload(i).tobytes()
    head = DCQI.pack(DCQI_MAGIC, DCQI_VERSION, reader.bits, reader.channels, flags,
                     int(reader.palette_ids[i]), h, w, int(reader.source_indices[i]), ph, pw, 0)
    return head[:-4] + zlib.crc32(head[:-4] + body).to_bytes(4, "little") + body


def parse_dcqi(data: bytes) -> DcqiSample:
    """Parse and check a ``.dcqi`` member; raise a :class:`DcqError` naming what is wrong."""
    if len(data) < DCQI.size or data[:4] != DCQI_MAGIC:
        raise CorruptFile("not a .dcqi member", section="dcqi", offset=0, expected=DCQI_MAGIC, found=data[:4])
    magic, version, bits, channels, flags, pid, h, w, src, ph, pw, crc = DCQI.unpack_from(data)
    if version != DCQI_VERSION:
        raise dcqformat.UnsupportedVersion(f".dcqi version {version}, this reader supports {DCQI_VERSION}")
    computed = zlib.crc32(data[: DCQI.size - 4] + data[DCQI.size :])
    if computed != crc:
        raise ChecksumMismatch("dcqi", DCQI.size - 4, crc, computed)
    if not 1 <= bits <= 8 or channels not in (1, 3) or h < 1 or w < 1 or flags & ~1 or (flags and (ph < 1 or pw < 1)):
        raise CorruptFile("bad .dcqi header", section="dcqi", offset=4,
                          found=f"bits {bits}, channels {channels}, {h}x{w}, flags {flags}, patch {ph}x{pw}")
    pos, dropped, patch = DCQI.size, None, None
    pixels = h * w
    if flags:
        patch = (ph, pw)
        gh, gw = bitpack.grid_shape(h, w, ph, pw)
        nbytes = (gh * gw + 7) // 8
        dropped = bitpack.unpack_mask(np.frombuffer(data, np.uint8, nbytes, pos), gh, gw)
        pos += nbytes
        pixels = bitpack.kept_pixel_order(h, w, ph, pw, dropped).size
    stream = np.frombuffer(data, np.uint8, offset=pos)
    if stream.size != bitpack.packed_size(pixels, bits):
        raise CorruptFile("payload size", section="dcqi", offset=pos,
                          expected=bitpack.packed_size(pixels, bits), found=stream.size)
    return DcqiSample(bits, channels, pid, h, w, src, patch, dropped, stream)


def sidecar_path(pattern: str) -> Path:
    """Default sidecar of a shard pattern: ``out/cifar-%06d.tar`` -> ``out/cifar.dcq``."""
    name = re.sub(r"[-_.]*(%0?\d*d|\{[^}]*\}).*$", "", Path(pattern).name) or "shards"
    return Path(pattern).parent / f"{name}.dcq"


def write_shards(src: str | os.PathLike[str], pattern: str, *, maxcount: int = 10000,
                 sidecar: str | os.PathLike[str] | None = None, maxsize: float = 3e9) -> tuple[Path, list[str]]:
    """Write every sample of a .dcq file to WebDataset shards, and the sidecar; return both."""
    reader = dcqformat.open(src)
    side = Path(sidecar) if sidecar else sidecar_path(pattern)
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    shards: list[str] = []
    with wds.ShardWriter(pattern, maxcount=maxcount, maxsize=maxsize, verbose=0, mtime=0,
                         post=shards.append) as sink:
        for i in range(len(reader)):
            sink.write({"__key__": f"{int(reader.source_indices[i]):09d}", "dcqi": encode_dcqi(reader, i),
                        "cls": int(reader.labels[i])})
    meta = dict(reader.meta)
    meta["webdataset"] = {"samples": len(reader), "shards": [Path(s).name for s in shards], "member": "dcqi"}
    with dcqformat.DcqWriter(side, bits=reader.bits, channels=reader.channels, palettes=np.array(reader.palettes),
                             meta=meta, patch_size=reader.patch_size) as w:
        blob = reader.weights_blob()
        if blob is not None:
            w.set_weights(blob)
    return side, shards


class BatchDecoder:
    """Collation function: decode a list of (DcqiSample, label) in one parallel pass.

    Picklable, so it runs inside DataLoader workers.
    """

    def __init__(self, sidecar: str | os.PathLike[str], *, augment: Any = None, layout: str = "CHW",
                 dtype: torch.dtype = torch.uint8, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, reconstruct: Mode = "mae", snap: bool = False) -> None:
        side = dcqformat.open(sidecar)
        self.reconstructor = None if side.patch_size is None else Reconstructor(
            reconstruct, weights=side.weights_blob(), patch=side.patch_size, snap=snap)
        self.mean, self.std = mean, std
        self.palettes = np.array(side.palettes)
        self.bits, self.channels = side.bits, side.channels
        float_out = dtype == torch.float32 or mean is not None or std is not None
        self.table = normalized_table(self.palettes, mean, std) if float_out else self.palettes
        self.fill = normalized_fill(self.channels, mean, std) if float_out else np.zeros(self.channels, np.uint8)
        self.augment, self.layout = augment, layout

    def __call__(self, samples: list[tuple[DcqiSample, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        items = [s for s, _ in samples]
        labels = torch.tensor([y for _, y in samples], dtype=torch.int64)
        for s in items:
            if s.palette_id >= len(self.palettes) or s.bits != self.bits or s.channels != self.channels:
                raise CorruptFile("sample does not match the sidecar", section="dcqi",
                                  expected=f"{self.bits}-bit, {self.channels} ch, palette < {len(self.palettes)}",
                                  found=f"{s.bits}-bit, {s.channels} ch, palette {s.palette_id}")
        hs = np.array([s.height for s in items])
        ws = np.array([s.width for s in items])
        if self.augment is not None:
            boxes, flips = self.augment.windows(hs, ws)
            size, interp = output_size(self.augment), self.augment.interpolation
        else:
            if (hs != hs[0]).any() or (ws != ws[0]).any():
                raise DcqError("samples differ in size: give the pipeline an augment (e.g. Resize)")
            boxes = np.stack([np.zeros(len(items)), np.zeros(len(items)), hs, ws], 1).astype(np.float64)
            flips, size, interp = np.zeros(len(items), bool), (int(hs[0]), int(ws[0])), "nearest"
        chw = self.layout == "CHW"
        if any(s.dropped is not None for s in items):
            return self._refilled(items, labels, hs, ws, boxes, flips, size, interp == "bilinear", chw)
        shape = (len(items), self.channels, *size) if chw else (len(items), *size, self.channels)
        out = np.empty(shape, self.table.dtype)
        streams = [s.stream for s in items]
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in streams])[:-1]]).astype(np.int64)
        kernels.decode_resample_batch(np.concatenate(streams + [np.zeros(1, np.uint8)]), offsets, hs, ws,
                                      np.array([s.palette_id for s in items]), self.table, self.fill, self.bits,
                                      boxes, flips, interp == "bilinear", 0.5 if self.table.dtype.kind in "ui" else 0.0,
                                      out, chw)
        return torch.from_numpy(out), labels

    def _refilled(self, items, labels, hs, ws, boxes, flips, size, bilinear, chw):  # type: ignore[no-untyped-def]
        """A batch with dropped patches: decode whole images, refill them, then crop."""
        rec = self.reconstructor
        if rec is None or any(s.dropped is not None and s.patch != rec.patch for s in items):
            raise CorruptFile("sample has dropped patches the sidecar does not describe", section="dcqi",
                              expected=f"patch {None if rec is None else rec.patch}",
                              found=f"patch {next(s.patch for s in items if s.dropped is not None)}")
        groups = []
        for h, w in {(int(a), int(b)) for a, b in zip(hs, ws)}:
            pos = np.flatnonzero((hs == h) & (ws == w))
            full = np.stack([self.palettes[items[k].palette_id][_index_map(items[k])] for k in pos])
            full = full.transpose(0, 3, 1, 2)
            grid = bitpack.grid_shape(h, w, *rec.patch)
            grids = np.stack([items[k].dropped if items[k].dropped is not None else np.zeros(grid, bool) for k in pos])
            full = np.where(pixel_mask(torch.from_numpy(grids), rec.patch, h, w).numpy(), 0, full)
            groups.append((pos, np.ascontiguousarray(full), grids,
                           self.palettes[[items[k].palette_id for k in pos]]))
        tables = channel_tables(self.channels, self.mean, self.std, self.table.dtype != np.uint8)
        out, hidden = refill_and_crop(groups, len(items), rec, tables, boxes, flips, size, bilinear, chw)
        if hidden is not None:
            return torch.from_numpy(out), labels, torch.from_numpy(hidden)
        return torch.from_numpy(out), labels


def _index_map(s: DcqiSample) -> np.ndarray:
    mask = None if s.dropped is None else (*s.patch, s.dropped)  # type: ignore[misc]
    return bitpack.index_map(s.stream, s.bits, s.height, s.width, mask)


def dcqi_handler(sidecar: str | os.PathLike[str]) -> Callable[[str, bytes], Any]:
    """A WebDataset decoder handler: ``.dcqi`` bytes -> (H, W, C) uint8 array; other keys pass.

    >>> ds = wds.WebDataset(urls).decode(dcqi_handler("cifar.dcq"), handler=wds.warn_and_continue)  # doctest: +SKIP
    """
    palettes = np.array(dcqformat.open(sidecar).palettes)

    def handler(key: str, data: bytes) -> Any:
        if key.rsplit(".", 1)[-1].lower() != "dcqi":
            return None
        s = parse_dcqi(data)
        if s.palette_id >= len(palettes):
            raise CorruptFile("palette id beyond the sidecar's palettes", section="dcqi",
                              expected=f"< {len(palettes)}", found=s.palette_id)
        pixels = palettes[s.palette_id][_index_map(s)]
        if s.dropped is not None:
            pixels[bitpack.dropped_pixels(s.dropped, *s.patch, s.height, s.width)] = 0  # type: ignore[misc]
        return pixels

    return handler


def _to_pair(sample: dict[str, Any]) -> tuple[DcqiSample, int]:
    return parse_dcqi(sample["dcqi"]), int(sample["cls"])


def epoch_batches(samples: int, batch_size: int, world_size: int = 1, num_workers: int = 1) -> int:
    """Batches each DataLoader worker yields per epoch so that a rank sees ``samples / world_size``."""
    return max(1, math.ceil(samples / (world_size * max(num_workers, 1) * batch_size)))


def dcq_pipeline(urls: str | Sequence[str], sidecar: str | os.PathLike[str], *, batch_size: int = 256,
                 shuffle: int = 1000, augment: Any = None, layout: str = "CHW", dtype: torch.dtype = torch.uint8,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 resampled: bool = False, epoch_batches: int | None = None, partial: bool = True,
                 handler: Callable[[Exception], bool] = wds.reraise_exception, reconstruct: Mode = "mae",
                 snap: bool = False) -> wds.DataPipeline:
    """A WebDataset pipeline of decoded ``(images, labels)`` batches from .dcq shards.

    Shards are split by node (``RANK``/``WORLD_SIZE`` or torch.distributed) and by DataLoader
    worker; samples are shuffled in a buffer of ``shuffle``; each batch is decoded (and
    augmented) in one call. ``urls`` takes what WebDataset takes: brace patterns, lists,
    ``pipe:`` commands. ``epoch_batches`` caps each worker's epoch (see :func:`epoch_batches`);
    ``handler`` is WebDataset's error policy (``wds.warn_and_continue`` skips bad samples).
    Dropped patches are refilled as ``reconstruct`` says (see :class:`DCQDataset`; the MAE
    comes from the sidecar); with ``"none"`` batches are ``(images, labels, masks)``.
    """
    stages: list[Any] = [wds.ResampledShards(urls) if resampled else wds.SimpleShardList(urls)]
    if not resampled:
        stages.append(wds.split_by_node)
    stages += [wds.split_by_worker, wds.tarfile_to_samples(handler=handler)]
    if shuffle:
        stages.append(wds.shuffle(shuffle))
    stages += [wds.map(_to_pair, handler=handler),
               wds.batched(batch_size, partial=partial,
                           collation_fn=BatchDecoder(sidecar, augment=augment, layout=layout, dtype=dtype,
                                                     mean=mean, std=std, reconstruct=reconstruct, snap=snap))]
    pipeline = wds.DataPipeline(*stages)
    return pipeline.with_epoch(epoch_batches) if epoch_batches else pipeline
