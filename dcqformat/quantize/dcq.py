"""DCQ: shared cluster palettes chosen per image, attention-guided and texture-preserving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..dequant.train import DequantOutcome, dequant_stage
from ..pipeline.checkpoint import rng_state, set_rng_state
from ..pipeline.context import Conversion
from ..pipeline.distributed import gather_rows
from ..pipeline.imaging import as_rgb, model_input, shrink
from ..pipeline.output import Row, Written, write_rows
from ..pipeline.progress import progress as progress_of
from ..pipeline.summary import Stage
from .attention import Dropper, MaeOutcome, grad_cams, mae_stage, shared_model
from .color import srgb_to_lab, unweighted, weighted
from .corrections import correct, own_palette
from .dither import dither
from .kmeans import kmeans
from .palette import assign, refine_palette, to_uint8, top_pixels
from .reassign import best_palettes, lloyd

REFINE_PIXELS = 160 * 160  # texture refinement sees each image at most this large: bounded cost per image


def convert_dcq(ctx: Conversion, dst: str | Path) -> Written:
    """The DCQ pipeline on the cached images, written to ``dst`` (stages 1-7 below); returns what
    was written. What the pipeline learns goes into the file's metadata (``quantizer``)."""
    cache, cfg, device, summary, progress = ctx.cache, ctx.cfg, ctx.device, ctx.summary, ctx.progress
    learned: dict[str, Any] = {}  # the file's quantizer metadata that this stage adds
    n = len(cache)
    rng = np.random.default_rng(cfg.seed)
    # 1. The attention / feature model (its training sample drawn from this stage's generator).
    model = shared_model(ctx, rng)
    ck = ctx.checkpoints
    if ck.has("palettes"):  # a resumed conversion: stages 2-6 of the killed run
        arrays, info = ck.load("palettes")
        palettes_lab, learned = torch.from_numpy(arrays["palettes_lab"]), info["learned"]
        set_rng_state(rng, info["rng"])
    else:
        if ck.has("clusters"):
            arrays, info = ck.load("clusters")
            cluster, k, learned = arrays["cluster"], int(info["k"]), info["learned"]
            set_rng_state(rng, info["rng"])
        else:
            cluster, k = _clusters(ctx, model, rng, learned)
            ck.save("clusters", {"cluster": cluster}, {"k": k, "learned": learned, "rng": rng_state(rng)})
        palettes_lab = _palettes(ctx, model, rng, cluster, k, learned)
        ck.save("palettes", {"palettes_lab": palettes_lab.numpy()}, {"learned": learned, "rng": rng_state(rng)})
    palettes = to_uint8(palettes_lab)  # (k, K, 3)
    stored = palettes.numpy() if cfg.channels == 3 else palettes.numpy()[:, :, :1]
    stored_w = weighted(srgb_to_lab(palettes.float().to(device) / 255))

    # 7. Every image takes the stored palette that reconstructs it best; every pixel its
    #    nearest colour in it; streamed in batches and written (with drop masks and the MAE).
    #    With palette corrections, each image's palette is then refined to it (PCOR).
    step = cfg.palette_corrections

    def quantize(images: list[np.ndarray]) -> list[tuple[np.ndarray, int, np.ndarray | None]]:
        assigned = assign_shared(images, palettes, stored_w, device, cfg.dither)
        if step:
            return correct(images, assigned, stored, step, cfg.dither, device)
        return [(idx, int(pid), None) for idx, pid in assigned]

    dropper = Dropper(ctx)
    def colours(chunk: np.ndarray, images: list[np.ndarray]) -> list[np.ndarray]:
        return [own_palette(stored[pid], delta, step)[idx] for idx, pid, delta in quantize(images)]

    mae = mae_stage(ctx, colours, dropper)
    deq = dequant_stage(ctx, colours)

    def rows(start: int) -> Iterator[Row]:
        for chunk, images in progress_of(cache.batches(cfg.batch, start=start), "assign + write",
                                         total=-(-(n - start) // cfg.batch), unit="batches", enabled=progress):
            for i, (idx, pid, delta), dropped in zip(chunk.tolist(), quantize(images), dropper.masks(chunk, images)):
                yield idx, pid if delta is None else (pid, delta), cache.labels[i], cache.sources[i], dropped

    meta = file_meta(ctx, dropper, mae, learned, deq)
    with Stage(summary, "assign + write"):
        written = write_rows(dst, cfg, meta, stored, rows, dropper.patch, mae.weights if mae else None,
                             ctx.samples_per_file, ctx.group, ctx.checkpoints.parts(Path(dst)), progress,
                             deq.weights if deq else None)
    written.mae = mae.report if mae else {}
    return written


def _clusters(ctx: Conversion, model: torch.nn.Module, rng: np.random.Generator,
              learned: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Stages 2-3: the cluster of every image of the dataset (global positions), and how many
    clusters. Each rank computes its images' features; rank 0 clusters them all."""
    cache, cfg, device, summary, progress = ctx.cache, ctx.cfg, ctx.device, ctx.summary, ctx.progress
    group, total = ctx.group, ctx.total
    n = len(cache)
    # 2. Clustering features of every image, forward only: the model's shallow features
    #    (N x 32), LAB colour statistics (N x 12), or both (each standardised).
    parts = []
    with Stage(summary, "features"), torch.no_grad():
        for _, images in progress_of(cache.batches(cfg.batch), "features", total=-(-n // cfg.batch),
                                     unit="batches", enabled=progress):
            cols = []
            if cfg.cluster_features in ("shallow", "both"):
                _, shallow, _ = model(model_input(images, cfg.model_size).to(device), keep=True)
                cols.append(shallow.mean((2, 3)).cpu())
            if cfg.cluster_features in ("lab", "both"):
                cols.append(torch.stack([lab_statistics(im) for im in images]))
            parts.append(torch.cat(cols, 1).numpy())
    feats = gather_rows(group, ctx.positions, np.concatenate(parts).astype(np.float32), total)
    del parts
    # 3. Clusters of shallow features (k-means++; fitted on at most 50k images), on rank 0.
    with Stage(summary, "clustering"):
        fit = rng.choice(total, min(total, 50_000), replace=False)  # every rank draws: generators stay equal
        result = None
        if feats is not None:
            f = torch.from_numpy(feats)
            f = (f - f.mean(0)) / f.std(0).clamp(min=1e-6)
            centres, _ = kmeans(f[fit].to(device), cfg.clusters, seed=cfg.seed)
            result = (torch.cdist(f.to(device), centres).argmin(1).cpu().numpy(), len(centres))
            del feats, f
        cluster, k = group.broadcast(result)
    learned["cluster_sizes"] = np.bincount(cluster, minlength=k).tolist()
    return cluster, k


def _pools(ctx: Conversion, model: torch.nn.Module, rng: np.random.Generator,
           sample: np.ndarray) -> torch.Tensor | None:
    """Stage 4: ``sample_pixels`` attended pixels (weighted LAB) of each sampled image (global
    positions ``sample``), drawn from its top ``attention_fraction`` Grad-CAM++ pixels for its
    true label; all of them on rank 0, None on the others."""
    cache, cfg, device, summary, progress = ctx.cache, ctx.cfg, ctx.device, ctx.summary, ctx.progress
    group = ctx.group
    mine = np.flatnonzero(np.isin(ctx.positions, sample))  # local images in the sample, in position order
    labels = np.array(cache.labels)
    rows = np.zeros((len(mine), cfg.sample_pixels, 3), np.float32)
    with Stage(summary, "Grad-CAM++ + pools"):
        pos = 0
        for chunk, images in progress_of(cache.batches(cfg.batch, mine), "grad-cam++",
                                         total=-(-len(mine) // cfg.batch), unit="batches", enabled=progress):
            for i, img, cam in zip(chunk.tolist(), images, grad_cams(model, images, labels[chunk], cfg, device)):
                px = top_pixels(torch.from_numpy(as_rgb(img, None))[None], cam[None], cfg.attention_fraction)[0]
                # one process draws in sample order; ranks draw per image, from (seed, position)
                draw = np.random.default_rng([cfg.seed, int(ctx.positions[i])]) if group.distributed else rng
                pick = torch.from_numpy(draw.choice(len(px), cfg.sample_pixels, replace=len(px) < cfg.sample_pixels))
                rows[pos] = weighted(srgb_to_lab(px[pick])).numpy()
                pos += 1
    pooled = gather_rows(group, np.searchsorted(sample, ctx.positions[mine]), rows, len(sample))
    return None if pooled is None else torch.from_numpy(pooled)


def _palettes(ctx: Conversion, model: torch.nn.Module, rng: np.random.Generator, cluster: np.ndarray, k: int,
              learned: dict[str, Any]) -> torch.Tensor:
    """Stages 4-6: the (k, 2**bits, 3) LAB palettes from attended pixels, Lloyd rounds and
    refinement: fitted on rank 0 from what every rank gathered, then broadcast."""
    cfg, device, summary, progress, group = ctx.cfg, ctx.device, ctx.summary, ctx.progress, ctx.group
    colours = 1 << cfg.bits
    sample = np.sort(rng.choice(ctx.total, min(ctx.total, cfg.pool_images), replace=False))
    pixels = _pools(ctx, model, rng, sample)
    # 5. Palettes: LAB k-means of each feature cluster's pooled pixels, then Lloyd rounds in
    #    which every sampled image chooses the palette that reconstructs it best and each
    #    palette is refitted to the images that chose it (see reassign.py).
    needed: list[np.ndarray] = []
    palettes_lab = torch.zeros(0)
    if pixels is not None:
        with Stage(summary, "palettes"):
            pixels = pixels.to(device)
            member = torch.from_numpy(cluster[sample]).to(device)
            palettes_w = torch.zeros(k, colours, 3, device=device)
            everyone, _ = kmeans(pixels.reshape(-1, 3)[: cfg.pool_pixels], colours, seed=cfg.seed)
            for c in range(k):
                own = pixels[member == c].reshape(-1, 3)[: cfg.pool_pixels]
                palettes_w[c] = _pad(kmeans(own, colours, seed=cfg.seed + c)[0] if len(own) else everyone, colours)
            palettes_w, chosen, history = lloyd(pixels, palettes_w, rounds=cfg.reassign, max_pixels=cfg.pool_pixels,
                                                seed=cfg.seed)
            palettes_lab = unweighted(palettes_w).cpu()
            chosen_ids = chosen.cpu().numpy()
            del pixels
        learned["reassignment"] = {"mean_error_per_round": [round(e, 3) for e in history]}
        # 6. Texture-preserving refinement of each palette on a few of the sampled images that chose it.
        for c in range(k):
            members = sample[chosen_ids == c]
            needed.append(rng.choice(members, min(len(members), cfg.refine_images), replace=False)
                          if cfg.refine_steps and len(members) else np.zeros(0, np.int64))
    # Each rank refines the palettes c = rank (mod world) on images gathered from every rank.
    needed, palettes_lab, shared, state = group.broadcast(
        (needed, palettes_lab, learned, rng_state(rng)) if group.leader else None)
    learned.update(shared)
    set_rng_state(rng, state)
    images = _fetch(ctx, needed)
    refined = {}
    with Stage(summary, "texture refinement"):
        for c in progress_of(range(group.rank, k, group.world), "refine", total=len(range(group.rank, k, group.world)),
                             unit="palettes", enabled=progress and cfg.refine_steps > 0):
            if len(needed[c]) == 0:
                continue
            first = images[int(needed[c][0])].shape[:2]
            imgs = torch.from_numpy(np.stack([images[int(i)] for i in needed[c] if images[int(i)].shape[:2] == first]))
            pal, log = refine_palette(imgs.to(device), palettes_lab[c].to(device), steps=cfg.refine_steps,
                                      fidelity=cfg.fidelity)
            refined[c] = (pal.cpu(), log)
    for part in group.all_gather(refined):
        for c, (pal, _) in part.items():
            palettes_lab[c] = pal
        refined.update(part)
    logs = [refined[c][1] for c in sorted(refined)]
    learned["refinement"] = {
        "mean_loss_before": float(np.mean([r["loss_before"] for r in logs])) if logs else None,
        "mean_loss_after": float(np.mean([r["loss_after"] for r in logs])) if logs else None}
    return palettes_lab


def _fetch(ctx: Conversion, wanted: list[np.ndarray]) -> dict[int, np.ndarray]:
    """The refinement images at the global positions ``wanted`` (RGB, at most REFINE_PIXELS
    each), from whichever rank holds them, on every rank."""
    flat = np.unique(np.concatenate(wanted)) if wanted else np.zeros(0, np.int64)
    local = np.flatnonzero(np.isin(ctx.positions, flat))
    mine = {int(ctx.positions[i]): shrink(as_rgb(ctx.cache.image(int(i)), None), REFINE_PIXELS) for i in local}
    if not ctx.group.distributed:
        return mine
    out: dict[int, np.ndarray] = {}
    for part in ctx.group.all_gather(mine):
        out.update(part)
    return out


def assign_shared(images: list[np.ndarray], palettes: torch.Tensor, palettes_w: torch.Tensor, device: torch.device,
                  dithered: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(indices, palette id)`` of each image: the shared palette (of ``palettes`` (P, K, 3) uint8
    on the CPU, ``palettes_w`` the same in weighted LAB on ``device``) that reconstructs its
    choice pixels best, and each pixel's nearest colour in it (Floyd-Steinberg when ``dithered``).
    Images of one size go as one batch."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    shapes = {im.shape for im in images}
    for group in [images] if len(shapes) == 1 else [[im] for im in images]:
        rgb = torch.from_numpy(np.stack([as_rgb(im, None) for im in group])).to(device)
        ids = best_palettes(choice_pixels(rgb), palettes_w)
        if dithered:
            idx = dither(rgb.cpu().numpy(), palettes.numpy()[ids.cpu().numpy()])
        else:
            idx = assign(rgb, palettes.to(device), ids).cpu().numpy()
        out += zip(idx, ids.cpu().numpy())
    return out


def choice_pixels(rgb: torch.Tensor, most: int = 64) -> torch.Tensor:
    """Evenly spaced pixels (at most ``most``) of (N, H, W, 3) uint8 images, in weighted LAB."""
    flat = rgb.flatten(1, 2)
    n, k = flat.shape[1], min(most, flat.shape[1])
    # round(i * (n - 1) / (k - 1)) in integers: float32 positions go past the end above 2**24 pixels
    pick = (2 * torch.arange(k, device=rgb.device) * (n - 1) + (k - 1)) // max(2 * (k - 1), 1)
    return weighted(srgb_to_lab(flat[:, pick].float() / 255))


def lab_statistics(image: np.ndarray) -> torch.Tensor:
    """Colour statistics of an image: LAB mean, standard deviation and 10/50/90% lightness
    quantiles, plus the 10/90% quantiles of a and b (12 values)."""
    rgb = torch.from_numpy(as_rgb(image, None)).reshape(-1, 3).float() / 255
    lab = srgb_to_lab(rgb)
    q = torch.quantile(lab, torch.tensor([0.1, 0.5, 0.9]), dim=0)  # (3, 3)
    return torch.cat([lab.mean(0), lab.std(0), q[:, 0], q[0, 1:], q[2, 1:]])


def _pad(palette: torch.Tensor, colours: int) -> torch.Tensor:
    if len(palette) < colours:
        palette = torch.cat([palette, palette[-1:].repeat(colours - len(palette), 1)])
    return palette


def file_meta(ctx: Conversion, dropper: Dropper, mae: MaeOutcome | None,
              learned: dict[str, Any] | None = None, deq: DequantOutcome | None = None) -> dict[str, Any]:
    """The file's metadata: the context's, plus what the stages learned (``quantizer`` additions,
    ``drop``, ``mae``, ``dequantizer``); the context's own dict is left as it is."""
    meta = {**ctx.meta, "quantizer": {**ctx.meta["quantizer"], **(learned or {})}}
    if dropper.info is not None:
        meta["drop"] = dropper.info
    if mae is not None:
        meta["mae"] = mae.meta
    if deq is not None:
        meta["dequantizer"] = deq.meta
    return meta
