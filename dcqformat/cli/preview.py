"""``dcq preview``: originals (when the source is given) above decoded images and palette swatches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..format.reader import DcqReader
from ..format.reader import open as open_dcq
from ..pipeline.sources import Sizing, iter_images, open_source
from .refill import refilling_decoder


def _tile(img: np.ndarray, side: int) -> np.ndarray:
    rgb = img if img.shape[2] == 3 else img.repeat(3, 2)
    return np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.NEAREST))


def preview(path: str | Path, out: str | Path, source: str | None = None, count: int = 16, side: int = 64) -> Path:
    """Write a PNG grid: one column per sample; rows original (if ``source``), decoded, palette."""
    r = open_dcq(path)
    if len(r) == 0:  # a WebDataset sidecar: its palettes only
        return _palettes_only(r, out, count, side)
    n = min(count, len(r))
    picks = np.linspace(0, len(r) - 1, n).astype(int) if n else np.zeros(0, int)
    rows = []
    if source is not None:
        wanted = {int(r.source_indices[i]): k for k, i in enumerate(picks)}
        originals: list[np.ndarray | None] = [None] * n
        conf = r.meta.get("quantizer", {}).get("config", {}) if isinstance(r.meta.get("quantizer"), dict) else {}
        sizing = Sizing(conf.get("resize"), conf.get("max_size"), bool(conf.get("center_crop")))  # as converted
        for item in iter_images(open_source(source), r.channels, sizing=sizing):
            if item.index in wanted and item.image is not None:
                originals[wanted[item.index]] = item.image
            if all(o is not None for o in originals):
                break
        rows.append([_tile(o, side) if o is not None else np.zeros((side, side, 3), np.uint8) for o in originals])
    decode = refilling_decoder(r)  # dropped patches refilled as the loaders do
    rows.append([_tile(decode(np.array([i]))[0], side) for i in picks])
    rows.append([_swatch(r.palettes[int(r.palette_ids[i])], side) for i in picks])
    return _save(rows, out, side)


def _swatch(palette: np.ndarray, side: int) -> np.ndarray:
    pal = np.array(palette)
    pal = pal if pal.shape[1] == 3 else pal.repeat(3, 1)
    bar = np.repeat(pal[None], side // 4, 0)  # (side/4, K, 3)
    return np.asarray(Image.fromarray(bar).resize((side, side // 4), Image.Resampling.NEAREST))


def _palettes_only(r: DcqReader, out: str | Path, count: int, side: int) -> Path:
    return _save([[_swatch(p, side) for p in r.palettes[:count]]], out, side)


def _save(rows: list[list[np.ndarray]], out: str | Path, side: int) -> Path:
    n = len(rows[0])
    gap = 4
    lines = []
    for row in rows:
        h = row[0].shape[0]
        line = np.full((h + gap, n * (side + gap) + gap, 3), 255, np.uint8)
        for k, tile in enumerate(row):
            line[gap // 2 : gap // 2 + h, gap + k * (side + gap) : gap + k * (side + gap) + side] = tile
        lines.append(line)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(lines, 0)).save(path)
    return path
