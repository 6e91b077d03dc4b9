"""A tiny CNN and a two-epoch training loop shared by the training tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

import dcqformat
from dcqformat.cli import sample_data
from dcqformat.quantize import simple_quant

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def small_cnn(classes: int = 10) -> nn.Module:
    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, classes))


def photo_split(tmp: Path, bits: int = 2) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """The embedded photo crops: 512 training images as a 2-bit .dcq, 128 held out (original)."""
    data = sample_data.load_photo_crops()
    path = tmp / "photos.dcq"
    with dcqformat.DcqWriter(path, bits=bits, meta={"classes": data.classes}) as w:
        for img, y in zip(data.images[:512], data.labels[:512]):
            idx, pal = simple_quant.mediancut(img, bits)
            w.add(idx, palette=w.add_palette(pal), label=int(y))
    test_x = torch.from_numpy(data.images[512:]).permute(0, 3, 1, 2).float() / 255
    test_x = (test_x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    return path, test_x, torch.from_numpy(data.labels[512:])


def train(batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]], test_x: torch.Tensor,
          test_y: torch.Tensor, epochs: int = 2, seed: int = 0) -> tuple[float, list[float]]:
    """Train the tiny CNN; return the held-out accuracy and the mean loss of each epoch."""
    torch.manual_seed(seed)
    model = small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    losses = []
    for _ in range(epochs):
        model.train()
        total, count = 0.0, 0
        for x, y in batches():
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(y), count + len(y)
        losses.append(total / count)
    model.eval()
    with torch.no_grad():
        acc = (model(test_x).argmax(1) == test_y).float().mean().item()
    return acc, losses


def chance_level(labels: np.ndarray) -> float:
    return float(np.bincount(labels).max() / len(labels))
