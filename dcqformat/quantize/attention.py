"""The attention model and what comes from it: Grad-CAM++ maps, drop masks, the MAE stage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import DcqError
from ..mae import load_mae, mae_from_bytes, mae_to_bytes, train_mae
from ..mae.sizing import mae_config, size_name
from ..mae.train import holdout_psnr
from ..pipeline.checkpoint import rng_state, set_rng_state
from ..pipeline.distributed import Group
from ..pipeline.imaging import ImageCache, as_rgb, model_input
from ..pipeline.progress import note
from ..pipeline.summary import ConvertConfig, Stage
from .drop import drop_mask, drop_scores, fill_errors, native_patch
from .gradcam import gradcam_pp
from .model import load_model, save_model, train_attention

if TYPE_CHECKING:
    from ..pipeline.context import Conversion


def attention_model(cache: ImageCache, classes: list[str], cfg: ConvertConfig, device: torch.device,
                    rng: np.random.Generator, progress: bool = False, group: Group | None = None,
                    positions: np.ndarray | None = None,
                    total: int | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The user's checkpoint, or a small CNN trained on (a bounded sample of) the source; and
    how it was made. Over several processes (``group``; ``positions``: the global position of
    each cached image, of ``total`` in all) every rank trains on its images of the sample, with DDP."""
    group = group or Group()
    n_classes = class_count(cache, classes, group)
    if cfg.model:
        return load_model(cfg.model, device), {"checkpoint": cfg.model}
    train_x, train_y = training_sample(cache, cfg, rng, positions, total)
    model, report = train_attention(train_x, train_y, n_classes, epochs=cfg.model_epochs,
                                    size=cfg.model_size, device=device, seed=cfg.seed, progress=progress, group=group)
    return model, asdict(report)


def shared_model(ctx: Conversion, rng: np.random.Generator | None = None) -> torch.nn.Module:
    """The conversion's attention model: trained (or loaded) on first use, drawing its training sample
    from ``rng`` (default: a generator seeded with the config's seed)."""
    if ctx.model is None:
        rng = rng if rng is not None else np.random.default_rng(ctx.cfg.seed)
        ck = ctx.checkpoints
        with Stage(ctx.summary, "attention model"):
            if ck.has("model"):  # a resumed conversion: the model of the killed run
                _, info = ck.load("model")
                ctx.model, report = load_model(str(ck.path("model.safetensors")), ctx.device), info["report"]
                set_rng_state(rng, info["rng"])
            else:
                ctx.model, report = attention_model(ctx.cache, ctx.classes, ctx.cfg, ctx.device, rng,
                                                      ctx.progress, ctx.group, ctx.positions, ctx.total)
                model = ctx.model
                if hasattr(model, "classes"):  # trained here (a TorchScript checkpoint is the user's file)
                    ck.save("model", {}, {"report": report, "rng": rng_state(rng)},
                            lambda path: save_model(model, str(path("model.safetensors"))))  # type: ignore[arg-type]
        ctx.summary.model = report
        # Timings stay in the summary: a file's bytes depend on the data, the config and the seed only.
        ctx.meta["quantizer"]["attention_model"] = {k: v for k, v in report.items() if k != "seconds"}
    return ctx.model


def class_count(cache: ImageCache, classes: list[str], group: Group | None = None) -> int:
    """Classes a model trained on the dataset predicts: the named ones, or as many as the labels
    (of every rank) need."""
    labels = cache.labels
    top = (group or Group()).all_gather(int(max(labels)) + 1 if len(labels) else 1)
    return max(len(classes), max(top), 1)


