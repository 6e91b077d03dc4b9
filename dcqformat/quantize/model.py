"""The attention/feature model: a small CNN trained on the dataset being converted.

``shallow`` (the first block, globally average-pooled) gives DCQ's clustering features;
``deep`` (the last convolutional block) is where Grad-CAM++ looks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import DcqError
from ..pipeline.distributed import Group
from ..pipeline.imaging import to_input
from ..pipeline.progress import progress as progress_of


def _block(i: int, o: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                         nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class AttentionNet(nn.Module):
    """Three conv blocks (32, 64, 128 channels) and a linear classifier."""

    def __init__(self, classes: int, channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.classes, self.channels, self.width = classes, channels, width
        self.shallow = _block(channels, width, 1)
        self.mid = _block(width, 2 * width, 2)
        self.deep = _block(2 * width, 4 * width, 2)
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor, keep: bool = False) -> Any:
        s = self.shallow(x)
        d = self.deep(self.mid(s))
        logits = self.head(d.mean((2, 3)))
        return (logits, s, d) if keep else logits


@dataclass
class TrainReport:
    epochs: int
    images: int
    seconds: float
    train_accuracy: float


def train_attention(images: np.ndarray, labels: np.ndarray, classes: int, *, epochs: int, size: int,
                    device: torch.device, seed: int, batch: int = 128, progress: bool = False,
                    group: Group | None = None) -> tuple[AttentionNet, TrainReport]:
    """Train :class:`AttentionNet` from scratch (crop + flip augmentation, SGD, one-cycle).

    Over several processes (``group``) each rank trains on its ``images`` with DDP: batches of
    ``batch // world`` per rank (the same global batch), as many steps on every rank (the
    fewest any rank can make), gradients averaged, the same weights everywhere."""
    group = group or Group()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1_000_003 * group.rank if group.distributed else seed)
    net = AttentionNet(classes, images.shape[3]).to(device)
    model: nn.Module = net
    if group.distributed:
        from torch.nn.parallel import DistributedDataParallel

        batch = max(1, batch // group.world)
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = group.min(epochs * (len(images) // batch))  # 0: too few images for one batch, no training
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=max(1, steps), pct_start=0.25)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels.astype(np.int64))
    t0, step, correct, seen = time.perf_counter(), 0, 0, 0
    model.train()
    for _ in progress_of(range(epochs), "attention model", total=epochs, unit="epochs", enabled=progress):
        order = torch.randperm(len(images), generator=g)
        for s in range(0, len(order) - batch + 1, batch):
            if step >= steps:
                break
            idx = order[s : s + batch]
            x = to_input(x_all[idx], size)
            pad = nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
            oy, ox = torch.randint(0, 9, (2,), generator=g).tolist()
            x = pad[:, :, oy : oy + size, ox : ox + size]
            if torch.rand(1, generator=g).item() < 0.5:
                x = x.flip(3)
            x, y = x.to(device), y_all[idx].to(device)
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
    net.eval()
    return net, TrainReport(epochs, group.sum(len(images)), time.perf_counter() - t0,
                            group.sum(correct) / max(group.sum(seen), 1))


def save_model(model: AttentionNet, path: str) -> None:
    """A state dict with the architecture's arguments, as safetensors (no pickle)."""
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path,
              metadata={"arch": "AttentionNet", "classes": str(model.classes), "channels": str(model.channels),
                        "width": str(model.width)})


def load_model(path: str, device: torch.device) -> AttentionNet:
    """Load a model saved by :func:`save_model` (safetensors) or a TorchScript file; a
    :class:`DcqError` naming the file when it is neither."""
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(path, "pt") as f:
                meta = f.metadata() or {}
            model = AttentionNet(int(meta["classes"]), int(meta["channels"]), int(meta["width"]))
            model.load_state_dict(load_file(path))
            return model.to(device).eval()
        return torch.jit.load(path, map_location=device).eval()
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors, TorchScript and state-dict errors have no common base
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise DcqError(f"--model {path}: not an attention model saved by dcq (.safetensors) nor TorchScript "
                       f"({first})") from None
