"""AutoPalette's palette network as a quantizer (``--method autopalette`` and ``autopalette-shared``).

A per-pixel network, 1x1 convolutions 3 -> 256 -> K = 2**bits (ReLU between, no biases), gives
a soft map ``m`` (softmax over K). In training each image's colours are the m-weighted means
``c_k = sum_p m_k(p) x(p) / sum_p m_k(p)`` and its soft-quantized image is ``sum_k m_k c_k``,
which a task classifier (the attention model's CNN) learns from. The loss is
``L = L_task + L_m + L_b + 3 L_a``:
- ``L_m = -(1/K) sum_k max_p m_k(p)``: every colour is the first choice somewhere;
- ``L_b``: the negative entropy of the mean usage (balance);
- ``L_a``: the squared distance between the normalised Gram matrices of the network's soft
  co-assignments and Pillow MedianCut's hard ones, on a random 30% of the pixels.

SGD (lr 0.05, momentum 0.5, weight decay 5e-4; lr x0.1 at half), bounded in time on a CPU.
Stored hard: each pixel the nearest of the image's soft colours (the paper takes argmax m, which
collapses while the map is not sharp: see :func:`hard_palette`), each index the mean colour of
its pixels (8-bit sRGB).
The shared variant pools every image's colours into ``clusters`` palettes (k-means of the
images' sorted palettes, then LAB k-means of each group's colours); every image then takes the
shared palette that reconstructs it best and each pixel its nearest colour, as DCQ does.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..dequant.train import dequant_stage
from ..pipeline.context import Conversion
from ..pipeline.imaging import as_rgb
from ..pipeline.output import Written, write_rows
from ..pipeline.progress import progress as progress_of
from ..pipeline.summary import Stage
from .attention import Dropper, class_count, mae_stage, training_sample
from .color import srgb_to_lab, unweighted, weighted
from .dcq import assign_shared, file_meta
from .dither import dither
from .kmeans import kmeans
from .palette import to_uint8
from .simple_quant import pillow_quantize

ALIGN_WEIGHT = 3.0
ALIGN_FRACTION = 0.3


class PaletteNet(nn.Module):
    def __init__(self, colours: int, channels: int = 3, hidden: int = 256) -> None:
        super().__init__()
        self.colours = colours
        self.expand = nn.Conv2d(channels, hidden, 1, bias=False)
        self.assign = nn.Conv2d(hidden, colours, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> (N, K, H, W) soft assignment (softmax over K)."""
        return torch.softmax(self.assign(torch.relu(self.expand(x))), dim=1)


def soft_quantize(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The soft-quantized images (N, C, H, W) and their colours (N, K, C)."""
    w, xs = m.flatten(2), x.flatten(2)
    colours = torch.einsum("nkp,ncp->nkc", w, xs) / w.sum(2).clamp_min(1e-8)[..., None]
    return torch.einsum("nkp,nkc->ncp", w, colours).reshape(x.shape), colours


def loss_max(m: torch.Tensor) -> torch.Tensor:
    """L_m = -(1/K) sum_k max_p m_k(p), averaged over the images."""
    return -m.flatten(2).amax(2).mean()


def loss_balance(m: torch.Tensor) -> torch.Tensor:
    """L_b: the negative entropy of each image's mean usage of the K colours, averaged."""
    u = m.flatten(2).mean(2)
    return (u * torch.log(u.clamp_min(1e-12))).sum(1).mean()


def loss_align(m: torch.Tensor, reference: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
    """L_a: distance between the normalised Gram matrices of the soft co-assignments and those of
    ``reference`` (N, H, W) hard indices, over the flat pixels ``pick``."""
    a = m.flatten(2)[:, :, pick]  # (N, K, p)
    r = nn.functional.one_hot(reference.flatten(1)[:, pick].long(), m.shape[1]).transpose(1, 2).float()
    ga, gr = a.transpose(1, 2) @ a, r.transpose(1, 2) @ r  # (N, p, p)
    ga = ga / ga.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None]
    gr = gr / gr.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None]
    return (ga - gr).pow(2).flatten(1).sum(1).mean()


@dataclass
class PaletteReport:
    steps: int
    steps_planned: int
    images: int
    seconds: float
    stopped_by_time: bool
    final_losses: dict[str, float]
    weights: dict[str, float]
    optimiser: dict[str, float]


