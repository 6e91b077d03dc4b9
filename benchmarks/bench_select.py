"""Sample selection: accuracy at keep 10% / 30% (random, dq, adq, graphcut; original colours and
DCQ 2-bit), and selection time and memory on CIFAR-10 and on a synthetic class of 100,000.

Usage: python -m benchmarks.bench_select [--n 50000] [--keeps 0.1 0.3] [--seeds 0]
           [--methods random dq adq graphcut] [--colours original dcq] [--epochs 10]
           [--product adq] [--product-drops 0 0.25]

Selection runs on the CIFAR-10 training set (first ``--n`` images) with the quantizer's own
attention model (trained once here as ``dcq convert`` trains it) and the default features (DQ's
gradient embedding). Accuracy: the fixed CNN of bench_accuracy.py trained from scratch on the
selected images (as they are, or as a 2-bit DCQ file of the whole set decodes them), tested on
the original test set.

Total compression (``--product``): ``dcq convert --bits 2 --keep 0.1 --select METHOD`` with each
``--product-drops`` fraction, run as a user runs it (the attention model, the selection, the
palettes and the MAE all come from the conversion); the file's bytes against the raw uint8 bytes of
all ``--n`` source images, and the accuracy of the same CNN trained on what the file decodes to.

Results go to benchmarks/results/bench_select.json (rewritten after every measurement, so an
interrupted run keeps what it measured).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

import dcqformat
from benchmarks.common import save, table
from benchmarks.training import decode_all, train_eval
from dcqformat.cli import sample_data
from dcqformat.conversion import ConvertConfig, convert
from dcqformat.pipeline.imaging import ImageCache
from dcqformat.quantize.model import train_attention
from dcqformat.select import graphcut, select

WORK = Path("out/select")


class PeakRss:
    """Peak resident memory above the level at entry, sampled every 10 ms."""

    def __enter__(self) -> "PeakRss":
        self.base = self._rss()
        self.peak = self.base
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    @staticmethod
    def _rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    def _run(self) -> None:
        while not self.stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self.stop = True
        self.thread.join()
        self.mb = self.peak - self.base


def synthetic_graphcut(n: int, d: int, keep: float) -> tuple[float, float]:
    """Seconds and peak MB above the start of GraphCut keeping ``keep`` of n random d-vectors."""
    torch.set_num_threads(2)
    feats = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    with PeakRss() as mem:
        t = time.perf_counter()
        graphcut(feats, int(n * keep))
        secs = time.perf_counter() - t
    return secs, mem.mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--keeps", type=float, nargs="*", default=[0.1, 0.3], help="none: skip the accuracy runs")
    ap.add_argument("--methods", nargs="+", default=["random", "dq", "adq", "graphcut"])
    ap.add_argument("--colours", nargs="+", default=["original", "dcq"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--synthetic", type=int, default=100_000, help="size of the synthetic class (0 skips it)")
    ap.add_argument("--product", default="adq", help="selection method of the total-compression runs ('' skips them)")
    ap.add_argument("--product-keep", type=float, default=0.1)
    ap.add_argument("--product-drops", type=float, nargs="+", default=[0.0, 0.25])
    ap.add_argument("--out", default="bench_select", help="name of the results file (benchmarks/results/NAME.json)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    WORK.mkdir(parents=True, exist_ok=True)
    timing, rows, product, model_s = [], [], [], None

    def checkpoint() -> Path:
        return save(args.out, {"args": vars(args), "rows": rows, "timing": timing, "product": product,
                               "model_s": model_s, "seconds": time.time() - t0})

    if args.synthetic:
        # In a fresh process: peak memory above the start is then not hidden by heap that earlier
        # steps freed and GraphCut would reuse.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            secs, peak = pool.submit(synthetic_graphcut, args.synthetic, 128, 0.1).result()
        timing.append({"what": f"synthetic class of {args.synthetic:,} x 128, GraphCut keep 10% (own process)",
                       "seconds": secs, "peak_mb": peak})
        print(f"  synthetic {args.synthetic:,}: {secs:.1f} s, {peak:.0f} MB", file=sys.stderr)
        checkpoint()
    if not args.keeps and not args.product:
        print(table(timing, [("what", "selection", ""), ("seconds", "seconds", ".1f"),
                             ("peak_mb", "peak MB above start", ",.0f")]))
        print(f"written {checkpoint()}")
        return
    data = sample_data.load_cifar10(args.n)
    test = sample_data.load_cifar10(None, split="test")
    test_x = torch.from_numpy(test.images).permute(0, 3, 1, 2).contiguous()
    test_y = torch.from_numpy(test.labels.astype(np.int64))
    cache = ImageCache()
    for i, (im, y) in enumerate(zip(data.images, data.labels)):
        cache.add(im, int(y), i)
    cfg = ConvertConfig()
    t = time.perf_counter()
    pick = np.random.default_rng(0).choice(args.n, min(args.n, cfg.model_images), replace=False)
    model, _ = train_attention(data.images[pick], data.labels[pick], 10, epochs=cfg.model_epochs, size=32,
                               device=torch.device("cpu"), seed=0)
    model_s = time.perf_counter() - t
    decoded = {"original": data.images}
    if "dcq" in args.colours:
        path = WORK / f"dcq-2bit-{args.n}.dcq"
        npz = WORK / f"cifar10-train-{args.n}.npz"
        if not path.exists():
            np.savez(npz, x=data.images, y=data.labels)
            convert(str(npz), path, ConvertConfig(bits=2), progress=False)
        r = dcqformat.open(path)
        decoded["dcq"] = decode_all(path, r, np.argsort(r.source_indices), "mae")
    for keep in args.keeps:
        for method in args.methods:
            with PeakRss() as mem:
                t = time.perf_counter()
                chosen, report = select(cache, model, method=method, keep=keep, seed=0)
                secs = time.perf_counter() - t
            timing.append({"what": f"CIFAR-10 {args.n:,}, {method}, keep {keep}", "seconds": secs, "peak_mb": mem.mb})
            print(f"  {method} keep {keep}: {len(chosen)} in {secs:.1f} s", file=sys.stderr)
            for colours in args.colours:
                accs = [train_eval(decoded[colours][chosen], data.labels[chosen], test_x, test_y, args.epochs, s)
                        for s in args.seeds]
                rows.append({"keep": keep, "method": method, "colours": colours, "images": len(chosen),
                             "accuracy": 100 * float(np.mean(accs)), "per_seed": [100 * a for a in accs]})
                print(f"    {colours}: {rows[-1]['accuracy']:.2f}%", file=sys.stderr)
                checkpoint()
    cache.close()
    checkpoint()
    if args.product:
        npz = WORK / f"cifar10-train-{args.n}.npz"
        if not npz.exists():
            np.savez(npz, x=data.images, y=data.labels)
        for drop in args.product_drops:
            product.append(total_compression(npz, args, drop, data.images.nbytes, test_x, test_y))
            checkpoint()
    print(f"CIFAR-10 {args.n:,} training images; attention model {model_s:.0f} s; {args.epochs} epochs, "
          f"seeds {args.seeds}")
    print(table(rows, [("keep", "keep", ""), ("method", "select", ""), ("colours", "colours", ""),
                       ("images", "images", ","), ("accuracy", "test accuracy %", ".2f")]))
    print(table(timing, [("what", "selection", ""), ("seconds", "seconds", ".1f"),
                         ("peak_mb", "peak MB above start", ",.0f")]))
    if product:
        print(table(product, [("what", "DCQ file", ""), ("bytes", "bytes", ","), ("x_raw", "x smaller than raw", ".1f"),
                              ("saving", "compression %", ".2f"), ("mae_bytes", "of which MAE", ","),
                              ("x_raw_without_mae", "x raw without MAE", ".1f"), ("accuracy", "test accuracy %", ".2f"),
                              ("convert_s", "convert s", ".0f")]))
    print(f"written {checkpoint()}")


def total_compression(npz: Path, args: argparse.Namespace, drop: float, raw_bytes: int, test_x: torch.Tensor,
                      test_y: torch.Tensor) -> dict:
    """Convert as a user would (2 bits, keep, select, drop) and train on what the file decodes to."""
    what = f"2-bit, keep {args.product_keep}, {args.product}" + (f", drop {drop}" if drop else "")
    path = WORK / f"product-{args.product}-keep{args.product_keep}-drop{drop}-{args.n}.dcq"
    t = time.perf_counter()
    summary = convert(str(npz), path, ConvertConfig(bits=2, keep=args.product_keep, select=args.product,
                                                    drop_patches=drop), progress=False)
    convert_s = time.perf_counter() - t
    r = dcqformat.open(path, verify=True)
    order = np.arange(len(r))
    x = decode_all(path, r, order, "mae")
    accs = [train_eval(x, r.labels[order], test_x, test_y, args.epochs, s) for s in args.seeds]
    size = path.stat().st_size
    mae_bytes = len(r.weights_blob() or b"")
    row = {"what": what + (", refill mae" if drop else ""), "images": len(r), "bytes": size, "mae_bytes": mae_bytes,
           "x_raw_without_mae": raw_bytes / (size - mae_bytes),
           "x_raw": raw_bytes / size, "saving": 100 * (1 - size / raw_bytes), "accuracy": 100 * float(np.mean(accs)),
           "per_seed": [100 * a for a in accs], "convert_s": convert_s,
           "mae_steps": summary.mae.get("steps"), "mae_steps_planned": summary.mae.get("steps_planned")}
    print(f"  {row['what']}: {size:,} B, x{row['x_raw']:.1f}, {row['accuracy']:.2f}%", file=sys.stderr)
    return row


if __name__ == "__main__":
    main()
