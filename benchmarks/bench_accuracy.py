"""Accuracy of a model trained from scratch on compressed data, tested on the original test set.

Usage: python -m benchmarks.bench_accuracy [--train 10000] [--epochs 10] [--bits 1 2 4]
           [--methods original dcq mediancut octree kmeans] [--seeds 0 1]

CPU configuration of the quantizer issue: 10,000 random CIFAR-10 training images (fixed
draw), a fixed small CNN, 10 epochs, random crop (padding 4) + flip, SGD with one-cycle
learning rate; the same seed and schedule for every method. Each method converts the
training images to a .dcq file (cached in out/accuracy/), which is decoded and trained on;
the test set is the original 10,000 CIFAR-10 test images. The final epoch is reported (never
the best test epoch). Writes benchmarks/results/bench_accuracy.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import dcqformat
from benchmarks.common import save, table
from benchmarks.training import decode_all, train_eval
from dcqformat.cli import sample_data
from dcqformat.conversion import ConvertConfig, convert

WORK = Path("out/accuracy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--bits", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--methods", nargs="+", default=["original", "dcq", "mediancut", "octree", "kmeans"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench_accuracy", help="name of the results file (benchmarks/results/NAME.json)")
    ap.add_argument("--dcq", default="", help="extra DCQ settings, e.g. 'clusters=64,cluster_features=lab' or "
                    "'drop_patches=0.25'")
    ap.add_argument("--reconstruct", nargs="+", default=["mae"],
                    choices=[m + s for m in ("mae", "smooth", "mean", "none") for s in ("", "+snap")],
                    help="how dropped patches are refilled (files converted with drop_patches): a row for each")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    WORK.mkdir(parents=True, exist_ok=True)
    src = WORK / f"cifar10-train-random{args.train}.npz"
    if not src.exists():
        full = sample_data.load_cifar10(None)
        pick = np.sort(np.random.default_rng(2026).choice(len(full.images), args.train, replace=False))
        np.savez(src, x=full.images[pick], y=full.labels[pick], classes=np.array(full.classes))
    train = np.load(src)
    test = sample_data.load_cifar10(None, split="test")
    test_x = torch.from_numpy(test.images).permute(0, 3, 1, 2).contiguous()
    test_y = torch.from_numpy(test.labels.astype(np.int64))
    rows: list[dict] = []
    for bits in args.bits:
        for method in args.methods:
            if method == "original" and any(r["method"] == "original" for r in rows):
                continue
            if method == "original":
                x, conv_s, size = train["x"], 0.0, train["x"].nbytes
            else:
                extra = {k: type(getattr(ConvertConfig(), k))(v) for k, v in
                         (kv.split("=") for kv in args.dcq.split(",") if kv)} if method == "dcq" else {}
                tag = "".join(f"-{k}{v}" for k, v in extra.items())
                path = WORK / f"{method}{tag}-{bits}bit-{args.train}.dcq"
                conv_s = 0.0
                if not path.exists():
                    t = time.time()
                    convert(str(src), path, ConvertConfig(method=method, bits=bits, **extra), progress=False)
                    conv_s = time.time() - t
                r = dcqformat.open(path, verify=True)
                order = np.argsort(r.source_indices)
                size = path.stat().st_size
                assert np.array_equal(r.labels[order], train["y"])
            modes = args.reconstruct if method != "original" and r.patch_size is not None else [None]
            for mode in modes:
                if method != "original":
                    x = decode_all(path, r, order, mode or "none")
                accs = [train_eval(x, train["y"], test_x, test_y, args.epochs, seed) for seed in args.seeds]
                name = method + (f" ({args.dcq})" if method == "dcq" and args.dcq else "")
                if mode is not None:
                    name += f", refill {mode}"
                rows.append({"method": name, "bits": "-" if method == "original" else bits,
                             "accuracy": 100 * float(np.mean(accs)), "per_seed": [100 * a for a in accs],
                             "bytes_per_image": size / len(x), "convert_s": conv_s})
                print(f"  {name} {bits}-bit: {rows[-1]['accuracy']:.2f}% {rows[-1]['per_seed']}", file=sys.stderr)
    orig = next((r["accuracy"] for r in rows if r["method"] == "original"), None)
    recovery = {}
    for bits in args.bits:
        dcq = next((r["accuracy"] for r in rows if r["method"].startswith("dcq") and r["bits"] == bits), None)
        mc = next((r["accuracy"] for r in rows if r["method"] == "mediancut" and r["bits"] == bits), None)
        if None not in (orig, dcq, mc) and orig != mc:
            recovery[bits] = (dcq - mc) / (orig - mc)
    for r in rows:
        r["seeds"] = len(r["per_seed"])
    print(f"CIFAR-10, {args.train} training images, {args.epochs} epochs, seeds {args.seeds}; test: original 10k")
    print(table(rows, [("method", "method", ""), ("bits", "bits", ""), ("accuracy", "test accuracy %", ".2f"),
                       ("bytes_per_image", "B/image", ",.0f"), ("seeds", "seeds", "d")]))
    for bits, v in recovery.items():
        print(f"{bits}-bit: (dcq - mediancut) / (original - mediancut) = {v:.2f}")
    out = save(args.out, {"args": vars(args), "rows": rows, "recovery": recovery, "seconds": time.time() - t0})
    print(f"written {out}")


if __name__ == "__main__":
    main()
