"""The settings and summary of a conversion, and what its stages share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .options import QUANTIZERS, ConvertConfig, OptionError

if TYPE_CHECKING:
    from .output import Written

__all__ = ["QUANTIZERS", "ConvertConfig", "ConvertSummary", "OptionError", "Stage", "pick_device"]


@dataclass
class ConvertSummary:
    samples_in: int = 0
    written: int = 0
    reported: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    file_bytes: int = 0
    raw_bytes: int = 0  # raw uint8 bytes of the written images
    raw_bytes_in: int = 0  # raw uint8 bytes of every image read, when selection kept only some
    source_bytes: int | None = None
    device: str = ""
    model: dict = field(default_factory=dict)
    mae: dict = field(default_factory=dict)
    dropped_pixels: int = 0  # pixels left out of the payload by patch dropping
    mask_bytes: int = 0  # what the drop masks cost
    mae_bytes: int = 0  # what the embedded MAE costs
    budget: str = ""  # what --bytes-per-image chose, and why
    config: ConvertConfig | None = None  # the settings the conversion ran with (after a byte budget)

    def add(self, written: Written) -> None:
        """Take in what writing the file produced."""
        self.written += written.written
        self.raw_bytes += written.raw_bytes
        self.dropped_pixels += written.dropped_pixels
        self.mask_bytes += written.mask_bytes
        self.mae_bytes = written.mae_bytes
        self.mae = written.mae

    def drop_balance(self, bits: int) -> str | None:
        """What dropping saved against what it costs (masks, MAE), and where it starts to pay."""
        if not self.dropped_pixels:
            return None
        saved = self.dropped_pixels * bits / 8 - self.mask_bytes
        text = f"{saved:,.0f} B of pixels saved (masks included), MAE {self.mae_bytes:,} B"
        if saved < self.mae_bytes:
            need = self.mae_bytes / max(saved / max(self.written, 1), 1e-9)
            text += (f": the file is larger than without dropping; dropping pays off from about "
                     f"{need:,.0f} images like these")
        return text

    def table(self, cfg: ConvertConfig) -> str:
        cfg = self.config or cfg
        rows = [("samples in", f"{self.samples_in:,}"), ("written", f"{self.written:,}"),
                ("reported (unreadable)", f"{self.reported:,}"), ("method", cfg.method),
                ("bits", str(cfg.bits)), ("codec", cfg.codec),
                ("clusters", str(cfg.clusters) if cfg.method in ("dcq", "autopalette-shared") else "per image"),
                ("device", self.device), ("file bytes", f"{self.file_bytes:,}"),
                ("bytes / image", f"{self.file_bytes / max(self.written, 1):,.1f}"),
                ("x smaller than raw uint8", f"{self.raw_bytes / max(self.file_bytes, 1):.1f}")]
        if self.budget:
            rows.append(("byte budget", self.budget))
        if self.raw_bytes_in:
            rows.append(("x smaller than raw, all images read", f"{self.raw_bytes_in / max(self.file_bytes, 1):.1f}"))
        if self.mae:
            rows.append(("MAE", f"{self.mae['steps']} steps on {self.mae['images']:,} images, {self.mae['device']}"
                         + (" (stopped by its time limit)" if self.mae["stopped_by_time"] else "")))
        balance = self.drop_balance(cfg.bits)
        if balance:
            rows.append(("dropping", balance))
        if self.source_bytes:
            rows.append(("x smaller than the source files", f"{self.source_bytes / max(self.file_bytes, 1):.2f}"))
        rows += [(f"time: {k}", f"{v:.1f} s") for k, v in self.stages.items()]
        rows.append(("time: total", f"{sum(self.stages.values()):.1f} s"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def pick_device(name: str) -> torch.device:
    """The torch device of ``--device``; an :class:`OptionError` when it is unknown or absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        if device.type != "cpu":
            torch.empty(0, device=device)  # the device exists and its backend runs here
    except (RuntimeError, AssertionError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OptionError("device", f"{name!r} is not usable here ({reason})") from None
    return device


class Stage:
    def __init__(self, summary: ConvertSummary, name: str) -> None:
        self.summary, self.name = summary, name

    def __enter__(self) -> None:
        self.t = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.summary.stages[self.name] = self.summary.stages.get(self.name, 0.0) + time.perf_counter() - self.t