def train_palette_net(images: np.ndarray, labels: np.ndarray, classes: int, bits: int, *, epochs: int, seed: int,
                      device: torch.device, seconds: float | None, batch: int = 64, use: tuple[bool, bool, bool] =
                      (True, True, True)) -> tuple[PaletteNet, PaletteReport]:
    """Train the palette network jointly with a task classifier on ``images`` (N, H, W, 3) uint8.

    ``use`` switches L_m, L_b and L_a (the paper's ablation). Deterministic for a seed on a
    device, unless stopped by ``seconds``."""
    from .model import AttentionNet

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    batch = max(1, min(batch, len(images)))  # small datasets still train
    k = 1 << bits
    net, task = PaletteNet(k, images.shape[3]).to(device), AttentionNet(classes, images.shape[3]).to(device)
    params = list(net.parameters()) + list(task.parameters())
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.5, weight_decay=5e-4)
    steps = max(1, epochs * (len(images) // batch))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, steps // 2), gamma=0.1)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    y_all = torch.from_numpy(labels.astype(np.int64))
    ref = torch.from_numpy(np.stack([pillow_quantize(im, bits)[0] for im in images]))
    n_pix = images.shape[1] * images.shape[2]
    t0, step, stopped = time.perf_counter(), 0, False
    last: dict[str, float] = {}
    net.train()
    task.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g)
        for s in range(0, len(order) - batch + 1, batch):
            if seconds is not None and time.perf_counter() - t0 > seconds:
                stopped = True
                break
            idx = order[s : s + batch]
            x = x_all[idx].to(device)
            m = net(x)
            soft, _ = soft_quantize(x, m)
            l_task = nn.functional.cross_entropy(task(soft * 2 - 1), y_all[idx].to(device))
            pick = torch.randperm(n_pix, generator=g)[: max(1, int(ALIGN_FRACTION * n_pix))].to(device)
            parts = {"task": l_task, "max": loss_max(m), "balance": loss_balance(m),
                     "align": loss_align(m, ref[idx].to(device), pick)}
            loss = parts["task"] + use[0] * parts["max"] + use[1] * parts["balance"] \
                + use[2] * ALIGN_WEIGHT * parts["align"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            last = {name: round(float(v.detach()), 5) for name, v in parts.items()}
        if stopped:
            break
    net.eval()
    report = PaletteReport(step, steps, len(images), time.perf_counter() - t0, stopped, last,
                           {"max": float(use[0]), "balance": float(use[1]), "align": ALIGN_WEIGHT * use[2]},
                           {"lr": 0.05, "momentum": 0.5, "weight_decay": 5e-4, "lr_drop_at_half": 0.1})
    return net, report


@torch.no_grad()
def hard_palette(net: PaletteNet, image: np.ndarray, device: torch.device,
                 rule: str = "nearest") -> tuple[np.ndarray, np.ndarray]:
    """An (H, W, C) uint8 image -> (H, W) indices and the (K, C) uint8 palette of the mean colour
    of each index's pixels (an unused index keeps its soft colour).

    ``rule="argmax"`` is the paper's: index = argmax m. ``"nearest"`` (the default) gives each
    pixel the nearest of the image's soft colours c_k: a map that is not sharp yet (few training
    steps on a CPU) makes argmax collapse onto one or two colours (measured: 1.9 distinct colours
    per CIFAR image after 176 steps), while its soft colours are still spread over the image's."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device) / 255
    m = net(x)
    _, soft = soft_quantize(x, m)  # (1, K, C) in [0, 1]
    if rule == "argmax":
        idx = m.argmax(1)[0].cpu()
    else:
        pixels = x.flatten(2)[0].T  # (P, C)
        idx = torch.cdist(pixels, soft[0]).argmin(1).reshape(image.shape[:2]).cpu()
    k = net.colours
    flat = torch.from_numpy(image.reshape(-1, image.shape[2])).double()
    counts = torch.bincount(idx.flatten(), minlength=k).double()
    sums = torch.zeros(k, image.shape[2], dtype=torch.float64).index_add_(0, idx.flatten(), flat)
    means = sums / counts.clamp_min(1)[:, None]
    means = torch.where(counts[:, None] > 0, means, soft[0].cpu().double() * 255)
    pal = means.round().clamp(0, 255).to(torch.uint8)
    return idx.numpy().astype(np.uint8), pal.numpy()


def report_meta(report: PaletteReport) -> dict[str, Any]:
    """The file's metadata of the palette network (no timings: bytes depend on data, config, seed)."""
    return {k: v for k, v in asdict(report).items() if k != "seconds"}


def convert_autopalette(ctx: Conversion, dst: str | Path) -> Written:
    """``--method autopalette`` (per-image palettes) or ``autopalette-shared`` over the cached
    images, written to ``dst``; returns what was written."""
    cache, cfg, device, summary, progress = ctx.cache, ctx.cfg, ctx.device, ctx.summary, ctx.progress
    n = len(cache)
    seconds = cfg.palette_seconds if cfg.palette_seconds is not None else (180.0 if device.type == "cpu" else None)
    with Stage(summary, "palette network"):
        train_x, train_y = training_sample(cache, cfg, np.random.default_rng(cfg.seed))
        net, report = train_palette_net(train_x, train_y, class_count(cache, ctx.classes), cfg.bits,
                                        epochs=cfg.model_epochs, seed=cfg.seed, device=device, seconds=seconds,
                                        use=tuple(t in cfg.palette_losses.split(",")  # type: ignore[arg-type]
                                                  for t in ("max", "balance", "align")))
    learned: dict[str, Any] = {"palette_network": report_meta(report)}
    k = 1 << cfg.bits

    def per_image(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb = as_rgb(img, None)
        idx, pal = hard_palette(net, rgb, device)
        if cfg.dither:
            idx = dither(rgb[None], pal[None])[0]
        return idx, pal

    shared = None
    if cfg.method == "autopalette-shared":
        with Stage(summary, "shared palettes"):
            pals = np.stack([hard_palette(net, as_rgb(cache.image(i), None), device)[1] for i in range(n)])
            lab = weighted(srgb_to_lab(torch.from_numpy(pals).float() / 255))  # (n, K, 3)
            lab = torch.gather(lab, 1, lab[..., :1].argsort(1).expand(-1, -1, 3))  # each palette by lightness
            groups = min(cfg.clusters, n)
            _, member = kmeans(lab.flatten(1), groups, seed=cfg.seed)
            out = torch.zeros(groups, k, 3)
            for c in range(groups):
                own = lab[member == c].reshape(-1, 3)
                out[c] = kmeans(own, k, seed=cfg.seed + c)[0] if len(own) >= k else lab.reshape(-1, 3)[:k]
            shared = to_uint8(unweighted(out))  # (groups, K, 3)
            shared_w = weighted(srgb_to_lab(shared.float().to(device) / 255))
        learned["shared_palettes"] = groups

    def quantize(img: np.ndarray) -> tuple[np.ndarray, Any]:
        if shared is None:
            return per_image(img)
        idx, pid = assign_shared([img], shared, shared_w, device, cfg.dither)[0]
        return idx, int(pid)

    def stored(pal: Any) -> Any:
        if isinstance(pal, int):
            return pal
        return pal if cfg.channels == 3 else pal[:, :1]

    dropper = Dropper(ctx)

    def colours(chunk: np.ndarray, images: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for img in images:
            idx, pal = quantize(img)
            table = shared.numpy()[pal] if shared is not None and isinstance(pal, int) else pal
            out.append(stored(table)[idx])
        return out

    mae = mae_stage(ctx, colours, dropper)
    deq = dequant_stage(ctx, colours)

    def rows(start: int) -> Any:
        for chunk, images in progress_of(cache.batches(cfg.batch, start=start), "autopalette",
                                         total=-(-(n - start) // cfg.batch), unit="batches", enabled=progress):
            for i, img, dropped in zip(chunk.tolist(), images, dropper.masks(chunk, images)):
                idx, pal = quantize(img)
                yield idx, stored(pal), cache.labels[i], cache.sources[i], dropped

    palettes = None if shared is None else (shared.numpy() if cfg.channels == 3 else shared.numpy()[:, :, :1])
    with Stage(summary, "assign + write"):
        written = write_rows(dst, cfg, file_meta(ctx, dropper, mae, learned, deq), palettes, rows, dropper.patch,
                             mae.weights if mae else None, ctx.samples_per_file, ctx.group,
                             ctx.checkpoints.parts(Path(dst)), progress, deq.weights if deq else None)
    written.mae = mae.report if mae else {}
    return written
