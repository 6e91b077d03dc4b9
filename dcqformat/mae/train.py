"""Training the MAE on (quantized) images, with their drop masks or random ones, within a step and
time budget; and how much it improves on the harmonic fill on images it did not train on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..decode.inpaint import harmonic_fill
from ..pipeline.progress import progress as progress_of
from .model import MAE, MAEConfig, random_drop


@dataclass
class MAEReport:
    images: int
    steps: int
    steps_planned: int
    seconds: float
    stopped_by_time: bool
    first_loss: float
    last_loss: float
    device: str


def train_mae(images: np.ndarray, ratio: float, config: MAEConfig | None = None, *, epochs: int = 20,
              batch: int = 256, lr: float = 2e-3, seconds: float | None = None, device: torch.device | str = "cpu",
              seed: int = 0, progress: bool = False, masks: np.ndarray | None = None) -> tuple[MAE, MAEReport]:
    """Train an MAE on ``images`` (N, H, W, C) uint8 of one size, hiding ``ratio`` of the patches
    at random, or each image's own drop mask: ``masks`` (N, gh, gw) bool, the patches the
    converter drops (so the model learns the holes it will fill; flipped with the image).

    AdamW with a cosine schedule over ``epochs``; ``seconds`` caps the wall time (training then
    stops early, and the report says so; the result is deterministic for a seed otherwise).
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n, h, w, c = images.shape
    config = config or MAEConfig(channels=c)
    model = MAE(config).to(device)
    patches = int(np.prod(model.grid(h, w)))
    per_epoch = max(1, n // batch)
    steps = epochs * per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    data = torch.from_numpy(images)
    fixed = None if masks is None else torch.from_numpy(np.asarray(masks, bool)).reshape(n, *model.grid(h, w))
    losses, start, step, stopped = [], time.perf_counter(), 0, False
    model.train()
    def epochs_left() -> Iterator[None]:  # until the planned steps are done or the time is up
        while step < steps and not stopped:
            yield None

    for _ in progress_of(epochs_left(), "MAE", total=epochs, unit="epochs", enabled=progress):
        order = torch.randperm(n, generator=g)
        for s in range(per_epoch):
            idx = order[s * batch : (s + 1) * batch]
            x = data[idx].to(device).permute(0, 3, 1, 2).float() / 255
            # a flip mirrors the masks' grid too, which only holds when the width is a whole
            # number of patches (else the partial last column would move to the front)
            flip = torch.rand(1, generator=g).item() < 0.5 and (fixed is None or w % config.patch == 0)
            if flip:
                x = x.flip(3)
            if fixed is None:
                dropped = random_drop(len(idx), patches, ratio, g).to(device)
            else:
                own = fixed[idx].flip(2) if flip else fixed[idx]
                dropped = own.reshape(len(idx), patches).to(device)
            loss = model.loss(x, dropped)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            if step >= steps:
                break
            if seconds is not None and time.perf_counter() - start > seconds:
                stopped = True
                break
    model.eval()
    head, tail = losses[: max(1, per_epoch)], losses[-max(1, per_epoch):]
    return model, MAEReport(images=n, steps=step, steps_planned=steps, seconds=time.perf_counter() - start,
                            stopped_by_time=stopped, first_loss=float(np.mean(head)), last_loss=float(np.mean(tail)),
                            device=str(device))


@torch.no_grad()
def holdout_psnr(model: MAE, images: np.ndarray, masks: np.ndarray, batch: int = 256) -> tuple[float, float]:
    """PSNR (dB) over the dropped pixels of ``images`` (N, H, W, C) uint8 with drop ``masks``
    (N, gh, gw): of the harmonic fill (the loaders' refill without a model), and of ``model``'s."""
    p = model.config.patch
    err_fill = err_model = 0.0
    count = 0
    for s in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch].transpose(0, 3, 1, 2)))
        d = torch.from_numpy(np.asarray(masks[s : s + batch], bool))
        h, w = x.shape[2:]
        hidden = d.repeat_interleave(p, 1).repeat_interleave(p, 2)[:, None, :h, :w].expand_as(x)
        fill = torch.from_numpy(harmonic_fill(x.numpy().copy(), hidden[:, 0].numpy(), p))
        refill = model.fill(x.to(next(model.parameters()).device), d.to(next(model.parameters()).device)).cpu()
        truth = x.float()[hidden]
        err_fill += float(((fill.float()[hidden] - truth) ** 2).sum())
        err_model += float(((refill.float()[hidden] - truth) ** 2).sum())
        count += int(hidden.sum())
    def psnr(err: float) -> float:
        return float(10 * np.log10(255.0**2 * max(count, 1) / max(err, 1e-9)))
    return psnr(err_fill), psnr(err_model)
