"""Fitting the dequantizer at conversion time, and the stage that decides whether a file keeps it.

Training pairs are (palette image, original) of a bounded random sample of the images being
converted, quantized exactly as they are written; the network learns on random crops (it is
fully convolutional, so any image size works and the cost of a step does not grow with it).
A tenth of the sample is held out: ``auto`` keeps the model only when on those images it beats
both the palette lookup and the debanding filter (which cost no bytes) by :data:`MIN_GAIN_DB`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..decode.deband import deband_batch, weight_tables
from ..pipeline.context import Conversion
from ..pipeline.progress import note
from ..pipeline.summary import Stage
from .model import DequantConfig, Dequantizer
from .store import dequantizer_from_bytes, dequantizer_to_bytes

SIZES = {"tiny": (8, 3), "small": (16, 3), "base": (24, 4)}  # width, depth
SIZE_NAMES = ("auto", "none", *SIZES)
BUDGET = 0.02  # auto: the largest size whose bytes are at most this share of the index bytes
MIN_GAIN_DB = 0.2  # what auto's model must add to lookup and to debanding on held-out images
MAX_PIXELS = 1 << 25  # the training sample's bound (images kept in memory, originals and quantized)
CROP = 48


def stored_bytes(config: DequantConfig) -> int:
    """Bytes of the DEQW section of ``config`` (int8 kernels, float16 biases, the header)."""
    return len(dequantizer_to_bytes(Dequantizer(config)))


def choose_config(size: str, *, images: int, pixels: int, channels: int, bits: int) -> DequantConfig | None:
    """The config of a named size, or for ``auto`` the largest costing at most :data:`BUDGET`
    of the file's index bits (``images`` of ``pixels`` pixels at ``bits``); None for ``none``."""
    if size == "none":
        return None
    if size != "auto":
        width, depth = SIZES[size]
        return DequantConfig(channels, width, depth)
    budget = BUDGET * images * pixels * bits / 8
    fitting = [DequantConfig(channels, w, d) for w, d in SIZES.values()
               if stored_bytes(DequantConfig(channels, w, d)) <= budget]
    return fitting[-1] if fitting else None


@dataclass
class TrainReport:
    steps: int
    images: int
    seconds: float
    loss: float
    stopped_by_time: bool


def train(quantized: list[np.ndarray], originals: list[np.ndarray], config: DequantConfig, *, steps: int = 1500,
          seconds: float | None = 60.0, batch: int = 32, device: torch.device | str = "cpu",
          seed: int = 0) -> tuple[Dequantizer, TrainReport]:
    """Fit a dequantizer on pairs of (H, W, C) uint8 images (sizes may differ): mean squared error
    of ``x + net(x)`` against the original, on random ``CROP`` px crops, Adam with a cosine decay."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Dequantizer(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    start, loss_avg, done = time.time(), float("nan"), 0
    for step in range(steps):
        if seconds is not None and time.time() - start > seconds:
            break
        xs, ys = _crops(quantized, originals, batch, rng)
        x = torch.from_numpy(xs).to(device).float().div_(255)
        y = torch.from_numpy(ys).to(device).float().div_(255)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = loss.item()
        loss_avg = value if step == 0 else 0.98 * loss_avg + 0.02 * value
        done = step + 1
    report = TrainReport(done, len(quantized), time.time() - start, loss_avg, done < steps)
    return model.eval(), report


def _crops(quantized: list[np.ndarray], originals: list[np.ndarray], batch: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A batch of aligned crops (N, C, s, s), s = CROP or the smallest image side picked."""
    picks = rng.integers(0, len(quantized), batch)
    side = min(CROP, *(min(quantized[i].shape[:2]) for i in picks))
    xs, ys = [], []
    for i in picks:
        h, w = quantized[i].shape[:2]
        y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        xs.append(quantized[i][y0 : y0 + side, x0 : x0 + side])
        ys.append(originals[i][y0 : y0 + side, x0 : x0 + side])
    return np.stack(xs).transpose(0, 3, 1, 2), np.stack(ys).transpose(0, 3, 1, 2)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255**2 / mse) if mse > 0 else 99.0


def debanded(image: np.ndarray) -> np.ndarray:
    """The debanding filter of a palette image (H, W, C), its palette read from its colours."""
    h, w, c = image.shape
    colours, maps = np.unique(image.reshape(-1, c), axis=0, return_inverse=True)
    pal = colours[None].astype(np.uint8)
    out = np.empty((1, c, h, w), np.uint8)
    deband_batch(maps.reshape(1, h, w).astype(np.uint8), np.zeros(1, np.int64), pal, weight_tables(pal),
                 np.zeros((0, 1, 1), np.bool_), out)
    return out[0].transpose(1, 2, 0)


def holdout(model: Dequantizer, quantized: list[np.ndarray], originals: list[np.ndarray]) -> dict[str, float]:
    """Mean PSNR on held-out pairs of the palette image, the debanding filter and the model."""
    rows = {"lookup": [], "deband": [], "learned": []}  # type: dict[str, list[float]]
    for q, o in zip(quantized, originals):
        restored = model.restore(torch.from_numpy(q.transpose(2, 0, 1)[None].copy()))[0].numpy().transpose(1, 2, 0)
        rows["lookup"].append(psnr(q, o))
        rows["deband"].append(psnr(debanded(q), o))  # a palette image: at most 256 colours
        rows["learned"].append(psnr(restored, o))
    return {f"holdout_{k}_psnr": round(float(np.mean(v)), 3) for k, v in rows.items()}


