"""WebDataset adapter: .dcq samples as tar shard members (spec/WEBDATASET.md).

Each sample is a ``.dcqi`` member (a small header, the drop mask, the bit-packed indices) and
a ``.cls`` member; the palettes, metadata and any model weights live in a sidecar .dcq file
with no samples. :func:`write_shards` writes shards with webdataset's ``ShardWriter``;
:func:`dcqi_handler` plugs into ``WebDataset(...).decode(...)``; :func:`dcq_pipeline` is a
ready pipeline that decodes whole batches in one call.
"""

from __future__ import annotations

import atexit
import functools
import math
import os
import random
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

import dcqformat
from dcqformat import DcqError
from dcqformat.decode import PaletteSet, crop_arguments, decode_crops, decode_images
from dcqformat.errors import CorruptFile
from dcqformat.format.dcqi import (
    DcqiSample,
    encode_block,
    encode_dcqi,
    parse_block,
    parse_dcqi,
    parse_label,
    streams_of,
)

from .augment import output_size
from .dequantize import Dequantize, Restorer
from .memory import empty_batch
from .reconstruct import Mode, Reconstructor, refill_and_crop
from .tables import channel_tables, normalized_fill, normalized_table


def sidecar_path(pattern: str) -> Path:
    """Default sidecar of a shard pattern: ``out/cifar-%06d.tar`` -> ``out/cifar.dcq``."""
    return Path(sidecar_of(pattern))


def sidecar_of(url: str) -> str:
    """The sidecar beside shards, given as a printf or brace pattern or as one shard's name, path or
    URL: ``out/cifar-%06d.tar``, ``http://h/d/train-{000000..000009}.tar`` or
    ``http://h/d/train-000003.tar`` -> ``out/cifar.dcq``, ``http://h/d/train.dcq``."""
    head, _, name = url.rpartition("/")
    field = r"[-_.]*(%0?\d*d|\{[^}]*\}).*$"  # a pattern: cut at its number field
    stem = re.sub(field if re.search(field, name) else r"[-_.]*\d*\.tar.*$", "", name) or "shards"
    return f"{head}/{stem}.dcq" if head else f"{stem}.dcq"


_FETCHED: dict[str, Path] = {}


def local_sidecar(sidecar: str | os.PathLike[str]) -> Path:
    """A local path to the sidecar: itself, or for a URL (``http://``, ``s3://``, ``pipe:``...) a
    temporary copy fetched once per process through webdataset's own opener (``wds.gopen``)."""
    s = str(sidecar)
    if "://" not in s and not s.startswith("pipe:"):
        return Path(s.removeprefix("file:"))
    if s not in _FETCHED:
        with wds.gopen(s, "rb") as stream:
            data = stream.read()
        fd, tmp = tempfile.mkstemp(prefix="dcq-sidecar-", suffix=".dcq")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        atexit.register(Path(tmp).unlink, missing_ok=True)
        _FETCHED[s] = Path(tmp)
    return _FETCHED[s]


