"""What the benchmarks share for training: CIFAR-10 statistics, the fixed evaluation CNN, its
training and evaluation, and decoding a file as the loaders would (dropped patches refilled)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

import dcqformat
from dcqformat.loaders import random_crop_flip
from dcqformat.loaders.reconstruct import Reconstructor, refilled_images

MEAN_RGB, STD_RGB = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
MEAN = torch.tensor(MEAN_RGB)[:, None, None]
STD = torch.tensor(STD_RGB)[:, None, None]


def cnn(classes: int = 10) -> nn.Module:
    """The fixed evaluation network: 4 conv blocks (24-48-96-192), each pooled; ~8M MACs."""
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 24), *block(24, 48), *block(48, 96), *block(96, 192),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(192, classes))


def normalise(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() / 255 - MEAN) / STD).contiguous(memory_format=torch.channels_last)


def train_eval(train_x: np.ndarray, train_y: np.ndarray, test_x: torch.Tensor, test_y: torch.Tensor,
               epochs: int, seed: int, batch: int = 128, classes: int = 10) -> float:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = cnn(classes).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * (len(train_x) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=steps, pct_start=0.25)
    x_all = torch.from_numpy(train_x).permute(0, 3, 1, 2).contiguous()
    y_all = torch.from_numpy(train_y.astype(np.int64))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_all), generator=g)
        for s in range(0, len(order) - batch + 1, batch):
            idx = order[s : s + batch]
            x = normalise(random_crop_flip(x_all[idx], padding=4, generator=g))
            loss = nn.functional.cross_entropy(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(test_x), 1000):
            correct += int((model(normalise(test_x[s : s + 1000])).argmax(1) == test_y[s : s + 1000]).sum())
    return correct / len(test_x)


def decode_all(path: Path, r: dcqformat.DcqReader, order: np.ndarray, reconstruct: str) -> np.ndarray:
    """Every training image, dropped patches refilled as the loaders do (once: the MAE is
    deterministic and runs before augmentation, so this equals refilling on the fly)."""
    if r.patch_size is None:
        return r.decode_batch(order)
    mode, _, snap = reconstruct.partition("+")  # "smooth+snap": snapped to each image's palette
    rec = Reconstructor(mode, weights=r.weights_blob(), patch=r.patch_size, snap=snap == "snap")  # type: ignore[arg-type]
    return np.concatenate([refilled_images(r, order[s : s + 1000], rec) for s in range(0, len(order), 1000)])