def training_sample(cache: ImageCache, cfg: ConvertConfig, rng: np.random.Generator,
                    positions: np.ndarray | None = None, total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The images (at ``cfg.model_size``) and labels (-1 as 0) of a model's training sample:
    ``cfg.model_images`` positions of the whole dataset drawn from ``rng``, this rank's of them
    (``positions``: the global position of each cached image, of ``total``)."""
    positions = np.arange(len(cache)) if positions is None else positions
    total = len(cache) if total is None else total
    pick = np.sort(rng.choice(total, min(total, cfg.model_images), replace=False))
    mine = np.flatnonzero(np.isin(positions, pick))
    labels = np.array(cache.labels)
    train_x = np.stack([as_rgb(cache.image(int(i)), cfg.model_size) for i in mine]) if len(mine) else \
        np.zeros((0, cfg.model_size, cfg.model_size, 3), np.uint8)
    return train_x, np.where(labels[mine] >= 0, labels[mine], 0)


def grad_cams(model: torch.nn.Module, images: list[np.ndarray], labels: np.ndarray, cfg: ConvertConfig,
          device: torch.device) -> list[torch.Tensor]:
    """Grad-CAM++ maps of ``images`` for their labels, each at the image's own size (on the CPU)."""
    x = model_input(images, cfg.model_size).to(device)
    cams, _, _ = gradcam_pp(model, x, torch.from_numpy(labels).to(device), (cfg.model_size, cfg.model_size))
    return [torch.nn.functional.interpolate(cam[None, None].cpu(), size=im.shape[:2], mode="bilinear",
                                            align_corners=False)[0, 0] for cam, im in zip(cams, images)]


class Dropper:
    """Drop masks (when ``cfg.drop_patches`` > 0): the patches of lowest score by ``cfg.drop_by``
    (quantize.drop.drop_scores): the harmonic fill's error, the attention, or both."""

    IMPORTANCE = {"attention": "mean Grad-CAM++ attention of the patch, for the true label",
                  "fill": "mean squared error of the harmonic fill of the patch dropped alone",
                  "both": "mean squared error of the harmonic fill of the patch dropped alone, times "
                          "(1 + its mean Grad-CAM++ attention for the true label / the image's mean)"}

    def __init__(self, ctx: Conversion) -> None:
        cfg, cache = ctx.cfg, ctx.cache
        self.cfg, self.device, self.patch = cfg, ctx.device, None
        self.model: torch.nn.Module | None = None
        self.info: dict[str, Any] | None = None  # the file's "drop" metadata
        if cfg.drop_patches <= 0:
            return
        self.labels = np.array(cache.labels)
        shapes = np.array([cache.shape(i)[:2] for i in range(len(cache))])
        self.patch = cfg.patch_size or ctx.group.broadcast(  # rank 0's choice: one patch size for every part
            native_patch(int(np.median(shapes[:, 0])), int(np.median(shapes[:, 1]))) if len(shapes) else 4)
        if cfg.drop_by != "fill":
            self.model = shared_model(ctx)
        self.info = {"fraction": cfg.drop_patches, "patch": self.patch, "by": cfg.drop_by,
                     "importance": self.IMPORTANCE[cfg.drop_by]}

    def masks(self, chunk: np.ndarray, images: list[np.ndarray]) -> list[np.ndarray | None]:
        if self.patch is None:
            return [None] * len(images)
        by = self.cfg.drop_by
        cams: list[torch.Tensor | None] = [None] * len(images)
        if by != "fill":
            assert self.model is not None  # built in __init__ whenever attention is used
            cams = list(grad_cams(self.model, images, self.labels[chunk], self.cfg, self.device))
        errors: list[np.ndarray | None] = list(fill_errors(images, self.patch)) if by != "attention" \
            else [None] * len(images)
        return [drop_mask(drop_scores(by, cam, err, self.patch), self.cfg.drop_patches)
                for cam, err in zip(cams, errors)]


@dataclass(frozen=True)
class MaeOutcome:
    """The MAE stage's result: the weights for WGHT, the file's "mae" metadata, the training report."""

    weights: bytes
    meta: dict[str, Any]
    report: dict[str, Any]


MIN_GAIN_DB = 0.5  # what auto's MAE must add to the harmonic fill, on held-out images, to be kept


def mae_stage(ctx: Conversion, quantize: Callable[[np.ndarray, list[np.ndarray]], list[np.ndarray]],
              dropper: Dropper) -> MaeOutcome | None:
    """The MAE that refills the patches ``dropper`` drops, as safetensors bytes: ``cfg.mae``
    reused, or one trained on quantized images (``quantize(chunk, images)``) of the most common
    size, a bounded random sample of them, with their drop masks. None without dropping, and
    when no model is wanted: ``--mae-size none``; or ``auto``, on too few images for the
    smallest to pay, or when on held-out images it improves on the harmonic fill by less than
    :data:`MIN_GAIN_DB`. The loaders then refill with the harmonic fill."""
    if dropper.patch is None:
        return None
    ck = ctx.checkpoints
    if ck.has("mae"):  # a resumed conversion: the MAE of the killed run
        arrays, info = ck.load("mae")
        return MaeOutcome(arrays["weights"].tobytes(), info["meta"], info["report"]) if info else None
    # over several ranks the MAE is trained on rank 0's images and given to every rank
    outcome = ctx.group.broadcast(_mae(ctx, quantize, dropper) if ctx.group.leader else None)
    if outcome is None:
        ck.save("mae", {"weights": np.zeros(0, np.uint8)}, {})
    else:
        ck.save("mae", {"weights": np.frombuffer(outcome.weights, np.uint8)}, {"meta": outcome.meta,
                                                                               "report": outcome.report})
    return outcome


def _mae(ctx: Conversion, quantize: Callable[[np.ndarray, list[np.ndarray]], list[np.ndarray]],
         dropper: Dropper) -> MaeOutcome | None:
    cache, cfg, device, summary, progress = ctx.cache, ctx.cfg, ctx.device, ctx.summary, ctx.progress
    patch = dropper.patch
    assert patch is not None
    with Stage(summary, "MAE"):
        if cfg.mae:
            model = load_mae(cfg.mae, device)
            if model.config.patch != patch:
                raise DcqError(f"{cfg.mae}: its MAE works on {model.config.patch} px patches, "
                               f"the drop masks use {patch}")
            return MaeOutcome(mae_to_bytes(model, cfg.mae_weights),
                              {"config": model.config.to_dict(), "from": str(cfg.mae), "weights": cfg.mae_weights}, {})
        shapes = [cache.shape(i) for i in range(len(cache))]
        common = max(set(shapes), key=shapes.count)
        config = mae_config(cfg.mae_size, images=ctx.total, height=common[0], width=common[1], channels=common[2],
                            patch=patch, fraction=cfg.drop_patches, bits=cfg.bits, codec=cfg.codec,
                            precision=cfg.mae_weights, drop_by=cfg.drop_by)
        if config is None:
            why = "--mae-size none" if cfg.mae_size == "none" else \
                f"on {ctx.total:,} images even the smallest MAE would cost more than it is worth"
            note(f"no MAE ({why}): the loaders refill dropped patches with the harmonic fill", progress)
            return None
        rng = np.random.default_rng(cfg.seed + 7)
        pool = np.flatnonzero([s == common for s in shapes])
        pick = np.sort(rng.choice(pool, min(len(pool), cfg.mae_images), replace=False))
        quantized, masks = [], []
        for chunk, images in cache.batches(cfg.batch, pick):
            quantized += quantize(chunk, images)
            for mask in dropper.masks(chunk, images):
                assert mask is not None  # every image has one while patches are dropped
                masks.append(mask)
        x, m = np.stack(quantized), np.stack(masks)
        held = np.zeros(len(x), bool)  # a tenth held out to check the model earns its bytes
        if len(x) >= 20:
            held[rng.choice(len(x), len(x) // 10, replace=False)] = True
        seconds = cfg.mae_seconds if cfg.mae_seconds is not None else (240.0 if device.type == "cpu" else None)
        model, report = train_mae(x[~held], cfg.drop_patches, config, epochs=cfg.mae_epochs, seconds=seconds,
                                  device=device, seed=cfg.seed, progress=progress, masks=m[~held])
        if report.stopped_by_time:
            note(f"MAE training stopped by its time limit ({seconds:.0f} s) after {report.steps} of "
                 f"{report.steps_planned} steps", progress)
        weights = mae_to_bytes(model, cfg.mae_weights)
        check: dict[str, Any] = {}
        if held.any():  # the stored (int8) model against the fill, on images it did not see
            fill_db, mae_db = holdout_psnr(mae_from_bytes(weights, device), x[held], m[held])
            check = {"holdout_images": int(held.sum()), "holdout_fill_psnr": fill_db, "holdout_psnr": mae_db}
            if cfg.mae_size == "auto" and mae_db - fill_db < MIN_GAIN_DB:
                note(f"no MAE: on {int(held.sum()):,} held-out images it refills the dropped pixels at "
                     f"{mae_db:.2f} dB against the harmonic fill's {fill_db:.2f} dB (less than {MIN_GAIN_DB} dB "
                     "better, not worth its bytes); the loaders refill with the harmonic fill", progress)
                return None
    size = cfg.mae_size if cfg.mae_size != "auto" else f"auto: {size_name(config)}"
    meta = {"config": config.to_dict(), "size": size, "weights": cfg.mae_weights,
            "trained_on": "quantized images with their drop masks", **check,
            **{k: v for k, v in asdict(report).items() if k not in ("seconds", "device")}}
    return MaeOutcome(weights, meta, {**asdict(report), **check})
