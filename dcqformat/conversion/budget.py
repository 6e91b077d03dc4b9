"""A byte budget per image (``dcq convert --bytes-per-image B``): the bits and codec that fit it.

The choice is made on an evenly spaced sample of the images before anything is trained: each
is quantized at every bit depth with per-image MedianCut (whose index maps code like the
method's own; dithered when the conversion dithers) and written in every codec. The bytes per
image are estimated as the sample's payloads and records, plus the codec's model or
dictionary, the file's fixed overhead, and the palettes shared over the whole dataset
(``clusters`` palettes for DCQ; one palette per image for the per-image methods), and with
palette corrections their half byte per colour channel (1-4 bits only). The most
bits that fit win (more bits train closer to the original); among the codecs that fit at
those bits, the fastest to decode (packed, then zstd, then ctx).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _layout as L
from .. import codecs
from ..errors import DcqError
from ..format.reader import open as open_dcq
from ..format.writer import DcqWriter
from ..pipeline.imaging import ImageCache
from ..pipeline.options import ConvertConfig
from ..quantize.simple_quant import pillow_quantize

DECODE_ORDER = ("packed", "zstd", "ctxg", "ctxs", "ctx")  # fastest to decode first (ctxs: on crops)
FILE_OVERHEAD = 4096  # header, section table, metadata, alignment: bytes per file, about


@dataclass(frozen=True)
class Estimate:
    bits: int
    codec: str
    bytes_per_image: float


def estimates(cache: ImageCache, cfg: ConvertConfig, sample: int = 64) -> list[Estimate]:
    """Estimated bytes per image of every (bits, codec), from ``sample`` images of ``cache``."""
    from ..quantize.dither import dither

    n = len(cache)
    picks = np.unique(np.linspace(0, n - 1, min(sample, n)).round().astype(np.int64))
    images = [cache.image(int(i)) for i in picks]
    out = []
    with tempfile.TemporaryDirectory(prefix="dcq-budget-") as tmp:
        for bits in L.BITS:
            if cfg.palette_corrections and bits > L.PCOR_MAX_BITS:
                continue  # corrections are for 1-4 bits
            maps = []
            for img in images:
                idx, pal = pillow_quantize(img, bits)
                if cfg.dither:
                    idx = dither(img[None], pal[None].astype(np.uint8))[0]
                maps.append(idx)
            k = 1 << bits
            shared = cfg.method in ("dcq", "autopalette-shared")
            palettes = (min(cfg.clusters, n) if shared else n) * k * cfg.channels / n
            if cfg.palette_corrections:
                palettes += k * cfg.channels / 2  # each image's correction (PCOR)
            for codec in DECODE_ORDER:
                if bits > codecs.max_bits(codec):
                    continue
                path = Path(tmp) / f"{bits}-{codec}.dcq"
                with DcqWriter(path, bits=bits, channels=cfg.channels, codec=codec,
                               palettes=np.zeros((1, k, cfg.channels), np.uint8), dict_samples=len(maps)) as w:
                    for idx in maps:
                        w.add(idx, palette=0)
                with open_dcq(path) as r:
                    per_sample = sum(r.header.sections[t].length for t in (L.TAG_DATA, L.TAG_RECS)) / len(maps)
                    model = sum(r.header.sections[t].length for t in L.CODEC_TAGS if t in r.header.sections)
                out.append(Estimate(bits, codec, per_sample + (model + FILE_OVERHEAD) / n + palettes))
    return out


def choose(found: list[Estimate], budget: float) -> Estimate:
    """The most bits that fit ``budget``, with the fastest codec that fits at those bits."""
    fits = [e for e in found if e.bytes_per_image <= budget]
    if not fits:
        least = min(found, key=lambda e: e.bytes_per_image)
        raise DcqError(f"no setting fits {budget:g} bytes per image: the smallest estimate is "
                       f"{least.bytes_per_image:.0f} B ({least.bits} bits, {least.codec})")
    bits = max(e.bits for e in fits)
    return min((e for e in fits if e.bits == bits), key=lambda e: DECODE_ORDER.index(e.codec))