def write_shards(src: str | os.PathLike[str], pattern: str, *, maxcount: int = 10000,
                 sidecar: str | os.PathLike[str] | None = None, maxsize: float = 3e9, shards: int | None = None,
                 shuffle: bool = True, seed: int = 0, block: int = 512,
                 keep_codec: bool = True) -> tuple[Path, list[str]]:
    """Write every sample of a .dcq file to WebDataset shards, and the sidecar; return both.

    Samples go out in a seeded random order (``shuffle``; a class-sorted source would otherwise
    give class-sorted shards, and a shuffle buffer cannot undo that). ``shards`` asks for that many
    shards of equal size (give at least ranks x workers, see :func:`dcq_pipeline`) instead of
    ``maxcount`` samples per shard. Samples go ``block`` to a ``.dcqb`` tar member (spec/WEBDATASET.md
    §2.1: tar's 512-byte header and padding per member would otherwise outweigh a small sample);
    ``block=0`` writes one ``.dcqi`` + ``.cls`` pair per sample. With ``keep_codec`` (default) the
    unmasked samples of a ``zstd``, ``ctx``, ``ctxs`` or ``ctxg`` file keep their payloads as the file codes
    them (CODED members, §2) and the sidecar carries the codec's model; else every member holds
    the packed bit stream (what readers before WebDataset format 3 read).
    """
    reader = dcqformat.open(src)
    n = len(reader)
    if shards is not None:
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        maxcount = max(1, -(-n // shards))
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    side = Path(sidecar) if sidecar else sidecar_path(pattern)
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    if block < 0:
        raise ValueError(f"block must be >= 0, got {block}")
    written: list[str] = []
    counts: list[int] = []  # samples of each written shard
    pending = [0]  # samples written to the open shard

    def finished(name: str) -> None:
        written.append(name)
        counts.append(pending[0])
        pending[0] = 0

    per_member = min(block, maxcount) if block else 1  # a shard holds whole blocks
    members_per_shard = max(1, maxcount // per_member)
    with wds.ShardWriter(pattern, maxcount=members_per_shard, maxsize=maxsize, verbose=0, mtime=0,
                         post=finished) as sink:
        ids = order.tolist()
        for start in range(0, n, per_member):
            part = ids[start : start + per_member]
            if block:
                sink.write({"__key__": f"block{start // per_member:09d}",
                            "dcqb": encode_block([(encode_dcqi(reader, i, keep_codec), int(reader.labels[i]))
                                                  for i in part])})
            else:
                i = part[0]
                sink.write({"__key__": f"{int(reader.source_indices[i]):09d}",
                            "dcqi": encode_dcqi(reader, i, keep_codec), "cls": int(reader.labels[i])})
            pending[0] += len(part)  # after write(): a write that starts a new shard finishes the old one first
    meta = dict(reader.meta)
    meta["webdataset"] = {"samples": n, "shards": [Path(s).name for s in written], "counts": counts,
                          "member": "dcqb" if block else "dcqi", "block": block,
                          "order": f"shuffled, seed {seed}" if shuffle else "file order"}
    coded = keep_codec and reader.codec != "packed"
    with dcqformat.DcqWriter(side, bits=reader.bits, channels=reader.channels, palettes=np.array(reader.palettes),
                             meta=meta, patch_size=reader.patch_size, codec=reader.codec if coded else "packed",
                             codec_sections=reader.codec_sections() if coded else None) as w:
        for section in ("WGHT", "DEQW"):
            blob = reader.weights_blob(section)
            if blob is not None:
                w.set_weights(blob, section)
    return side, written


def open_sidecar(sidecar: str | os.PathLike[str]) -> dcqformat.DcqReader:
    """The sidecar's reader; a sidecar that cannot be fetched or opened is a :class:`DcqError`."""
    try:
        return dcqformat.open(local_sidecar(sidecar))
    except DcqError:
        raise
    except OSError as exc:
        raise DcqError(f"sidecar {os.fspath(sidecar)!r} cannot be read: {exc.strerror or exc}") from exc


class BatchDecoder:
    """Collation function: decode a list of (DcqiSample, label) in one parallel pass.

    Picklable, so it runs inside DataLoader workers.
    """

    def __init__(self, sidecar: str | os.PathLike[str], *, augment: Any = None, layout: str = "CHW",
                 dtype: torch.dtype = torch.uint8, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, reconstruct: Mode = "auto", snap: bool = False,
                 dequantize: Dequantize = "auto") -> None:
        side = open_sidecar(sidecar)
        self.check = SampleCheck.of(side)
        self.reconstructor = None if side.patch_size is None else Reconstructor(
            reconstruct, weights=side.weights_blob(), patch=side.patch_size, snap=snap)
        self.restorer = Restorer(dequantize, weights=side.weights_blob("DEQW"))
        self.mean, self.std = mean, std
        self.palettes = PaletteSet(np.array(side.palettes), side.bits)
        self.bits, self.channels = side.bits, side.channels
        float_out = dtype == torch.float32 or mean is not None or std is not None
        self.table = normalized_table(self.palettes.palettes, mean, std) if float_out else self.palettes.palettes
        self.fill = normalized_fill(self.channels, mean, std) if float_out else np.zeros(self.channels, np.uint8)
        self.augment, self.layout = augment, layout

    def __call__(self, samples: list[tuple[DcqiSample, int]]) -> tuple[torch.Tensor, ...]:
        items = [s for s, _ in samples]
        labels = torch.tensor([y for _, y in samples], dtype=torch.int64)
        for s in items:  # checked before batching by dcq_pipeline; again for batches made elsewhere
            self.check(s)
        self.check.decode_coded(items)
        rec = self.reconstructor
        masked = [s for s in items if s.dropped is not None]
        streams = streams_of(items, self.bits, None if rec is None else rec.patch)
        if self.augment is not None:
            boxes, flips = self.augment.windows(streams.heights, streams.widths)
            size, interp = output_size(self.augment), self.augment.interpolation
        else:
            one = streams.size()
            if one is None:
                raise DcqError("samples differ in size: give the pipeline an augment (e.g. Resize)")
            size = one
            boxes = np.tile([0.0, 0.0, *size], (len(items), 1))
            flips, interp = np.zeros(len(items), bool), "nearest"
        chw = self.layout == "CHW"
        if masked or self.restorer.whole_images:
            tables = channel_tables(self.channels, self.mean, self.std, self.table.dtype != np.uint8)
            out, hidden = refill_and_crop(streams, self.palettes, rec if masked else None, tables, boxes, flips,
                                          size, interp == "bilinear", chw, masks=not self.restorer.whole_images,
                                          restorer=self.restorer)
            return (torch.from_numpy(out), labels) if hidden is None else \
                (torch.from_numpy(out), labels, torch.from_numpy(hidden))
        boxes, flips, fill = crop_arguments(len(items), self.channels, self.table, self.fill, boxes, flips)
        shape = (len(items), self.channels, *size) if chw else (len(items), *size, self.channels)
        images = empty_batch(shape, self.table.dtype)  # in a worker: shared memory, sent without a copy
        decode_crops(streams, self.table, fill, boxes, flips, images.numpy(), bilinear=interp == "bilinear", chw=chw)
        return images, labels


def dcqi_handler(sidecar: str | os.PathLike[str]) -> Callable[[str, bytes], Any]:
    """A WebDataset decoder handler: ``.dcqi`` bytes -> (H, W, C) uint8 array; other keys pass.

    >>> ds = wds.WebDataset(urls).decode(dcqi_handler("cifar.dcq"), handler=wds.warn_and_continue)  # doctest: +SKIP
    """
    side = open_sidecar(sidecar)
    palettes = PaletteSet(np.array(side.palettes), side.bits)
    check = SampleCheck.of(side)

    def handler(key: str, data: bytes) -> Any:
        if key.rsplit(".", 1)[-1].lower() != "dcqi":
            return None
        s = parse_dcqi(data)
        check(s)
        check.decode_coded([s])
        out = np.empty((1, s.height, s.width, palettes.channels), np.uint8)
        return decode_images(streams_of([s], s.bits, s.patch), palettes, out, False)[0]

    return handler


class EpochShards(IterableDataset):
    """The shard list, shuffled anew each epoch with a seed that every rank shares.

    The order of epoch ``e`` depends on ``(seed, e)`` only: call :meth:`set_epoch` (as with
    ``DistributedSampler``) or let each pass over the pipeline count as the next epoch. It
    refuses to start when there are fewer shards than ranks x DataLoader workers: some would
    get no shard and an epoch would silently miss samples.
    """

    def __init__(self, urls: str | Sequence[str], seed: int = 0) -> None:
        self.urls = wds.shardlists.expand_urls(urls) if isinstance(urls, str) else list(urls)
        self.seed, self.epoch, self._passes = seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._passes = epoch, 0

    def __len__(self) -> int:
        return len(self.urls)

    def __iter__(self) -> Iterator[dict[str, str]]:
        ranks, workers = _world_size(), _num_workers()
        if len(self.urls) < ranks * workers:
            raise DcqError(f"{len(self.urls)} shard(s) cannot feed {ranks} rank(s) x {workers} worker(s): an epoch "
                           f"would miss samples. Write at least {ranks * workers} shards (dcq to-wds --shards "
                           f"{ranks * workers}), use fewer workers, or resampled=True")
        urls = list(self.urls)
        random.Random(f"{self.seed}/{self.epoch + self._passes}").shuffle(urls)
        self._passes += 1
        for url in urls:
            yield {"url": url}


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_world_size())
    return int(os.environ.get("WORLD_SIZE", "1"))


def _num_workers() -> int:
    info = get_worker_info()
    return 1 if info is None else int(info.num_workers)


def library_errors(handler: Callable[[Exception], bool], url: str) -> Callable[[Exception], bool]:
    """``handler`` (WebDataset's error policy) given only the library's errors: what the tar layer
    raises for the shard at ``url`` (``ReadError``, a duplicate member's ``ValueError``, an
    unopenable shard's ``OSError``) becomes a :class:`CorruptFile` naming the shard, with the
    original as its cause."""

    def handle(exc: Exception) -> bool:
        if not isinstance(exc, DcqError):
            wrapped = CorruptFile(f"shard {url!r} does not read as a tar of samples "
                                  f"({type(exc).__name__}: {exc.args[0] if exc.args else exc})", section="tar")
            wrapped.__cause__ = exc
            exc = wrapped
        return handler(exc)

    return handle


class SampleCheck:
    """Checks of a parsed sample against the sidecar (spec/WEBDATASET.md §2), made before batching
    so that a bad sample is an error of that sample, for the pipeline's error policy. A CODED
    member's payload is decoded here, with the sidecar's codec (``side``), into its bit stream."""

    def __init__(self, bits: int, channels: int, palettes: int, patch: tuple[int, int] | None,
                 side: dcqformat.DcqReader | None = None) -> None:
        self.bits, self.channels, self.palettes, self.patch, self.side = bits, channels, palettes, patch, side

    @classmethod
    def of(cls, side: dcqformat.DcqReader) -> SampleCheck:
        return cls(side.bits, side.channels, len(side.palettes), side.patch_size,
                   side if side.codec != "packed" else None)

    def __call__(self, s: DcqiSample) -> None:
        if s.palette_id >= self.palettes or s.bits != self.bits or s.channels != self.channels:
            raise CorruptFile("sample does not match the sidecar", section="dcqi",
                              expected=f"{self.bits}-bit, {self.channels} ch, palette < {self.palettes}",
                              found=f"{s.bits}-bit, {s.channels} ch, palette {s.palette_id}")
        if s.dropped is not None and s.patch != self.patch:
            raise CorruptFile("sample has dropped patches the sidecar does not describe", section="dcqi",
                              expected=f"patch {self.patch}", found=f"patch {s.patch}")
        if s.coded and self.side is None:
            raise CorruptFile("coded sample, but the sidecar's codec is packed", section="dcqi",
                              expected="a packed stream (flags 0 or MASKED)", found="flag CODED")

    def decode_coded(self, samples: list[DcqiSample]) -> None:
        """Decode the payloads of the CODED ones among checked ``samples`` (one tar sample's: a
        block is checked, and is an error, as a whole) into their bit streams, in one call."""
        coded = [s for s in samples if s.coded]
        if not coded:
            return
        assert self.side is not None, "checked first"
        try:
            streams = self.side.decode_payloads([s.stream for s in coded], np.array([s.height for s in coded]),
                                                np.array([s.width for s in coded]))
        except CorruptFile:
            for s in coded:  # which one
                try:
                    self.side.decode_payloads([s.stream], np.array([s.height]), np.array([s.width]))
                except CorruptFile as exc:
                    raise CorruptFile(f"coded payload of source index {s.source_index} does not decode with the "
                                      f"sidecar's {self.side.codec} model", section="dcqi", expected=exc.expected,
                                      found=exc.found) from None
            raise
        for s, stream in zip(coded, streams):
            s.stream, s.coded = stream, False


def parse_sample(sample: dict[str, Any]) -> list[tuple[DcqiSample, int]]:
    """The ``(sample, label)`` pairs of one tar sample: a ``.dcqb`` block or a ``.dcqi`` + ``.cls`` pair."""
    if "dcqb" in sample:
        return parse_block(sample["dcqb"])
    if "dcqi" in sample and "cls" in sample:
        return [(parse_dcqi(sample["dcqi"]), parse_label(sample["cls"]))]
    members = sorted(k for k in sample if not k.startswith("__"))
    raise CorruptFile(f"tar sample {sample.get('__key__')!r} has neither a .dcqb member nor a .dcqi + .cls pair",
                      section="tar", expected="dcqb, or dcqi and cls", found=", ".join(members) or "no member")


def samples_of(src: Iterator[dict[str, Any]], handler: Callable[[Exception], bool] = wds.reraise_exception,
               check: Callable[[DcqiSample], None] | None = None) -> Iterator[tuple[DcqiSample, int]]:
    """A pipeline stage: tar samples (``.dcqb`` blocks or ``.dcqi`` + ``.cls`` pairs) -> ``(sample,
    label)``, each checked by ``check`` (e.g. a :class:`SampleCheck`); a bad member goes to
    ``handler`` (WebDataset's error policy)."""
    for sample in src:
        try:
            parsed = parse_sample(sample)
            if check is not None:
                for s, _ in parsed:
                    check(s)
                if isinstance(check, SampleCheck):
                    check.decode_coded([s for s, _ in parsed])
        except Exception as exc:  # noqa: BLE001 - the handler decides, as in webdataset
            if handler(exc):
                continue
            break
        yield from parsed


def shard_samples(src: Iterator[dict[str, Any]], handler: Callable[[Exception], bool] = wds.reraise_exception,
                  check: Callable[[DcqiSample], None] | None = None,
                  counts: dict[str, int] | None = None) -> Iterator[tuple[DcqiSample, int]]:
    """A pipeline stage: shard URLs -> checked ``(sample, label)`` pairs, shard by shard. Every
    error goes to ``handler`` as a library error (:func:`library_errors`); a shard that ends with
    other than the sample count the sidecar records for it (``counts``, by shard name) is an error
    too, so a truncated or damaged shard never shrinks an epoch in silence."""
    for item in src:
        url = str(item["url"])
        errors = _ShardErrors(library_errors(handler, url))
        seen = 0
        for pair in samples_of(wds.tariterators.tarfile_samples([dict(item)], handler=errors), errors, check):
            seen += 1
            yield pair
        if errors.stopped:
            return
        expected = _expected_count(url, counts)
        # Each error the policy was told of accounts for at most one missing sample.
        if expected is not None and not expected - errors.calls <= seen <= expected:
            gave = f"{seen} samples" + (f" and {errors.calls} errors" if errors.calls else "")
            why = "samples were lost" if seen < expected else "the shard is not the one written"
            lost = CorruptFile(f"shard {url!r} gave {gave}, the sidecar records {expected}: {why}", section="tar",
                               expected=expected, found=seen)
            if not handler(lost):
                return


class _ShardErrors:
    """One shard's error handler, counting the errors and remembering whether the policy stopped
    the stream."""

    def __init__(self, handle: Callable[[Exception], bool]) -> None:
        self.handle, self.stopped, self.calls = handle, False, 0

    def __call__(self, exc: Exception) -> bool:
        self.calls += 1
        go_on = self.handle(exc)
        self.stopped = self.stopped or not go_on
        return go_on


def _expected_count(url: str, counts: dict[str, int] | None) -> int | None:
    """The sample count the sidecar records for the shard at ``url`` (matched by its file name)."""
    if not counts:
        return None
    name = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0].split()[-1] if url.strip() else url
    return counts.get(name)


def shard_counts(side: dcqformat.DcqReader) -> dict[str, int] | None:
    """Shard name -> sample count, as the sidecar records them (sidecars written before 0.1.0's
    hardening record none)."""
    info = side.meta.get("webdataset")
    if not isinstance(info, dict):
        return None
    shards, counts = info.get("shards"), info.get("counts")
    if not (isinstance(shards, list) and isinstance(counts, list) and len(shards) == len(counts)
            and all(isinstance(x, str) for x in shards)
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)):
        return None
    return dict(zip(shards, counts))


