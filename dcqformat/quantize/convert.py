"""``dcq convert``: a dataset in, a .dcq file out, through DCQ or a per-image baseline."""

from __future__ import annotations

import glob
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from ..errors import DcqError
from ..sources import iter_images, open_source
from ..writer import DcqWriter
from . import baselines
from .cache import ImageCache
from .color import srgb_to_lab, unweighted, weighted
from .drop import drop_mask, native_patch
from .gradcam import gradcam_pp
from .kmeans import kmeans
from .model import AttentionNet, load_model, to_input, train_attention
from .palette import assign, refine_palette, to_uint8, top_pixels
from .reassign import best_palettes, lloyd

METHODS = ("dcq", "mediancut", "octree", "kmeans")


@dataclass
class ConvertConfig:
    """Every setting of a conversion; recorded in the file's metadata."""

    method: str = "dcq"
    bits: int = 2
    clusters: int = 256
    cluster_features: str = "shallow"  # shallow (CNN), lab (colour statistics) or both
    attention_fraction: float = 0.5
    model_epochs: int = 8
    model_size: int = 32
    model_images: int = 10000
    model: str | None = None
    pool_images: int = 20000
    sample_pixels: int = 32
    pool_pixels: int = 200_000
    reassign: int = 4
    refine_steps: int = 10
    refine_images: int = 8
    fidelity: float = 1.0
    drop_patches: float = 0.0
    patch_size: int | None = None  # None: native to the image size (drop.native_patch)
    mae: str | None = None  # reuse the MAE of a .dcq file or a .safetensors checkpoint
    mae_epochs: int = 30
    mae_images: int = 10000
    mae_seconds: float | None = None  # None: 240 s on a CPU, no limit on a GPU
    codec: str = "packed"
    channels: int = 3
    alpha: str = "drop"
    on_error: str = "skip"
    limit: int | None = None
    seed: int = 0
    device: str = "auto"
    batch: int = 256


