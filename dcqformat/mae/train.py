"""Training the MAE on (quantized) images with random masking, within a step and time budget."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..progress import progress as progress_of
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
              seed: int = 0, progress: bool = False) -> tuple[MAE, MAEReport]:
    """Train an MAE on ``images`` (N, H, W, C) uint8 of one size, hiding ``ratio`` of the patches.

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
            if torch.rand(1, generator=g).item() < 0.5:
                x = x.flip(3)
            dropped = random_drop(len(idx), patches, ratio, g).to(device)
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
