"""``dcq convert`` and :func:`dcqformat.convert`: a dataset in, a .dcq file out.

The orchestration, above the stages: it loads the source into the image cache, builds the
conversion context, then runs sample selection (dcqformat.select), a quantizer (dcqformat.quantize)
and, with patch dropping, the MAE (dcqformat.mae, through the quantizer's stages)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..dequant.train import dequant_stage
from ..errors import DcqError
from ..format.writer import remove_stale_temporaries
from ..pipeline.checkpoint import Checkpoints, file_settings, fingerprint
from ..pipeline.context import Conversion
from ..pipeline.distributed import Group, join
from ..pipeline.imaging import ImageCache
from ..pipeline.options import ConvertConfig
from ..pipeline.output import Row, Written, write_rows
from ..pipeline.progress import progress as progress_of
from ..pipeline.sources import Sizing, expand_braces, iter_images, open_source
from ..pipeline.summary import ConvertSummary, Stage, pick_device
from ..quantize import baselines
from ..quantize.attention import Dropper, mae_stage, shared_model
from ..quantize.autopalette import convert_autopalette
from ..quantize.dcq import convert_dcq, file_meta
from ..quantize.dither import dither
from ..select import select
from . import budget


def source_bytes(src: str) -> int | None:
    """Bytes of the files a source is made of (for the compression ratio), when known."""
    p = Path(src)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    files = [Path(f) for part in expand_braces(str(src)) for f in sorted(glob.glob(part)) or [part]]
    return sum(f.stat().st_size for f in files if f.is_file()) or None


def _source_bytes_read(src: Any, length: int | None, read: int, encoded: list[int | None],
                       limited: bool) -> int | None:
    """Bytes of the source that the conversion read: the whole source's files, or with ``--limit``
    the encoded images read (image files and shards), or the read share of an array file."""
    whole = source_bytes(str(src)) if isinstance(src, (str, os.PathLike)) else None
    if not limited:
        return whole
    if encoded and all(n is not None for n in encoded):
        return sum(n for n in encoded if n is not None)
    if whole is not None and length:
        return whole * read // length
    return None


def _load(src: Any, cfg: ConvertConfig, summary: ConvertSummary, progress: bool,
          group: Group) -> tuple[ImageCache, list[str], dict]:
    source = open_source(src)
    cache = ImageCache()
    limited, encoded = False, []  # whether --limit stopped the source early; encoded sizes read
    try:
        total = source.length if cfg.limit is None or source.length is None else min(cfg.limit, source.length)
        sizing = Sizing(cfg.resize, cfg.max_size, cfg.center_crop)
        share = (group.rank, group.world)
        if total is not None and group.distributed:
            total = len(range(group.rank, total, group.world))
        for item in progress_of(iter_images(source, cfg.channels, cfg.alpha, sizing, share), "load", total=total,
                                unit="img", enabled=progress):
            if cfg.limit is not None and (item.index if group.distributed else summary.samples_in) >= cfg.limit:
                limited = True
                break
            summary.samples_in += 1
            encoded.append(item.nbytes)
            if item.image is None:
                if cfg.on_error == "fail":
                    raise DcqError(f"sample {item.index} ({item.name}): {item.problem}")
                summary.problems.append((item.index, f"{item.name}: {item.problem or 'unreadable'}"))
                continue
            cache.add(item.image, item.label, item.index)
    except BaseException:
        cache.close()
        raise
    summary.reported = len(summary.problems)
    summary.source_bytes = _source_bytes_read(src, source.length, summary.samples_in, encoded, limited)
    classes = source.classes
    labels = [y for y in cache.labels if y >= 0]
    if not classes and labels:
        classes = [str(c) for c in range(max(labels) + 1)]
    where = str(src) if isinstance(src, (str, os.PathLike)) else f"{type(src).__module__}.{type(src).__name__}"
    return cache, classes, {"source": where, "kind": source.kind}


def convert(src: str | os.PathLike[str] | Any, dst: str | Path, cfg: ConvertConfig | None = None, progress: bool = True,
            samples_per_file: int | None = None, **options: Any) -> ConvertSummary:
    """Convert the dataset ``src`` (a path, see :func:`dcqformat.pipeline.sources.open_source`, or a map-style
    dataset of ``(image, label)``) into the .dcq file ``dst`` or, with ``samples_per_file``,
    into the dataset directory ``dst`` (part files of that many samples and a manifest, read as
    one by ``DCQDataset(dst)``).

    Settings come from ``cfg`` and/or keyword ``options`` (ConvertConfig's fields, e.g.
    ``bits=2, clusters=64``; options override ``cfg``); all are checked first.
    """
    cfg = ConvertConfig.from_dict({**(asdict(cfg) if cfg else {}), **options})
    group = join(cfg.device)
    if group.distributed:
        if cfg.keep < 1 or cfg.bytes_per_image is not None:
            raise DcqError("sample selection (--keep) and --bytes-per-image run in one process only")
        samples_per_file = samples_per_file or 1 << 40  # each rank writes its own part files
    if samples_per_file is not None and samples_per_file < 1:
        raise ValueError(f"samples_per_file must be >= 1, got {samples_per_file}")
    if samples_per_file is None and Path(dst).is_dir():
        raise DcqError(f"{dst}: the destination is a directory")
    if samples_per_file is not None and Path(dst).exists():
        raise DcqError(f"{dst} exists; a dataset directory is written only where nothing is")
    remove_stale_temporaries(dst)  # what a killed run of the same conversion left
    summary = ConvertSummary()
    device = pick_device(cfg.device)
    summary.device = str(device)
    torch.manual_seed(cfg.seed)
    progress = progress and group.leader
    with Stage(summary, "load"):
        cache, classes, provenance = _load(src, cfg, summary, progress, group)
    if group.sum(len(cache)) == 0:
        cache.close()
        raise DcqError(f"{src}: no readable image")
    if cfg.bytes_per_image is not None:
        cfg = _fit_budget(cache, cfg, summary)
    summary.config = cfg
    out = Path(dst)
    work: Path | None = Path(cfg.work_dir) if cfg.work_dir else out.parent / f".{out.name}.work"
    if group.distributed and work is not None:  # each rank keeps its stages in its own directory
        work = work / f"rank-{group.rank}-of-{group.world}"
    try:
        checkpoints = Checkpoints(work, fingerprint(cfg, cache) if work else "", cfg.resume, progress, group)
    except BaseException:
        cache.close()
        raise
    name = Path(str(src).rstrip("/")).stem if isinstance(src, (str, os.PathLike)) else type(src).__name__
    meta = {"name": name, "classes": classes, "color_space": "sRGB",
            "channels_from_source": "converted to " + ("grayscale" if cfg.channels == 1 else "RGB"),
            "alpha": cfg.alpha, "quantizer": {"name": cfg.method, "config": file_settings(cfg)},
            "provenance": {**provenance, "samples_in": summary.samples_in, "reported": summary.reported,
                           "problems": summary.problems[:100], "dcqformat": __version__,
                           "torch": torch.__version__, "device": str(device)}}
    positions, total = None, None
    if group.distributed:  # the global position of each image: its rank in the sorted source indices of all
        everyone = np.sort(np.concatenate(group.all_gather(np.asarray(cache.sources, np.int64))))
        positions, total = np.searchsorted(everyone, np.asarray(cache.sources, np.int64)), len(everyone)
    ctx = Conversion(cache, classes, cfg, device, summary, meta, progress, samples_per_file, checkpoints, group,
                     positions, total)
    try:
        if cfg.keep < 1:
            _select(ctx)
        if cfg.method == "dcq":
            summary.add(convert_dcq(ctx, dst))
        elif cfg.method.startswith("autopalette"):
            summary.add(convert_autopalette(ctx, dst))
        else:
            summary.add(_convert_baseline(ctx, dst))
    finally:
        ctx.cache.close()
    checkpoints.finish()
    if group.distributed:
        summary.samples_in, summary.written = group.sum(summary.samples_in), group.sum(summary.written)
        summary.raw_bytes = group.sum(summary.raw_bytes)
        summary.reported = group.sum(summary.reported)
    summary.file_bytes = sum(f.stat().st_size for f in out.iterdir()) if out.is_dir() else out.stat().st_size
    return summary


def _fit_budget(cache: ImageCache, cfg: ConvertConfig, summary: ConvertSummary) -> ConvertConfig:
    """The settings with the bits and codec that fit ``cfg.bytes_per_image`` (dcqformat.conversion.budget)."""
    assert cfg.bytes_per_image is not None
    with Stage(summary, "byte budget"):
        try:
            pick = budget.choose(budget.estimates(cache, cfg), cfg.bytes_per_image)
        except BaseException:
            cache.close()
            raise
    summary.budget = (f"{cfg.bytes_per_image:g} B/image: {pick.bits} bits, codec {pick.codec} "
                      f"(estimated {pick.bytes_per_image:.0f} B/image on a sample)")
    return replace(cfg, bits=pick.bits, codec=pick.codec)


def _select(ctx: Conversion) -> None:
    """Keep ``cfg.keep`` of each class (dcqformat.select): the context's cache becomes the kept
    images (the full cache is closed) and its metadata records the selection."""
    cache, cfg, device, summary, progress = ctx.cache, ctx.cfg, ctx.device, ctx.summary, ctx.progress
    model = shared_model(ctx) if cfg.select != "random" else None
    with Stage(summary, f"selection ({cfg.select})"):
        chosen, report = select(cache, model, method=cfg.select, keep=cfg.keep, bins=cfg.bins,
                                features=cfg.select_features, alpha=cfg.adq_alpha, bits=cfg.bits,
                                size=cfg.model_size, device=device, batch=cfg.batch, seed=cfg.seed, progress=progress)
        subset = cache.subset(chosen)
    summary.raw_bytes_in = sum(h * w * cfg.channels for h, w, *_ in map(cache.shape, range(len(cache))))
    cache.close()
    ctx.cache = subset
    ctx.meta["selection"] = report


def _convert_baseline(ctx: Conversion, dst: str | Path) -> Written:
    """A per-image quantizer (MedianCut, octree, k-means) over the cached images, written to ``dst``."""
    cache, cfg, summary, progress = ctx.cache, ctx.cfg, ctx.summary, ctx.progress

    def quantize(i: int, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if cfg.method == "kmeans":
            idx, pal = baselines.kmeans_image(img, cfg.bits, cfg.seed + i)
        else:
            idx, pal = baselines.pillow(img, cfg.bits, cfg.method)
        if cfg.dither:
            idx = dither(img[None], pal[None])[0]
        return idx, pal

    dropper = Dropper(ctx)
    def colours(chunk: np.ndarray, images: list[np.ndarray]) -> list[np.ndarray]:
        return [pal[idx] for idx, pal in map(quantize, chunk.tolist(), images)]

    mae = mae_stage(ctx, colours, dropper)
    deq = dequant_stage(ctx, colours)

    def rows(start: int) -> Iterator[Row]:
        for chunk, images in progress_of(cache.batches(cfg.batch, start=start), cfg.method,
                                         total=-(-(len(cache) - start) // cfg.batch), unit="batches", enabled=progress):
            for i, img, dropped in zip(chunk.tolist(), images, dropper.masks(chunk, images)):
                idx, pal = quantize(i, img)
                yield idx, pal, cache.labels[i], cache.sources[i], dropped

    with Stage(summary, "quantize + write"):
        written = write_rows(dst, cfg, file_meta(ctx, dropper, mae, None, deq), None, rows, dropper.patch,
                             mae.weights if mae else None, ctx.samples_per_file, ctx.group,
                             ctx.checkpoints.parts(Path(dst)), progress, deq.weights if deq else None)
    written.mae = mae.report if mae else {}
    return written


__all__ = ["ConvertConfig", "ConvertSummary", "convert"]
