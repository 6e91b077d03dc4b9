"""The demo job: quantize a small image set, write .dcq files, read them back, report."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import sample_data, simple_quant
from .reader import open as open_dcq
from .writer import DcqWriter


def _decode_rate(reader, reps: int = 5) -> float:  # type: ignore[no-untyped-def]
    idx = np.arange(len(reader))
    out = reader.decode_batch(idx)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        reader.decode_batch(idx, out=out)
        best = min(best, time.perf_counter() - t)
    return len(idx) / best


def run(out_dir: Path, limit: int = 2000, bits: int = 2, dataset: str = "auto") -> dict[str, float]:
    """Run the demo; return the figures it prints."""
    data = sample_data.load_default(limit, dataset)
    n = len(data.images)
    print(f"dataset: {data.name}, {n} images {data.images.shape[1]}x{data.images.shape[2]}, "
          f"{len(data.classes)} classes")
    quantized, palettes = [], []
    for img in tqdm(data.images, desc=f"mediancut {bits}-bit", unit="img"):
        idx, pal = simple_quant.mediancut(img, bits)
        quantized.append(idx)
        palettes.append(pal)
    meta = {"name": data.name, "classes": data.classes, "color_space": "sRGB",
            "quantizer": {"name": "mediancut", "config": {"bits": bits, "per_image": True}},
            "provenance": {"source": data.name, "samples": n}}
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for codec in ("packed", "zstd"):
        path = out_dir / f"demo-{codec}.dcq"
        with DcqWriter(path, bits=bits, channels=3, codec=codec, meta=meta) as w:
            for i, (idx, pal) in enumerate(zip(quantized, palettes)):
                w.add(idx, palette=w.add_palette(pal), label=int(data.labels[i]), source_index=i)
        sizes[codec] = path.stat().st_size
    reader = open_dcq(out_dir / "demo-packed.dcq", verify=True)
    expected = np.stack([p[i] for i, p in zip(quantized, palettes)])
    decoded = reader.decode_batch(np.arange(n))
    if not np.array_equal(decoded, expected):
        raise SystemExit("demo: decoded images differ from the quantized ones")
    rate = _decode_rate(reader)
    copy_best = min(_timed(lambda: np.copyto(decoded, expected)) for _ in range(5))
    raw = data.images.nbytes
    figures = {"samples": n, "raw_bytes": raw, "source_bytes": data.source_bytes,
               "packed_bytes": sizes["packed"], "zstd_bytes": sizes["zstd"],
               "decode_img_per_s": rate, "numpy_copy_img_per_s": n / copy_best}
    print(f"\n{'':14}{'bytes':>12}{'bytes/img':>11}{'vs raw':>8}")
    for name, b in [("raw uint8", raw), ("source files", data.source_bytes),
                    ("dcq packed", sizes["packed"]), ("dcq zstd", sizes["zstd"])]:
        print(f"{name:14}{b:>12,}{b / n:>11.1f}{raw / b:>7.1f}x")
    print(f"\ndecode_batch: {rate:,.0f} img/s (numpy copy of the decoded array: {n / copy_best:,.0f} img/s)")
    print(f"round trip exact; files in {out_dir}/")
    return figures


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
