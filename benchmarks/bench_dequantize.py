"""What dequantizing costs the loaders: lookup, the debanding filter and the learned dequantizer,
on CIFAR-10 (32 px) and on Caltech-101 photos (224 px), through a DataLoader with 2 workers.

Usage: python -m benchmarks.bench_dequantize [--cifar 5000] [--photos 400] [--epochs 2]

Each dataset is converted to 2-bit MedianCut (``ctx`` at 32 px, ``ctxs`` at 224 px; the method
does not change decode speed) and given the learned dequantizer ``dcq convert --dequantizer
auto`` would train (bench_frontier's ``with_dequantizer``: same sizing, training and held-out
check). Rows: images per second of wall time and per CPU-second (this process and its workers)
in steady state (persistent workers, one untimed epoch first), the ratio to lookup in the same
run; ``learned`` without the refill cache is what every epoch costs when the cache is off or
too small (with it, later epochs read the restored images). Also the network alone: ms per
image on one thread. Writes benchmarks/results/bench_dequantize.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import dcqformat
from benchmarks.bench_frontier import CALTECH_SIDE, WORK, with_dequantizer
from benchmarks.bench_photos import load_photos, pipeline_rate
from benchmarks.common import best_time, machine, save, table
from dcqformat.cli import sample_data
from dcqformat.conversion import ConvertConfig, convert
from dcqformat.dequant import dequantizer_from_bytes
from dcqformat.loaders import DCQDataset, RandomCrop, RandomResizedCrop


def files(cifar: int, photos: int) -> list[tuple[str, Path, np.ndarray, object]]:
    """(name, file with a dequantizer, originals, augment) per dataset."""
    WORK.mkdir(parents=True, exist_ok=True)
    out = []
    c = sample_data.load_cifar10(cifar)
    np.savez(WORK / f"deq-cifar{cifar}.npz", x=c.images, y=c.labels)
    out.append(("CIFAR-10, 32 px", WORK / f"deq-cifar{cifar}.npz", c.images, RandomCrop(32, padding=4, flip=0.5)))
    root = Path(__file__).resolve().parents[2] / "shared/data/caltech101"
    x, y, _ = load_photos(root / "test", 224, photos)
    np.savez(WORK / f"deq-caltech224-{photos}.npz", x=x, y=y)
    out.append(("Caltech-101, 224 px", WORK / f"deq-caltech224-{photos}.npz", x, RandomResizedCrop(224, flip=0.5)))
    done = []
    for name, src, originals, augment in out:
        codec = "ctx" if originals.shape[1] <= 64 else "ctxs"
        path = src.with_suffix(f".{codec}.dcq")
        if not path.exists():
            convert(str(src), path, ConvertConfig(method="mediancut", bits=2, codec=codec), progress=False)
        done.append((name, with_dequantizer(path, originals), originals, augment))
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar", type=int, default=5000)
    ap.add_argument("--photos", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    rows = []
    for name, path, _originals, augment in files(args.cifar, args.photos):
        r = dcqformat.open(path)
        deq = r.meta.get("dequantizer", {})
        if r.weights_blob("DEQW") is None:
            print(f"{name}: auto kept no dequantizer; learned rows skipped")
        model = dequantizer_from_bytes(r.weights_blob("DEQW")) if r.weights_blob("DEQW") else None
        base = None
        for mode, cache in (("lookup", False), ("deband", False), ("learned", False), ("learned", True)):
            if mode == "learned" and model is None:
                continue
            ds = DCQDataset(path, dequantize=mode, augment=augment, refill_cache=cache)  # type: ignore[arg-type]

            def make(ds: DCQDataset = ds) -> DataLoader:
                return DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=2, persistent_workers=True)

            wall, cpu = pipeline_rate(make, args.epochs)
            base = base or wall
            rows.append({"dataset": name, "mode": mode + (" (refill cache)" if cache else ""), "img_s": wall,
                         "img_cpu_s": cpu, "vs_lookup": wall / base})
            print(f"  {name} {rows[-1]['mode']}: {wall:,.0f} img/s ({wall / base:.2f}x lookup)", flush=True)
        if model is not None:
            torch.set_num_threads(1)
            h, w = (int(v) for v in r.shapes[0])
            batch = torch.from_numpy(r.decode_batch(np.arange(16), layout="NCHW"))
            ms = best_time(lambda m=model, b=batch: m.restore(b), repeats=3) / len(batch) * 1e3
            torch.set_num_threads(2)
            rows.append({"dataset": name, "mode": f"network alone, {h}x{w}, one thread: {ms:.2f} ms/image "
                         f"({deq.get('config')}, {deq.get('bytes')} B, {deq.get('macs_per_pixel')} MACs/px)",
                         "ms_per_image": ms})
            rows.append({"dataset": name, "mode": "held-out PSNR dB: lookup {holdout_lookup_psnr}, deband "
                         "{holdout_deband_psnr}, learned {holdout_learned_psnr}".format(**deq), **deq})
    cols = [("dataset", "dataset", ""), ("mode", "dequantize", ""), ("img_s", "img/s", ",.0f"),
            ("img_cpu_s", "img/CPU-s", ",.0f"), ("vs_lookup", "vs lookup", ".2f")]
    print(f"DataLoader, 2 workers, batch {args.batch}, augmentation as in training; {time.strftime('%Y-%m-%d')}")
    print(table(rows, cols))
    save("bench_dequantize", {"machine": machine(), "args": vars(args), "rows": rows,
                              "photo_side": 224, "frontier_side": CALTECH_SIDE})


if __name__ == "__main__":
    main()