@dataclass
class ConvertSummary:
    samples_in: int = 0
    written: int = 0
    reported: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    file_bytes: int = 0
    raw_bytes: int = 0
    source_bytes: int | None = None
    device: str = ""
    model: dict = field(default_factory=dict)
    mae: dict = field(default_factory=dict)

    def table(self, cfg: ConvertConfig) -> str:
        rows = [("samples in", f"{self.samples_in:,}"), ("written", f"{self.written:,}"),
                ("reported (unreadable)", f"{self.reported:,}"), ("method", cfg.method),
                ("bits", str(cfg.bits)), ("clusters", str(cfg.clusters) if cfg.method == "dcq" else "per image"),
                ("device", self.device), ("file bytes", f"{self.file_bytes:,}"),
                ("bytes / image", f"{self.file_bytes / max(self.written, 1):,.1f}"),
                ("x smaller than raw uint8", f"{self.raw_bytes / max(self.file_bytes, 1):.1f}")]
        if self.mae:
            rows.append(("MAE", f"{self.mae['steps']} steps on {self.mae['images']:,} images, {self.mae['device']}"
                         + (" (stopped by its time limit)" if self.mae["stopped_by_time"] else "")))
        if self.source_bytes:
            rows.append(("x smaller than the source files", f"{self.source_bytes / max(self.file_bytes, 1):.2f}"))
        rows += [(f"time: {k}", f"{v:.1f} s") for k, v in self.stages.items()]
        rows.append(("time: total", f"{sum(self.stages.values()):.1f} s"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def source_bytes(src: str) -> int | None:
    """Bytes of the files a source is made of (for the compression ratio), when known."""
    from ..sources import expand_braces

    p = Path(src)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    files = [Path(f) for part in expand_braces(str(src)) for f in sorted(glob.glob(part)) or [part]]
    return sum(f.stat().st_size for f in files if f.is_file()) or None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Stage:
    def __init__(self, summary: ConvertSummary, name: str) -> None:
        self.summary, self.name = summary, name

    def __enter__(self) -> None:
        self.t = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.summary.stages[self.name] = self.summary.stages.get(self.name, 0.0) + time.perf_counter() - self.t


def _load(src: str, cfg: ConvertConfig, summary: ConvertSummary, progress: bool) -> tuple[ImageCache, list[str], dict]:
    source = open_source(src)
    summary.source_bytes = source_bytes(src)
    cache = ImageCache()
    try:
        with tqdm(desc="load", unit="img", total=source.length, disable=not progress) as bar:
            for item in iter_images(source, cfg.channels, cfg.alpha):
                if cfg.limit is not None and summary.samples_in >= cfg.limit:
                    break
                summary.samples_in += 1
                bar.update()
                if item.image is None:
                    if cfg.on_error == "fail":
                        raise DcqError(f"sample {item.index}: {item.problem}")
                    summary.problems.append((item.index, item.problem or "unreadable"))
                    continue
                cache.add(item.image, item.label, item.index)
    except BaseException:
        cache.close()
        raise
    summary.reported = len(summary.problems)
    classes = source.classes
    labels = [y for y in cache.labels if y >= 0]
    if not classes and labels:
        classes = [str(c) for c in range(max(labels) + 1)]
    return cache, classes, {"source": str(src), "kind": source.kind}


def convert(src: str, dst: str | Path, cfg: ConvertConfig | None = None, progress: bool = True) -> ConvertSummary:
    """Convert the dataset at ``src`` into the .dcq file ``dst``."""
    cfg = cfg or ConvertConfig()
    if cfg.method not in METHODS:
        raise DcqError(f"method must be one of {METHODS}, got {cfg.method!r}")
    if not 1 <= cfg.bits <= 8:
        raise DcqError(f"bits must be 1..8, got {cfg.bits}")
    if cfg.cluster_features not in ("shallow", "lab", "both"):
        raise DcqError(f"cluster_features must be shallow, lab or both, got {cfg.cluster_features!r}")
    if not 0.0 <= cfg.drop_patches < 1.0:
        raise DcqError(f"drop_patches must be in [0, 1), got {cfg.drop_patches}")
    summary = ConvertSummary()
    device = pick_device(cfg.device)
    summary.device = str(device)
    torch.manual_seed(cfg.seed)
    with _Stage(summary, "load"):
        cache, classes, provenance = _load(src, cfg, summary, progress)
    if len(cache) == 0:
        raise DcqError(f"{src}: no readable image")
    try:
        meta = {"name": Path(str(src).rstrip("/")).stem, "classes": classes, "color_space": "sRGB",
                "channels_from_source": "converted to " + ("grayscale" if cfg.channels == 1 else "RGB"),
                "alpha": cfg.alpha, "quantizer": {"name": cfg.method, "config": asdict(cfg)},
                "provenance": {**provenance, "samples_in": summary.samples_in, "reported": summary.reported,
                               "problems": summary.problems[:100], "dcqformat": __version__,
                               "torch": torch.__version__, "device": str(device)}}
        if cfg.method == "dcq":
            _convert_dcq(cache, classes, cfg, device, summary, meta, dst, progress)
        else:
            _convert_baseline(cache, classes, cfg, device, summary, meta, dst, progress)
    finally:
        cache.close()
    summary.file_bytes = Path(dst).stat().st_size
    return summary


def _write(dst, cfg, meta, palettes, summary, rows, patch=None, weights=None):  # type: ignore[no-untyped-def]
    with DcqWriter(dst, bits=cfg.bits, channels=cfg.channels, palettes=palettes, codec=cfg.codec, meta=meta,
                   patch_size=patch) as w:
        for idx, pal, label, src_index, dropped in rows:
            pid = pal if isinstance(pal, int) else w.add_palette(pal)
            w.add(idx, palette=pid, label=label, source_index=src_index, dropped=dropped)
            summary.written += 1
            summary.raw_bytes += idx.size * cfg.channels
        if weights is not None:
            w.set_weights(weights)


def _convert_baseline(cache, classes, cfg, device, summary, meta, dst, progress):  # type: ignore[no-untyped-def]
    def quantize(i: int, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if cfg.method == "kmeans":
            return baselines.kmeans_image(img, cfg.bits, cfg.seed + i)
        return baselines.pillow(img, cfg.bits, cfg.method)

    dropper = _Dropper(cache, classes, cfg, device, summary, meta, progress)
    weights = _mae_stage(cache, cfg, device, summary, meta, progress,
                         lambda chunk, images: [pal[idx] for idx, pal in map(quantize, chunk.tolist(), images)])

    def rows():  # type: ignore[no-untyped-def]
        for chunk, images in tqdm(cache.batches(cfg.batch), total=-(-len(cache) // cfg.batch), desc=cfg.method,
                                  unit="img", disable=not progress):
            for i, img, dropped in zip(chunk.tolist(), images, dropper.masks(chunk, images)):
                idx, pal = quantize(i, img)
                yield idx, pal, cache.labels[i], cache.sources[i], dropped

    with _Stage(summary, "quantize + write"):
        _write(dst, cfg, meta, None, summary, rows(), dropper.patch, weights)


def _model_input(images: list[np.ndarray], size: int) -> torch.Tensor:
    rgb = [im if im.shape[2] == 3 else im.repeat(3, 2) for im in images]
    if len({im.shape for im in rgb}) == 1:
        return to_input(torch.from_numpy(np.stack(rgb)), size)
    return torch.cat([to_input(torch.from_numpy(im)[None], size) for im in rgb])


def _attention_model(cache, labels, n_classes, cfg, device, summary, meta, rng):  # type: ignore[no-untyped-def]
    """The user's checkpoint, or a small CNN trained on (a bounded sample of) the source."""
    with _Stage(summary, "attention model"):
        if cfg.model:
            model = load_model(cfg.model, device)
            summary.model = {"checkpoint": cfg.model}
        else:
            n = len(cache)
            pick = np.sort(rng.choice(n, min(n, cfg.model_images), replace=False))
            train_x = np.stack([_as_rgb(cache.image(int(i)), cfg.model_size) for i in pick])
            train_y = np.where(labels[pick] >= 0, labels[pick], 0)
            model, report = train_attention(train_x, train_y, n_classes, epochs=cfg.model_epochs,
                                            size=cfg.model_size, device=device, seed=cfg.seed)
            summary.model = asdict(report)
    # Timings stay in the summary: a file's bytes depend on the data, the config and the seed only.
    meta["quantizer"]["attention_model"] = {k: v for k, v in summary.model.items() if k != "seconds"}
    return model


class _Dropper:
    """Drop masks (when ``cfg.drop_patches`` > 0): the patches of least Grad-CAM++ attention."""

    def __init__(self, cache, classes, cfg, device, summary, meta, model=None):  # type: ignore[no-untyped-def]
        self.cache, self.cfg, self.device, self.model, self.patch = cache, cfg, device, model, None
        if cfg.drop_patches <= 0:
            return
        shapes = np.array([cache.shape(i)[:2] for i in range(len(cache))])
        self.patch = cfg.patch_size or native_patch(int(np.median(shapes[:, 0])), int(np.median(shapes[:, 1])))
        if self.model is None:
            labels = np.array(cache.labels)
            n_classes = max(len(classes), int(labels.max()) + 1, 1)
            self.model = _attention_model(cache, labels, n_classes, cfg, device, summary, meta,
                                          np.random.default_rng(cfg.seed))
        meta["drop"] = {"fraction": cfg.drop_patches, "patch": self.patch,
                        "importance": "mean Grad-CAM++ attention of the patch, for the true label"}

    def masks(self, chunk: np.ndarray, images: list[np.ndarray]) -> list[np.ndarray | None]:
        if self.patch is None:
            return [None] * len(images)
        labels = np.array(self.cache.labels)[chunk]
        cams = _cams(self.model, images, labels, self.cfg, self.device)
        return [drop_mask(cam, self.patch, self.cfg.drop_patches) for cam in cams]


def _mae_stage(cache, cfg, device, summary, meta, progress, quantize):  # type: ignore[no-untyped-def]
    """The MAE that refills dropped patches, as safetensors bytes (None without dropping):
    ``cfg.mae`` reused, or one trained on quantized images (``quantize(chunk, images)``) of
    the most common size, a bounded random sample of them."""
    if cfg.drop_patches <= 0:
        return None
    from ..mae import MAEConfig, load_mae, mae_to_bytes, train_mae

    with _Stage(summary, "MAE"):
        if cfg.mae:
            model = load_mae(cfg.mae, device)
            meta["mae"] = {"config": model.config.to_dict(), "from": str(cfg.mae)}
            return mae_to_bytes(model)
        shapes = [cache.shape(i) for i in range(len(cache))]
        common = max(set(shapes), key=shapes.count)
        rng = np.random.default_rng(cfg.seed + 7)
        pool = np.flatnonzero([s == common for s in shapes])
        pick = np.sort(rng.choice(pool, min(len(pool), cfg.mae_images), replace=False))
        quantized = np.stack([q for chunk, images in cache.batches(cfg.batch, pick) for q in quantize(chunk, images)])
        seconds = cfg.mae_seconds if cfg.mae_seconds is not None else (240.0 if device.type == "cpu" else None)
        config = MAEConfig(patch=cfg.patch_size or native_patch(*common[:2]), channels=common[2])
        model, report = train_mae(quantized, cfg.drop_patches, config, epochs=cfg.mae_epochs, seconds=seconds,
                                  device=device, seed=cfg.seed)
        summary.mae = asdict(report)
        if progress and report.stopped_by_time:
            tqdm.write(f"MAE training stopped by its time limit ({seconds:.0f} s) after {report.steps} of "
                       f"{report.steps_planned} steps")
    meta["mae"] = {"config": config.to_dict(), "trained_on": "quantized images, random masking at the drop ratio",
                   **{k: v for k, v in asdict(report).items() if k not in ("seconds", "device")}}
    return mae_to_bytes(model)


def _convert_dcq(cache, classes, cfg, device, summary, meta, dst, progress):  # type: ignore[no-untyped-def]
    n = len(cache)
    rng = np.random.default_rng(cfg.seed)
    labels = np.array(cache.labels)
    n_classes = max(len(classes), int(labels.max()) + 1 if len(labels) else 1, 1)
    # 1. The attention / feature model.
    model = _attention_model(cache, labels, n_classes, cfg, device, summary, meta, rng)
    # 2. Clustering features of every image, forward only: the model's shallow features
    #    (N x 32), LAB colour statistics (N x 12), or both (each standardised).
    parts = []
    with _Stage(summary, "features"), torch.no_grad():
        for _, images in tqdm(cache.batches(cfg.batch), total=-(-n // cfg.batch), desc="features",
                                  disable=not progress):
            cols = []
            if cfg.cluster_features in ("shallow", "both"):
                _, shallow, _ = model(_model_input(images, cfg.model_size).to(device), keep=True)
                cols.append(shallow.mean((2, 3)).cpu())
            if cfg.cluster_features in ("lab", "both"):
                cols.append(torch.stack([lab_statistics(im) for im in images]))
            parts.append(torch.cat(cols, 1).numpy())
    feats = np.concatenate(parts).astype(np.float32)
    del parts
    # 3. Clusters of shallow features (k-means++; fitted on at most 50k images).
    with _Stage(summary, "clustering"):
        fit = rng.choice(n, min(n, 50_000), replace=False)
        f = torch.from_numpy(feats)
        f = (f - f.mean(0)) / f.std(0).clamp(min=1e-6)
        centres, _ = kmeans(f[fit].to(device), cfg.clusters, seed=cfg.seed)
        cluster = torch.cdist(f.to(device), centres).argmin(1).cpu().numpy()
        del feats, f
    meta["quantizer"]["cluster_sizes"] = np.bincount(cluster, minlength=len(centres)).tolist()
    # 4. Attention-guided pixels: Grad-CAM++ for the true label on a bounded random sample of
    #    images; of each, ``sample_pixels`` drawn from its top ``attention_fraction`` pixels.
    colours = 1 << cfg.bits
    k = len(centres)
    sample = np.sort(rng.choice(n, min(n, cfg.pool_images), replace=False))
    pixels = torch.zeros(len(sample), cfg.sample_pixels, 3)
    with _Stage(summary, "Grad-CAM++ + pools"):
        pos = 0
        for chunk, images in tqdm(cache.batches(cfg.batch, sample), total=-(-len(sample) // cfg.batch),
                                  desc="grad-cam++", disable=not progress):
            for img, cam in zip(images, _cams(model, images, labels[chunk], cfg, device)):
                px = top_pixels(torch.from_numpy(_as_rgb(img, None))[None], cam[None], cfg.attention_fraction)[0]
                pick = torch.from_numpy(rng.choice(len(px), cfg.sample_pixels, replace=len(px) < cfg.sample_pixels))
                pixels[pos] = weighted(srgb_to_lab(px[pick]))
                pos += 1
    # 5. Palettes: LAB k-means of each feature cluster's pooled pixels, then Lloyd rounds in
    #    which every sampled image chooses the palette that reconstructs it best and each
    #    palette is refitted to the images that chose it (see reassign.py).
    with _Stage(summary, "palettes"):
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
        chosen = chosen.cpu().numpy()
        del pixels
    meta["quantizer"]["reassignment"] = {"mean_error_per_round": [round(e, 3) for e in history]}
    # 6. Texture-preserving refinement of each palette on a few of the sampled images that chose it.
    refine_log = []
    with _Stage(summary, "texture refinement"):
        for c in tqdm(range(k), desc="refine", disable=not progress or cfg.refine_steps == 0):
            members = sample[chosen == c]
            if cfg.refine_steps == 0 or len(members) == 0:
                continue
            pick = rng.choice(members, min(len(members), cfg.refine_images), replace=False)
            imgs = torch.from_numpy(np.stack([_as_rgb(cache.image(int(i)), None) for i in pick
                                              if cache.shape(int(i))[:2] == cache.shape(int(pick[0]))[:2]]))
            palettes_lab[c], log = refine_palette(imgs.to(device), palettes_lab[c].to(device),
                                                  steps=cfg.refine_steps, fidelity=cfg.fidelity)
            palettes_lab[c] = palettes_lab[c].cpu()
            refine_log.append(log)
    meta["quantizer"]["refinement"] = {
        "mean_loss_before": float(np.mean([r["loss_before"] for r in refine_log])) if refine_log else None,
        "mean_loss_after": float(np.mean([r["loss_after"] for r in refine_log])) if refine_log else None}
    palettes = to_uint8(palettes_lab)  # (k, K, 3)
    stored = palettes.numpy() if cfg.channels == 3 else palettes.numpy()[:, :, :1]
    stored_w = weighted(srgb_to_lab(palettes.float().to(device) / 255))

    # 7. Every image takes the stored palette that reconstructs it best; every pixel its
    #    nearest colour in it; streamed in batches and written (with drop masks and the MAE).
    def quantize(images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        shapes = {im.shape for im in images}
        for group in [images] if len(shapes) == 1 else [[im] for im in images]:
            rgb = torch.from_numpy(np.stack([_as_rgb(im, None) for im in group])).to(device)
            ids = best_palettes(_choice_pixels(rgb), stored_w)
            out += zip(assign(rgb, palettes.to(device), ids).cpu().numpy(), ids.cpu().numpy())
        return out

    dropper = _Dropper(cache, classes, cfg, device, summary, meta, model)
    weights = _mae_stage(cache, cfg, device, summary, meta, progress,
                         lambda chunk, images: [stored[pid][idx] for idx, pid in quantize(images)])

    def rows():  # type: ignore[no-untyped-def]
        for chunk, images in tqdm(cache.batches(cfg.batch), total=-(-n // cfg.batch), desc="assign + write",
                                  disable=not progress):
            for i, (idx, pid), dropped in zip(chunk.tolist(), quantize(images), dropper.masks(chunk, images)):
                yield idx, int(pid), cache.labels[i], cache.sources[i], dropped

    with _Stage(summary, "assign + write"):
        _write(dst, cfg, meta, stored, summary, rows(), dropper.patch, weights)


def _cams(model, images: list[np.ndarray], labels: np.ndarray, cfg: ConvertConfig,  # type: ignore[no-untyped-def]
          device: torch.device) -> list[torch.Tensor]:
    """Grad-CAM++ maps of ``images`` for their labels, each at the image's own size (on the CPU)."""
    x = _model_input(images, cfg.model_size).to(device)
    cams, _, _ = gradcam_pp(model, x, torch.from_numpy(labels).to(device), (cfg.model_size, cfg.model_size))
    return [torch.nn.functional.interpolate(cam[None, None].cpu(), size=im.shape[:2], mode="bilinear",
                                            align_corners=False)[0, 0] for cam, im in zip(cams, images)]


def _choice_pixels(rgb: torch.Tensor, most: int = 64) -> torch.Tensor:
    """Evenly spaced pixels (at most ``most``) of (N, H, W, 3) uint8 images, in weighted LAB."""
    flat = rgb.flatten(1, 2)
    pick = torch.linspace(0, flat.shape[1] - 1, min(most, flat.shape[1]), device=rgb.device).round().long()
    return weighted(srgb_to_lab(flat[:, pick].float() / 255))


def lab_statistics(image: np.ndarray) -> torch.Tensor:
    """Colour statistics of an image: LAB mean, standard deviation and 10/50/90% lightness
    quantiles, plus the 10/90% quantiles of a and b (12 values)."""
    rgb = torch.from_numpy(image if image.shape[2] == 3 else image.repeat(3, 2)).reshape(-1, 3).float() / 255
    lab = srgb_to_lab(rgb)
    q = torch.quantile(lab, torch.tensor([0.1, 0.5, 0.9]), dim=0)  # (3, 3)
    return torch.cat([lab.mean(0), lab.std(0), q[:, 0], q[0, 1:], q[2, 1:]])


def _pad(palette: torch.Tensor, colours: int) -> torch.Tensor:
    if len(palette) < colours:
        palette = torch.cat([palette, palette[-1:].repeat(colours - len(palette), 1)])
    return palette


def _as_rgb(img: np.ndarray, size: int | None) -> np.ndarray:
    rgb = img if img.shape[2] == 3 else img.repeat(3, 2)
    if size is None or rgb.shape[:2] == (size, size):
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))


__all__ = ["AttentionNet", "ConvertConfig", "ConvertSummary", "convert"]
