"""The demo job: convert a small image set with DCQ, compare with MedianCut, read back, preview."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..format.reader import DcqReader
from ..format.reader import open as open_dcq
from . import sample_data


def _decode_rate(reader: DcqReader, reps: int = 5) -> float:
    idx = np.arange(len(reader))
    out = reader.decode_batch(idx)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        reader.decode_batch(idx, out=out)
        best = min(best, float(time.perf_counter() - t))
    return len(idx) / best


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(float(mse), 1e-12)))


def run(out_dir: Path, limit: int = 2000, bits: int = 2, dataset: str = "auto", epochs: int = 8,
        progress: bool = True) -> dict:
    """Run the demo; return the figures it prints."""
    from ..conversion import ConvertConfig, convert
    from .preview import preview

    data = sample_data.load_default(limit, dataset)
    n = len(data.images)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / f"{data.name}-{n}.npz"
    np.savez(src, x=data.images, y=data.labels, classes=np.array(data.classes))
    print(f"dataset: {data.name}, {n} images {data.images.shape[1]}x{data.images.shape[2]}, "
          f"{len(data.classes)} classes")
    figures: dict = {"samples": n, "raw_bytes": data.images.nbytes, "source_bytes": data.source_bytes}
    for method in ("dcq", "mediancut"):
        cfg = ConvertConfig(method=method, bits=bits, model_epochs=epochs)
        path = out_dir / f"demo-{method}.dcq"
        summary = convert(str(src), path, cfg, progress=progress)
        reader = open_dcq(path, verify=True)
        decoded = reader.decode_batch(np.arange(n))
        figures[method] = {"bytes": path.stat().st_size, "psnr_db": _psnr(decoded, data.images),
                           "seconds": sum(summary.stages.values()), "decode_img_per_s": _decode_rate(reader)}
        if method == "dcq":
            print(summary.table(cfg))
    raw = data.images.nbytes
    print(f"\n{bits}-bit {'':10}{'bytes':>12}{'B/img':>8}{'vs raw':>8}{'PSNR dB':>9}{'decode img/s':>14}")
    print(f"{'raw uint8':18}{raw:>12,}{raw / n:>8.0f}{1:>7.1f}x")
    print(f"{'source files':18}{data.source_bytes:>12,}{data.source_bytes / n:>8.0f}{raw / data.source_bytes:>7.1f}x")
    for method in ("dcq", "mediancut"):
        f = figures[method]
        print(f"{method:18}{f['bytes']:>12,}{f['bytes'] / n:>8.0f}{raw / f['bytes']:>7.1f}x{f['psnr_db']:>9.2f}"
              f"{f['decode_img_per_s']:>14,.0f}")
    shown = preview(out_dir / "demo-dcq.dcq", out_dir / "preview.png", source=str(src), count=16)
    print(f"\npreview (originals, DCQ {bits}-bit, palettes): {shown}")
    print("PSNR measures colour fidelity only; what DCQ optimises for is accuracy of a model trained on the "
          "compressed data (benchmarks/bench_accuracy.py).")
    return figures