def epoch_batches(samples: int, batch_size: int, world_size: int = 1, num_workers: int = 1) -> int:
    """Batches each DataLoader worker yields per epoch so that a rank sees ``samples / world_size``."""
    return max(1, math.ceil(samples / (world_size * max(num_workers, 1) * batch_size)))


def dcq_pipeline(urls: str | Sequence[str], sidecar: str | os.PathLike[str] | None = None, *, batch_size: int = 256,
                 shuffle: int = 1000, augment: Any = None, layout: str = "CHW", dtype: torch.dtype = torch.uint8,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 resampled: bool = False, epoch_batches: int | None = None, partial: bool = True,
                 handler: Callable[[Exception], bool] = wds.reraise_exception, reconstruct: Mode = "auto",
                 snap: bool = False, seed: int = 0, dequantize: Dequantize = "auto") -> wds.DataPipeline:
    """A WebDataset pipeline of decoded ``(images, labels)`` batches from .dcq shards.

    The shard list is shuffled anew each epoch, the same way on every rank (``seed``; see
    :class:`EpochShards`, whose ``set_epoch`` the pipeline's first stage offers), then split by
    node (``RANK``/``WORLD_SIZE`` or torch.distributed) and by DataLoader worker; with fewer
    shards than ranks x workers it refuses to start rather than miss samples. Samples are
    shuffled in a buffer of ``shuffle``; each batch is decoded (and
    augmented) in one call. ``urls`` takes what WebDataset takes: brace patterns, lists,
    ``pipe:`` commands. ``epoch_batches`` caps each worker's epoch (see :func:`epoch_batches`);
    ``handler`` is WebDataset's error policy (``wds.warn_and_continue`` skips bad samples).
    Dropped patches are refilled as ``reconstruct`` says (see :class:`DCQDataset`; the MAE
    comes from the sidecar); with ``"none"`` batches are ``(images, labels, masks)``. Palette
    images are dequantized as ``dequantize`` says (see :class:`DCQDataset`; the learned
    dequantizer comes from the sidecar too). The sidecar
    (default: the one beside the shards, :func:`sidecar_of`) may be a URL like the shards: it is
    fetched once through webdataset's opener.
    """
    if sidecar is None:  # beside the shards, fetched from wherever they are
        sidecar = sidecar_of(urls if isinstance(urls, str) else urls[0])
    side = open_sidecar(sidecar)
    stages: list[Any] = [wds.ResampledShards(urls) if resampled else EpochShards(urls, seed)]
    if not resampled:
        stages.append(wds.split_by_node)
    stages += [wds.split_by_worker,
               functools.partial(shard_samples, handler=handler, check=SampleCheck.of(side), counts=shard_counts(side))]
    if shuffle:
        stages.append(wds.shuffle(shuffle))  # of samples, blocks unpacked
    stages += [wds.batched(batch_size, partial=partial,
                           collation_fn=BatchDecoder(sidecar, augment=augment, layout=layout, dtype=dtype,
                                                     mean=mean, std=std, reconstruct=reconstruct, snap=snap,
                                                     dequantize=dequantize))]
    pipeline = wds.DataPipeline(*stages)
    return pipeline.with_epoch(epoch_batches) if epoch_batches else pipeline
