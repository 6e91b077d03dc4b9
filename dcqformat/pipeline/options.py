"""The settings of a conversion: method names and :class:`ConvertConfig`, with every range check.

No torch here: ``dcq convert`` checks its options before the quantizer (and torch) is imported,
and ``dcqformat.quantize`` / ``dcqformat.select`` take their method names from this module.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .. import _layout as L
from .. import codecs

QUANTIZERS = ("dcq", "mediancut", "octree", "kmeans", "autopalette", "autopalette-shared")
SELECTIONS = ("random", "dq", "adq", "graphcut")
CLUSTER_FEATURES = ("shallow", "lab", "both")
SELECT_FEATURES = ("gradient", "penultimate")
ALPHA_MODES = ("drop", "composite")
ON_ERROR = ("skip", "fail")
MAE_SIZES = ("auto", "none", "tiny", "small", "base", "large")  # dcqformat.mae.sizing.SIZES, named without torch
DEQUANTIZER_SIZES = ("none", "auto", "tiny", "small", "base")  # dcqformat.dequant.train.SIZE_NAMES
MAE_WEIGHTS = ("int8", "float16")
DROP_BY = ("both", "fill", "attention")  # how patches to drop are scored: quantize.drop.drop_scores


class OptionError(ValueError):
    """A setting out of its range; ``option`` is the setting's name (a ConvertConfig field)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


