"""Accuracy per byte: the proxy accuracy against bytes per image for every storage a user could pick.

Usage: python -m benchmarks.bench_frontier [--train 10000] [--epochs 10] [--seeds 0 1]
           [--configs original webp30 dcq3 ...] [--plot benchmarks/results/frontier.png] [--name NAME]

The training set and network of bench_accuracy (10,000 random CIFAR-10 training images, fixed
small CNN, 10 epochs, crop + flip; tested on the original 10,000 test images; final epoch, mean
of the seeds). Each *configuration* fixes the training pixels: the original JPEG-decoded images,
Pillow WebP and JPEG re-encodings at several qualities, and DCQ / per-image MedianCut / k-means
at 1-4 bits (optionally dithered). A palette configuration is trained once and its bytes are
reported in every codec (packed, zstd, ctx): the codec changes the bytes, never the pixels.
Decode speed is images per second on one core (one thread), in the same run.

Trained accuracies are cached in out/frontier/ (one JSON per configuration and seed), so a run
that stops can be continued; bytes and decode speeds are measured afresh every run. The cache
is keyed by configuration name: after changing a quantizer, delete its files there. Writes
benchmarks/results/bench_frontier.json and a PNG plot of accuracy against bytes with the
frontier (the configurations no other beats in both) marked.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import dcqformat
from benchmarks.common import save, table
from benchmarks.training import train_eval
from dcqformat.cli import sample_data
from dcqformat.conversion import ConvertConfig, convert
from dcqformat.decode import kernels
from dcqformat.pipeline.sources import tar_samples

WORK = Path(os.environ.get("DCQ_FRONTIER_DIR", "out/frontier"))
PALETTE_METHODS = {"dcq": "dcq", "mc": "mediancut", "km": "kmeans", "ap": "autopalette", "aps": "autopalette-shared"}
DEFAULT = ["original", "webp0", "webp10", "webp30", "webp60", "jpeg50", "dcq1", "dcq2", "dcq3", "dcq4",
           "mc2", "mc4", "km2", "km4"]


def training_set(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Path]:
    """bench_accuracy's draw of ``n`` training images (same seed), their labels and source JPEG sizes."""
    src = WORK / f"cifar10-train-random{n}.npz"
    if not src.exists():
        full = sample_data.load_cifar10(None)
        pick = np.sort(np.random.default_rng(2026).choice(len(full.images), n, replace=False))
        root = sample_data.find_cifar10()
        assert root is not None
        sizes = np.array([len(s["jpg"]) for s in tar_samples(sorted(root.glob("cifar10-train-*.tar")))])
        np.savez(src, x=full.images[pick], y=full.labels[pick], jpeg_bytes=sizes[pick])
    d = np.load(src)
    return d["x"], d["y"], d["jpeg_bytes"], src


def pillow(images: np.ndarray, fmt: str, quality: int) -> tuple[np.ndarray, float, Callable[[], None]]:
    """Pillow re-encoding: decoded pixels, mean bytes, and a decode pass over 2,000 of them."""
    blobs = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt, quality=quality)
        blobs.append(buf.getvalue())
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])

    def decode() -> None:
        for b in blobs[:2000]:
            np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))

    return pixels, float(np.mean([len(b) for b in blobs])), decode


def palette_file(method: str, bits: int, src: Path, dither: bool, without: str = "") -> Path:
    path = WORK / f"{method}-{bits}bit{'-dither' if dither else ''}{'-no' + without if without else ''}.dcq"
    if not path.exists():
        extra: dict = {"dither": True} if dither else {}
        if without:
            extra["palette_losses"] = ",".join(t for t in ("max", "balance", "align") if t != without)
        convert(str(src), path, ConvertConfig(method=method, bits=bits, **extra), progress=False)
    return path


def recode(path: Path, codec: str) -> Path:
    """The same samples and palettes in another codec."""
    out = path.with_name(f"{path.stem}.{codec}.dcq")
    if out.exists():
        return out
    with dcqformat.open(path) as r, dcqformat.DcqWriter(out, bits=r.bits, palettes=r.palettes, codec=codec,
                                                        meta=r.meta) as w:
        for i in range(len(r)):
            w.add(r.indices(i), palette=int(r.palette_ids[i]), label=int(r.labels[i]),
                  source_index=int(r.source_indices[i]))
    return out


def per_core_rate(fn: Callable[[], None], n: int) -> float:
    fn()
    best = min(_timed(fn) for _ in range(3))
    return n / best


def _timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cached_accuracy(name: str, seed: int, pixels: Callable[[], np.ndarray], labels: np.ndarray,
                    test: tuple[torch.Tensor, torch.Tensor], epochs: int) -> float:
    path = WORK / f"acc-{name}-e{epochs}-n{len(labels)}-s{seed}.json"
    if path.exists():
        return float(json.loads(path.read_text())["accuracy"])
    t = time.time()
    acc = train_eval(pixels(), labels, *test, epochs, seed)
    path.write_text(json.dumps({"accuracy": acc, "seconds": time.time() - t}))
    return acc


