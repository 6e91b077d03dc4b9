"""The MAE's size, chosen from the dataset: the largest model that costs at most a tenth of what
dropping saves, so that the embedded weights never eat the gain of dropping; none at all when
even the smallest would (the loaders' harmonic fill needs no weights).

What dropping saves is estimated before anything is written: each image loses ``fraction`` of
its pixels at ``bits`` each, shrunk by the codec's usual ratio on such pixels (the entropy codecs
code fewer bits per pixel than ``bits``, and far fewer on the smooth patches that ``drop_by="fill"``
drops), less one bit per patch for the drop mask.
"""

from __future__ import annotations

import math

from .model import MAE, MAEConfig
from .store import mae_to_bytes

# width, depth and heads of the encoder; width of the decoder (one layer)
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"dim": 32, "depth": 2, "heads": 2, "decoder_dim": 32},
    "small": {"dim": 64, "depth": 2, "heads": 2, "decoder_dim": 48},
    "base": {"dim": 96, "depth": 3, "heads": 3, "decoder_dim": 64},
    "large": {"dim": 128, "depth": 4, "heads": 4, "decoder_dim": 96},
}
SHARE = 0.1  # the MAE may cost at most this share of the bytes dropping saves
# coded bytes per packed byte of an index map, typical of each codec (bench_frontier, 1-4 bits)
CODEC_RATIO = {"packed": 1.0, "zstd": 0.7, "ctx": 0.45, "ctxs": 0.46, "ctxg": 0.49}
# the same for the patches drop_by="fill" drops, the smoothest (bench_drop, CIFAR-10 2-bit: of the
# 64 B of packed pixels dropped per image, zstd saves 20 B and ctx 9 B)
FILL_CODEC_RATIO = {"packed": 1.0, "zstd": 0.32, "ctx": 0.15, "ctxs": 0.15, "ctxg": 0.16}


def weight_bytes(config: MAEConfig, precision: str = "int8") -> int:
    """Bytes of the WGHT section of ``config``: :func:`~dcqformat.mae.mae_to_bytes` of the model,
    header included (the values do not change the size)."""
    return len(mae_to_bytes(MAE(config), precision))


def saved_bytes(images: int, height: int, width: int, patch: int, fraction: float, bits: int, codec: str,
                drop_by: str = "fill") -> float:
    """What dropping ``fraction`` of the patches (chosen by ``drop_by``) of ``images`` images of
    ``height`` x ``width`` saves, estimated: the dropped pixels' coded bits less the masks."""
    grid = math.ceil(height / patch) * math.ceil(width / patch)
    dropped = int(fraction * grid + 0.5) * patch * patch
    ratio = (FILL_CODEC_RATIO if drop_by == "fill" else CODEC_RATIO).get(codec, 1.0)
    per_image = dropped * bits / 8 * ratio - math.ceil(grid / 8)
    return max(per_image, 0.0) * images


def mae_config(size: str, *, images: int, height: int, width: int, channels: int, patch: int, fraction: float,
               bits: int, codec: str, precision: str = "int8", drop_by: str = "fill") -> MAEConfig | None:
    """The MAE config of ``size`` ("tiny" .. "large"; "none": None), or for "auto" the largest
    size whose weights cost at most :data:`SHARE` of :func:`saved_bytes`, None when not even
    "tiny" does (the harmonic fill then refills for free)."""
    def config(name: str) -> MAEConfig:  # every size refines the harmonic fill (prior 1)
        return MAEConfig(patch=patch, channels=channels, prior=1, **SIZES[name])

    if size == "none":
        return None
    if size != "auto":
        if size not in SIZES:
            raise ValueError(f"MAE size must be auto or one of {', '.join(SIZES)}, got {size!r}")
        return config(size)
    budget = SHARE * saved_bytes(images, height, width, patch, fraction, bits, codec, drop_by)
    fitting = [name for name in SIZES if weight_bytes(config(name), precision) <= budget]
    return config(fitting[-1]) if fitting else None


def size_name(config: MAEConfig) -> str:
    """The name of ``config``'s size in :data:`SIZES`, or "custom"."""
    shape = {k: getattr(config, k) for k in SIZES["tiny"]}
    return next((name for name, spec in SIZES.items() if spec == shape), "custom")