@dataclass
class ConvertConfig:
    """Every setting of a conversion; recorded in the file's metadata. :meth:`check` validates."""

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
    drop_by: str = "fill"  # the harmonic fill's error per patch (quantize.drop.drop_scores)
    patch_size: int | None = None  # None: native to the image size (drop.native_patch)
    mae: str | None = None  # reuse the MAE of a .dcq file or a .safetensors checkpoint
    mae_epochs: int = 30
    mae_images: int = 10000
    mae_seconds: float | None = None  # None: 240 s on a CPU, no limit on a GPU
    mae_size: str = "auto"  # the MAE's width and depth: auto (from the data, mae.sizing) or a named size
    mae_weights: str = "int8"  # how WGHT stores the MAE's matrices: int8 (per-tensor scale) or float16
    dequantizer: str = "none"  # the learned dequantizer (DEQW): none, auto (kept when it beats debanding) or a size
    dequantizer_seconds: float | None = None  # its training time limit: None = 60 s on a CPU, none on a GPU
    palette_seconds: float | None = None  # autopalette's network: None = 180 s on a CPU, no limit on a GPU
    palette_losses: str = "max,balance,align"  # autopalette's auxiliary losses (the paper's ablation drops one)
    keep: float = 1.0  # sample selection: the fraction of each class to keep
    select: str = "dq"  # random, dq, adq or graphcut
    bins: int = 10
    select_features: str = "gradient"  # gradient (DQ's last-layer gradient embedding) or penultimate
    adq_alpha: float = 0.65
    codec: str = "packed"
    dither: bool = False  # Floyd-Steinberg error diffusion through each image's palette
    palette_corrections: int = 0  # dcq, 1-4 bits: each image's shared palette corrected in steps of this (PCOR); 0: off
    bytes_per_image: float | None = None  # a budget: bits and codec chosen to fit it (dcqformat.conversion.budget)
    work_dir: str | None = None  # where finished stages are kept (None: .DST.work beside the output)
    resume: bool = True  # continue after the finished stages a killed run of the same conversion left
    channels: int = 3
    resize: int | None = None  # shorter side scaled to this while reading (keep aspect)
    center_crop: bool = False  # with resize: the central resize x resize square
    max_size: int | None = None  # longer side scaled down to at most this while reading
    alpha: str = "drop"
    on_error: str = "skip"
    limit: int | None = None
    seed: int = 0
    device: str = "auto"
    batch: int = 256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConvertConfig:
        """A checked config from a dict of settings; unknown names are an :class:`OptionError`."""
        known = {f.name for f in fields(cls)}
        for name in d:
            if name not in known:
                raise OptionError(name, f"unknown setting (known: {', '.join(sorted(known))})")
        cfg = cls(**d)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Raise :class:`OptionError` naming the first setting out of its range."""
        for name, choices in (("method", QUANTIZERS), ("select", SELECTIONS), ("cluster_features", CLUSTER_FEATURES),
                              ("select_features", SELECT_FEATURES), ("alpha", ALPHA_MODES), ("on_error", ON_ERROR),
                              ("codec", tuple(L.CODECS)), ("mae_size", MAE_SIZES), ("mae_weights", MAE_WEIGHTS),
                              ("dequantizer", DEQUANTIZER_SIZES),
                              ("drop_by", DROP_BY)):
            if getattr(self, name) not in choices:
                raise OptionError(name, f"must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        ints: dict[str, tuple[int, int | None]] = {
                "bits": (L.MIN_BITS, L.MAX_BITS), "clusters": (1, L.MAX_PALETTES), "model_epochs": (0, 10_000),
                "model_size": (8, 1024), "model_images": (1, None), "pool_images": (1, None),
                "sample_pixels": (1, None), "pool_pixels": (1, None), "reassign": (0, 1000),
                "refine_steps": (0, 100_000), "refine_images": (1, None), "patch_size": (1, L.MAX_SIDE),
                "mae_epochs": (0, 10_000), "mae_images": (1, None), "bins": (1, 100_000), "limit": (1, None),
                "seed": (0, 2**63 - 1), "batch": (1, 1 << 20), "resize": (1, L.MAX_SIDE), "max_size": (1, L.MAX_SIDE),
                "palette_corrections": (0, 255)}
        optional = {"patch_size", "limit", "resize", "max_size"}
        for name, (lo, hi) in ints.items():
            v = getattr(self, name)
            if v is None and name in optional:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
                span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
                raise OptionError(name, f"must be an integer {span}, got {v!r}")
        for name in ("dither", "center_crop", "resume"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(name, f"must be true or false, got {getattr(self, name)!r}")
        if self.center_crop and self.resize is None:
            raise OptionError("center_crop", "needs resize (the side of the square)")
        losses = [t for t in str(self.palette_losses).split(",") if t]
        if not isinstance(self.palette_losses, str) or any(t not in ("max", "balance", "align") for t in losses):
            raise OptionError("palette_losses",
                              f"must be a comma list of max, balance, align, got {self.palette_losses!r}")
        if self.codec in L.CODECS and self.bits > codecs.max_bits(self.codec):
            raise OptionError("bits", f"codec {self.codec} codes 1..{codecs.max_bits(self.codec)} bits, got "
                              f"{self.bits} (use packed or zstd)")
        if self.palette_corrections and (self.method != "dcq" or self.bits > L.PCOR_MAX_BITS):
            raise OptionError("palette_corrections", f"corrects the shared palettes of method dcq at "
                              f"1..{L.PCOR_MAX_BITS} bits, got method {self.method} at {self.bits} bits")
        if self.channels not in L.CHANNELS:
            raise OptionError("channels", f"must be 1 or 3, got {self.channels!r}")
        floats: dict[str, tuple[float, float, bool]] = {
            "attention_fraction": (0.0, 1.0, False), "fidelity": (0.0, 1e6, True), "drop_patches": (0.0, 1.0, True),
            "keep": (0.0, 1.0, False), "adq_alpha": (0.0, 1.0, True), "mae_seconds": (0.0, math.inf, False),
            "dequantizer_seconds": (0.0, math.inf, False), "bytes_per_image": (0.0, math.inf, False),
            "palette_seconds": (0.0, math.inf, False)}
        for name, (least, most, closed) in floats.items():
            v = getattr(self, name)
            if v is None and name in ("mae_seconds", "dequantizer_seconds", "bytes_per_image", "palette_seconds"):
                continue
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
                and (least <= v if closed else least < v) and v <= most
            if name == "drop_patches":
                ok = ok and v < 1.0
            if not ok:
                left, right = "[" if closed else "(", ")" if name == "drop_patches" else "]"
                raise OptionError(name, f"must be a number in {left}{least:g}, {most:g}{right}, got {v!r}")
        if not isinstance(self.device, str) or not _device_name(self.device):
            raise OptionError("device", f"must be auto, cpu, cuda, cuda:N or another torch device, got {self.device!r}")


def _device_name(name: str) -> bool:
    kind, _, index = name.partition(":")
    return kind.isidentifier() and (not index or index.isdigit())
