"""Sample selection: accuracy at keep 10% / 30% (random, dq, adq, graphcut; original colours and
DCQ 2-bit), and selection time and memory on CIFAR-10 and on a synthetic class of 100,000.

Usage: python benchmarks/bench_select.py [--n 50000] [--keeps 0.1 0.3] [--seeds 0]
           [--methods random dq adq graphcut] [--colours original dcq] [--epochs 10]

Selection runs on the CIFAR-10 training set (first ``--n`` images) with the quantizer's own
attention model (trained once here as ``dcq convert`` trains it) and the default features (DQ's
gradient embedding). Accuracy: the fixed CNN of bench_accuracy.py trained from scratch on the
selected images (as they are, or as a 2-bit DCQ file of the whole set decodes them), tested on
the original test set. Results go to benchmarks/results/bench_select.json.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_accuracy import decode_all, train_eval  # noqa: E402
from common import save, table  # noqa: E402

import dcqformat  # noqa: E402
from dcqformat import sample_data  # noqa: E402
from dcqformat.quantize import ConvertConfig, convert  # noqa: E402
from dcqformat.quantize.cache import ImageCache  # noqa: E402
from dcqformat.quantize.model import train_attention  # noqa: E402
from dcqformat.select import graphcut, select  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--keeps", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--methods", nargs="+", default=["random", "dq", "adq", "graphcut"])
    ap.add_argument("--colours", nargs="+", default=["original", "dcq"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--synthetic", type=int, default=100_000)
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    WORK.mkdir(parents=True, exist_ok=True)
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
    timing, rows = [], []
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
    feats = torch.randn(args.synthetic, 128, generator=torch.Generator().manual_seed(0))
    with PeakRss() as mem:
        t = time.perf_counter()
        graphcut(feats, args.synthetic // 10)
        secs = time.perf_counter() - t
    timing.append({"what": f"synthetic class of {args.synthetic:,} x 128, GraphCut keep 10%", "seconds": secs,
                   "peak_mb": mem.mb})
    cache.close()
    print(f"CIFAR-10 {args.n:,} training images; attention model {model_s:.0f} s; {args.epochs} epochs, "
          f"seeds {args.seeds}")
    print(table(rows, [("keep", "keep", ""), ("method", "select", ""), ("colours", "colours", ""),
                       ("images", "images", ","), ("accuracy", "test accuracy %", ".2f")]))
    print(table(timing, [("what", "selection", ""), ("seconds", "seconds", ".1f"),
                         ("peak_mb", "peak MB above start", ",.0f")]))
    out = save("bench_select", {"args": vars(args), "rows": rows, "timing": timing, "model_s": model_s,
                                "seconds": time.time() - t0})
    print(f"written {out}")


if __name__ == "__main__":
    main()