@dataclass(frozen=True)
class DequantOutcome:
    """The stage's result: the weights for DEQW, the file's "dequantizer" metadata."""

    weights: bytes
    meta: dict[str, Any]


def dequant_stage(ctx: Conversion, quantize: Callable[[np.ndarray, list[np.ndarray]], list[np.ndarray]]
                  ) -> DequantOutcome | None:
    """The learned dequantizer for the file, or None (``--dequantizer none``; ``auto`` on too
    few images for the smallest to pay, or when it does not beat both the lookup and the
    debanding filter on held-out images). ``quantize(chunk, images)`` gives the palette images of cached images.
    Over several ranks it is trained on rank 0's images and given to every rank."""
    cfg = ctx.cfg
    if cfg.dequantizer == "none":
        return None
    ck = ctx.checkpoints
    if ck.has("dequantizer"):  # a resumed conversion: the model of the killed run
        arrays, info = ck.load("dequantizer")
        return DequantOutcome(arrays["weights"].tobytes(), info["meta"]) if info else None
    outcome = ctx.group.broadcast(_fit(ctx, quantize) if ctx.group.leader else None)
    if outcome is None:
        ck.save("dequantizer", {"weights": np.zeros(0, np.uint8)}, {})
    else:
        ck.save("dequantizer", {"weights": np.frombuffer(outcome.weights, np.uint8)}, {"meta": outcome.meta})
    return outcome


def _fit(ctx: Conversion, quantize: Callable[[np.ndarray, list[np.ndarray]], list[np.ndarray]]
         ) -> DequantOutcome | None:
    cache, cfg, progress = ctx.cache, ctx.cfg, ctx.progress
    with Stage(ctx.summary, "dequantizer"):
        shapes = [cache.shape(i) for i in range(len(cache))]
        pixels = int(np.mean([h * w for h, w, _ in shapes])) if shapes else 0
        config = choose_config(cfg.dequantizer, images=ctx.total, pixels=pixels, channels=cfg.channels,
                               bits=cfg.bits)
        if config is None or not shapes:
            note("no learned dequantizer: on these images even the smallest would cost more than "
                 f"{BUDGET:.0%} of the index bytes", progress)
            return None
        rng = np.random.default_rng(cfg.seed + 11)
        count = int(min(len(cache), max(20, MAX_PIXELS // max(pixels, 1) // 2), 2000))
        pick = np.sort(rng.choice(len(cache), count, replace=False))
        quantized, originals = [], []
        for chunk, images in cache.batches(cfg.batch, pick):
            quantized += quantize(chunk, images)
            originals += images
        seconds = cfg.dequantizer_seconds if cfg.dequantizer_seconds is not None else \
            (60.0 if ctx.device.type == "cpu" else None)
        return fit(quantized, originals, config, keep_if_better=cfg.dequantizer == "auto", seconds=seconds,
                   device=ctx.device, seed=cfg.seed, progress=progress)


def fit(quantized: list[np.ndarray], originals: list[np.ndarray], config: DequantConfig, *, keep_if_better: bool,
        seconds: float | None, device: torch.device | str = "cpu", seed: int = 0,
        progress: bool = False) -> DequantOutcome | None:
    """Train ``config`` on the pairs (a tenth held out when there are 20 or more), check the stored
    model on the held-out ones and, with ``keep_if_better``, return None unless it beats both the
    lookup and the debanding filter there by :data:`MIN_GAIN_DB`."""
    rng = np.random.default_rng(seed + 13)
    held = np.zeros(len(quantized), bool)
    if len(quantized) >= 20:
        held[rng.choice(len(quantized), len(quantized) // 10, replace=False)] = True
    def part(images: list[np.ndarray], held_out: bool) -> list[np.ndarray]:
        return [im for im, h in zip(images, held) if h == held_out]

    model, report = train(part(quantized, False), part(originals, False), config, seconds=seconds, device=device,
                          seed=seed)
    weights = dequantizer_to_bytes(model)
    check: dict[str, Any] = {}
    if held.any():  # the stored (int8) model, on images it did not see
        stored = dequantizer_from_bytes(weights, device)
        check = {"holdout_images": int(held.sum()), **holdout(stored, part(quantized, True), part(originals, True))}
        best = max(check["holdout_lookup_psnr"], check["holdout_deband_psnr"])
        if keep_if_better and check["holdout_learned_psnr"] - best < MIN_GAIN_DB:
            note(f"no learned dequantizer: on {int(held.sum()):,} held-out images it restores "
                 f"{check['holdout_learned_psnr']:.2f} dB against {check['holdout_lookup_psnr']:.2f} dB by lookup "
                 f"and {check['holdout_deband_psnr']:.2f} dB by debanding (less than {MIN_GAIN_DB} dB better)",
                 progress)
            return None
    name = next(k for k, v in SIZES.items() if v == (config.width, config.depth))
    meta = {"config": config.to_dict(), "size": f"auto: {name}" if keep_if_better else name, "bytes": len(weights),
            "steps": report.steps, "images": report.images, "loss": round(report.loss, 6),
            "stopped_by_time": report.stopped_by_time, "macs_per_pixel": config.macs_per_pixel(), **check}
    return DequantOutcome(weights, meta)