def frontier(rows: list[dict]) -> None:
    """Mark the rows no other row beats in both bytes (fewer) and accuracy (higher)."""
    for r in rows:
        r["frontier"] = not any(o["bytes"] <= r["bytes"] and o["accuracy"] >= r["accuracy"]
                                and (o["bytes"], o["accuracy"]) != (r["bytes"], r["accuracy"]) for o in rows)


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    families = sorted({r["family"] for r in rows})
    colours = plt.get_cmap("tab20").colors
    markers = {"packed": "o", "zstd": "s", "ctx": "^"}
    for k, fam in enumerate(families):
        pts = sorted((r["bytes"], r["accuracy"], r["storage"]) for r in rows if r["family"] == fam)
        marker = markers.get(fam.rsplit(", ", 1)[-1], "D")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, ls="-", label=fam, alpha=0.85,
                color=colours[k % len(colours)], lw=2.2 if fam.endswith("ctx") or "WEBP" in fam else 1.0)
    front = sorted((r["bytes"], r["accuracy"]) for r in rows if r["frontier"])
    ax.step([p[0] for p in front], [p[1] for p in front], "k--", where="post", lw=1, label="frontier")
    for r in rows:
        if r["frontier"]:
            ax.annotate(r["storage"], (r["bytes"], r["accuracy"]), fontsize=6, xytext=(3, -8),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image (log)")
    ax.set_ylabel("proxy test accuracy % (CIFAR-10)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:  # noqa: C901
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--configs", nargs="+", default=DEFAULT,
                    help="original, webpQ, jpegQ, and {dcq,mc,km,ap,aps}BITS with an optional 'd' suffix (dithered; "
                         "ap: autopalette, aps: autopalette-shared)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", default="benchmarks/results/frontier.png")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from results/bench_frontier.json")
    ap.add_argument("--name", default="bench_frontier", help="results file name (default bench_frontier; another "
                    "name keeps a partial comparison from replacing the frontier's results)")
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads(Path("benchmarks/results/bench_frontier.json").read_text())["rows"], Path(args.plot))
        return
    torch.set_num_threads(args.threads)
    t0 = time.time()
    WORK.mkdir(parents=True, exist_ok=True)
    x, y, jpeg_bytes, src = training_set(args.train)
    test_set = sample_data.load_cifar10(None, split="test")
    test = (torch.from_numpy(test_set.images).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(test_set.labels.astype(np.int64)))
    rows: list[dict] = []
    for cfg in args.configs:
        if cfg == "original":
            accs = [cached_accuracy(cfg, s, lambda: x, y, test, args.epochs) for s in args.seeds]
            root = sample_data.find_cifar10()
            assert root is not None
            jpgs = [s["jpg"] for _, s in zip(range(2000), tar_samples(sorted(root.glob("cifar10-train-*.tar"))))]
            rate = per_core_rate(lambda jpgs=jpgs: [np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
                                                    for b in jpgs], len(jpgs))
            rows.append({"storage": "original (JPEG source)", "family": "original", "bytes": float(jpeg_bytes.mean()),
                         "accuracy": 100 * float(np.mean(accs)), "per_seed": accs, "decode_img_s": rate})
        elif cfg.startswith(("webp", "jpeg")):
            fmt, q = cfg[:4], int(cfg[4:])
            pix, nbytes, dec = pillow(x, "WEBP" if fmt == "webp" else "JPEG", q)
            accs = [cached_accuracy(cfg, s, lambda pix=pix: pix, y, test, args.epochs) for s in args.seeds]
            rows.append({"storage": f"{fmt.upper()} q{q}", "family": fmt.upper(), "bytes": nbytes,
                         "accuracy": 100 * float(np.mean(accs)), "per_seed": accs,
                         "decode_img_s": per_core_rate(dec, min(2000, len(x)))})
        else:
            base, _, without = cfg.partition("-no")  # e.g. ap2-nomax: autopalette without L_m
            dither = base.endswith("d")
            key, bits = base.rstrip("d")[:-1], int(base.rstrip("d")[-1])
            method = PALETTE_METHODS[key]
            path = palette_file(method, bits, src, dither, without)
            with dcqformat.open(path) as r:
                order = np.argsort(r.source_indices)
                assert np.array_equal(r.labels[order], y)
                pix = r.decode_batch(order)
            accs = [cached_accuracy(cfg, s, lambda pix=pix: pix, y, test, args.epochs) for s in args.seeds]
            codecs = ["packed", "zstd", "ctx"] if bits <= 4 else ["packed", "zstd"]
            for codec in codecs:
                f = recode(path, codec) if codec != "packed" else path
                r = dcqformat.open(f)
                kernels.set_parallel(False)
                idx = np.arange(min(len(r), 5000))
                rate = per_core_rate(lambda r=r, idx=idx: [r.decode_batch(idx[s : s + 256])
                                                           for s in range(0, idx.size, 256)], idx.size)
                kernels.set_parallel(True)
                variant = (" dithered" if dither else "") + (f" without L_{without}" if without else "")
                name = f"{method}{variant} {bits}-bit, {codec}"
                rows.append({"storage": name, "family": f"{method}{variant}, {codec}",
                             "bytes": f.stat().st_size / len(r), "accuracy": 100 * float(np.mean(accs)),
                             "per_seed": accs, "decode_img_s": rate})
        print(f"  {rows[-1]['storage']}: {rows[-1]['accuracy']:.2f}% at {rows[-1]['bytes']:.0f} B "
              f"({time.time() - t0:.0f} s)", file=sys.stderr)
        partial = sorted(rows, key=lambda r: r["bytes"])
        frontier(partial)
        save(args.name, {"args": vars(args), "rows": partial, "complete": False, "seconds": time.time() - t0})
    rows.sort(key=lambda r: r["bytes"])
    frontier(rows)
    print(f"CIFAR-10, {args.train} training images, {args.epochs} epochs, seeds {args.seeds}; "
          "bytes per image of the file (all sections) or of the image blobs; decode on one core")
    print(table(rows, [("storage", "storage", ""), ("bytes", "B/image", ",.0f"), ("accuracy", "accuracy %", ".2f"),
                       ("decode_img_s", "decode img/s/core", ",.0f"), ("frontier", "on frontier", "")]))
    plot(rows, Path(args.plot))
    out = save(args.name, {"args": vars(args), "rows": rows, "complete": True, "seconds": time.time() - t0})
    print(f"written {out} and {args.plot}")


if __name__ == "__main__":
    main()
