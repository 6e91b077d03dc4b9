"""Accuracy per byte: the proxy accuracy against bytes per image for every storage a user could pick.

Usage: python -m benchmarks.bench_frontier [--dataset cifar10|caltech64] [--train 10000] [--epochs 10]
           [--seeds 0 1] [--configs original webp30 dcq3 dcq2+deband dcq2+learned ...]
           [--plot benchmarks/results/frontier.png] [--name NAME]

The training set and network of bench_accuracy (10,000 random CIFAR-10 training images, fixed
small CNN, 10 epochs, crop + flip; tested on the original 10,000 test images; final epoch, mean
of the seeds). Each *configuration* fixes the training pixels: the original JPEG-decoded images,
Pillow WebP and JPEG re-encodings at several qualities, and DCQ / per-image MedianCut / k-means
at 1-4 bits (optionally dithered). A palette configuration is trained once and its bytes are
reported in every codec (packed, zstd, ctx): the codec changes the bytes, never the pixels.
A ``+deband`` or ``+learned`` suffix trains on the palette images dequantized as the loaders'
``dequantize=`` says (the debanding filter; the learned dequantizer that ``dcq convert
--dequantizer auto`` trains and stores, its bytes counted); those rows give the ctx file only.
Decode speed is images per second on one core (one thread), in the same run.

``--dataset caltech64``: the second dataset, real photos: the 2,020 Caltech-101 training photos
of ../shared/data (101 classes) resized to 64 px (short side, centre crop), tested on its 1,010
test photos; WebP/JPEG rows re-encode the same 64 px photos, the original row stores them as PNG.

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
from dcqformat.dequant import train
from dcqformat.loaders.dequantize import Restorer
from dcqformat.loaders.reconstruct import refilled_images
from dcqformat.pipeline.sources import tar_samples

WORK = Path(os.environ.get("DCQ_FRONTIER_DIR", "out/frontier"))
CALTECH_SIDE = 64
CORRECTION_STEP = 6  # the palette corrections of a "c" configuration (dcq convert --palette-corrections 6)
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


def caltech_set(split: str) -> tuple[np.ndarray, np.ndarray, Path]:
    """The Caltech-101 photos of ``split`` at CALTECH_SIDE px (short side, centre crop), their
    labels, and an .npz of them (what the palette files are converted from)."""
    src = WORK / f"caltech101-{split}-{CALTECH_SIDE}.npz"
    if not src.exists():
        from benchmarks.bench_photos import load_photos

        shared = Path(__file__).resolve().parents[2] / "shared/data/caltech101"
        root = Path(os.environ.get("DCQ_CALTECH101_DIR", shared))
        x, y, _ = load_photos(root / split, CALTECH_SIDE, None)
        np.savez(src, x=x, y=y)
    d = np.load(src)
    return d["x"], d["y"], src


def palette_file(method: str, bits: int, src: Path, dither: bool, without: str = "", corrections: int = 0) -> Path:
    tag = f"{src.stem}-" if "caltech" in src.stem else ""
    path = WORK / f"{tag}{method}-{bits}bit{'-dither' if dither else ''}{'-no' + without if without else ''}" \
        f"{f'-pc{corrections}' if corrections else ''}.dcq"
    if not path.exists():
        extra: dict = {"dither": True} if dither else {}
        if corrections:
            extra["palette_corrections"] = corrections
        if without:
            extra["palette_losses"] = ",".join(t for t in ("max", "balance", "align") if t != without)
        convert(str(src), path, ConvertConfig(method=method, bits=bits, **extra), progress=False)
    return path


def with_dequantizer(path: Path, originals: np.ndarray) -> Path:
    """The file plus the learned dequantizer that ``dcq convert --dequantizer auto`` would train
    for it (the same sizing, sample bound, training and held-out check, on the file's own palette
    images), or the file itself when auto keeps none (the rows say so)."""
    out = path.with_name(f"{path.stem}.learned.dcq")
    if out.exists():
        return out
    with dcqformat.open(path) as r:
        h, w = (int(v) for v in r.shapes[0])
        config = train.choose_config("auto", images=len(r), pixels=h * w, channels=r.channels, bits=r.bits)
        pick = np.sort(np.random.default_rng(11).choice(len(r), min(len(r), 2000), replace=False))
        quantized = list(r.decode_batch(pick))
        outcome = None if config is None else train.fit(
            quantized, list(originals[r.source_indices[pick]]), config, keep_if_better=True, seconds=120.0)
        if outcome is None:
            return path
        return recode(path, r.codec, out, outcome)


def dequantized(r: dcqformat.DcqReader, order: np.ndarray, mode: str) -> np.ndarray:
    """Every training image as the loaders give it with ``dequantize=mode`` (N, H, W, C)."""
    restorer = Restorer(mode, weights=r.weights_blob("DEQW"))  # type: ignore[arg-type]
    return np.concatenate([refilled_images(r, order[s : s + 1000], None, restorer)
                           for s in range(0, len(order), 1000)])


def recode(path: Path, codec: str, out: Path | None = None, deq: train.DequantOutcome | None = None) -> Path:
    """The same samples, palettes and models in another codec (and a dequantizer added)."""
    out = out or path.with_name(f"{path.stem}.{codec}.dcq")
    if out.exists():
        return out
    with dcqformat.open(path) as r:
        meta = {**r.meta, "dequantizer": deq.meta} if deq else r.meta
        models = {s: r.weights_blob(s) for s in ("WGHT", "DEQW")} | ({"DEQW": deq.weights} if deq else {})
        stored = r.corrections()  # palette corrections stay corrections (PCOR), not per-image palettes
        parents, deltas = stored if stored is not None else (r.palette_ids, None)
        with dcqformat.DcqWriter(out, bits=r.bits, palettes=r.palettes[: r.shared_palette_count], codec=codec,
                                 meta=meta, correction_step=r.correction_step) as w:
            for section, blob in models.items():
                if blob is not None:
                    w.set_weights(blob, section)
            for i in range(len(r)):
                w.add(r.indices(i), palette=int(parents[i]), label=int(r.labels[i]),
                      source_index=int(r.source_indices[i]), correction=None if deltas is None else deltas[i])
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
                    test: tuple[torch.Tensor, torch.Tensor], epochs: int, dataset: str = "cifar10") -> float:
    tag = "" if dataset == "cifar10" else f"{dataset}-"
    path = WORK / f"acc-{tag}{name}-e{epochs}-n{len(labels)}-s{seed}.json"
    if path.exists():
        return float(json.loads(path.read_text())["accuracy"])
    t = time.time()
    acc = train_eval(pixels(), labels, *test, epochs, seed, classes=int(max(labels.max(), test[1].max())) + 1)
    path.write_text(json.dumps({"accuracy": acc, "seconds": time.time() - t}))
    return acc


def frontier(rows: list[dict]) -> None:
    """Mark the rows no other row beats in both bytes (fewer) and accuracy (higher)."""
    for r in rows:
        r["frontier"] = not any(o["bytes"] <= r["bytes"] and o["accuracy"] >= r["accuracy"]
                                and (o["bytes"], o["accuracy"]) != (r["bytes"], r["accuracy"]) for o in rows)


def plot(datasets: list[tuple[str, list[dict]]], out: Path) -> None:
    """One panel per dataset: accuracy against bytes, each family a line, the frontier dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(9 * len(datasets), 5.5), dpi=110, squeeze=False)
    for ax, (title, rows) in zip(axes[0], datasets):
        _panel(ax, plt, title, rows)
    fig.tight_layout()
    fig.savefig(out)


def _panel(ax, plt, title: str, rows: list[dict]) -> None:  # type: ignore[no-untyped-def]
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
    ax.set_ylabel(f"proxy test accuracy % ({title})")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")


PANELS = (("CIFAR-10", ("bench_frontier", "bench_frontier_dequantize", "bench_frontier_corrections",
                       "bench_frontier_deband_corrections")),
          ("Caltech-101, 64 px", ("bench_frontier_caltech64", "bench_frontier_caltech64_more")))


def plot_saved(out: Path) -> None:
    """The plot of the saved results of both datasets (a panel's files merged, the later file's
    row kept where both have a storage; the frontier marked anew)."""
    found = []
    for title, names in PANELS:
        rows: dict[str, dict] = {}
        for name in names:
            path = Path(f"benchmarks/results/{name}.json")
            if path.exists():
                rows.update({r["storage"]: r for r in json.loads(path.read_text())["rows"]})
        if rows:
            merged = sorted(rows.values(), key=lambda r: r["bytes"])
            frontier(merged)
            found.append((title, merged))
    plot(found, out)


def load(dataset: str, n: int) -> tuple[np.ndarray, np.ndarray, Path, tuple[torch.Tensor, torch.Tensor], dict]:
    """Training images, labels, the source the palette files are converted from, the test set,
    and the original row's storage (name, bytes per image, its blobs for the decode rate)."""
    if dataset == "cifar10":
        x, y, jpeg_bytes, src = training_set(n)
        test_set = sample_data.load_cifar10(None, split="test")
        tx, ty = test_set.images, test_set.labels
        root = sample_data.find_cifar10()
        assert root is not None
        blobs = [s["jpg"] for _, s in zip(range(2000), tar_samples(sorted(root.glob("cifar10-train-*.tar"))))]
        original = {"storage": "original (JPEG source)", "bytes": float(jpeg_bytes.mean()), "blobs": blobs}
    else:
        x, y, src = caltech_set("train")
        tx, ty, _ = caltech_set("test")
        blobs = []
        for img in x:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            blobs.append(buf.getvalue())
        original = {"storage": f"original {CALTECH_SIDE} px (PNG)", "bytes": float(np.mean([len(b) for b in blobs])),
                    "blobs": blobs[:2000]}
    test = (torch.from_numpy(tx).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(ty.astype(np.int64)))
    return x, y, src, test, original


def main() -> None:  # noqa: C901
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["cifar10", "caltech64"], default="cifar10")
    ap.add_argument("--train", type=int, default=10000, help="CIFAR-10 training images (caltech64: all 2,020)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--configs", nargs="+", default=DEFAULT,
                    help="original, webpQ, jpegQ, and {dcq,mc,km,ap,aps}BITS with an optional 'd' suffix (dithered; "
                         "ap: autopalette, aps: autopalette-shared), then an optional 'c' (dcq: palette corrections) "
                         "and an optional +deband or +learned")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", default="benchmarks/results/frontier.png")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from the saved results (both datasets)")
    ap.add_argument("--name", default=None, help="results file name (default bench_frontier, or "
                    "bench_frontier_caltech64; another name keeps a partial comparison from replacing the frontier's)")
    args = ap.parse_args()
    name = args.name or ("bench_frontier" if args.dataset == "cifar10" else "bench_frontier_caltech64")
    if args.plot_only:
        plot_saved(Path(args.plot))
        return
    torch.set_num_threads(args.threads)
    t0 = time.time()
    WORK.mkdir(parents=True, exist_ok=True)
    x, y, src, test, original = load(args.dataset, args.train)
    rows: list[dict] = []

    def accuracy(cfg: str, pixels: Callable[[], np.ndarray]) -> list[float]:
        return [cached_accuracy(cfg, s, pixels, y, test, args.epochs, args.dataset) for s in args.seeds]

    for cfg in args.configs:
        if cfg == "original":
            accs = accuracy(cfg, lambda: x)
            blobs = original["blobs"]
            rate = per_core_rate(lambda blobs=blobs: [np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
                                                      for b in blobs], len(blobs))
            rows.append({"storage": original["storage"], "family": "original", "bytes": original["bytes"],
                         "accuracy": 100 * float(np.mean(accs)), "per_seed": accs, "decode_img_s": rate})
        elif cfg.startswith(("webp", "jpeg")):
            fmt, q = cfg[:4], int(cfg[4:])
            pix, nbytes, dec = pillow(x, "WEBP" if fmt == "webp" else "JPEG", q)
            accs = accuracy(cfg, lambda pix=pix: pix)
            rows.append({"storage": f"{fmt.upper()} q{q}", "family": fmt.upper(), "bytes": nbytes,
                         "accuracy": 100 * float(np.mean(accs)), "per_seed": accs,
                         "decode_img_s": per_core_rate(dec, min(2000, len(x)))})
        else:
            base, _, mode = cfg.partition("+")  # e.g. dcq2+deband: trained on debanded images
            base, _, without = base.partition("-no")  # e.g. ap2-nomax: autopalette without L_m
            corrections = CORRECTION_STEP if base.endswith("c") else 0  # e.g. dcq2c: with palette corrections
            base = base.removesuffix("c")
            dither = base.endswith("d")
            key, bits = base.rstrip("d")[:-1], int(base.rstrip("d")[-1])
            method = PALETTE_METHODS[key]
            path = palette_file(method, bits, src, dither, without, corrections)
            if mode:  # the ctx file, with the learned dequantizer if auto keeps one
                path = recode(path, "ctx") if mode == "deband" else with_dequantizer(recode(path, "ctx"), x)
            with dcqformat.open(path) as r:
                order = np.argsort(r.source_indices)
                assert np.array_equal(r.labels[order], y)
                if mode == "learned" and r.weights_blob("DEQW") is None:
                    print(f"  {cfg}: auto kept no dequantizer ({r.meta.get('dequantizer')}); skipped", file=sys.stderr)
                    continue
                pix = dequantized(r, order, mode or "lookup")
                deq = r.meta.get("dequantizer")
            accs = accuracy(cfg, lambda pix=pix: pix)
            codecs = ["ctx"] if mode else ["packed", "zstd", "ctx"] if bits <= 4 else ["packed", "zstd"]
            for codec in codecs:
                f = path if mode or codec == "packed" else recode(path, codec)
                r = dcqformat.open(f)
                kernels.set_parallel(False)
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                idx = np.arange(min(len(r), 2000 if mode else 5000))
                restorer = Restorer(mode or "lookup", weights=r.weights_blob("DEQW"))  # type: ignore[arg-type]
                rate = per_core_rate(lambda r=r, idx=idx, restorer=restorer, mode=mode: [
                    refilled_images(r, idx[s : s + 256], None, restorer) if mode else r.decode_batch(idx[s : s + 256])
                    for s in range(0, idx.size, 256)], idx.size)
                torch.set_num_threads(threads)
                kernels.set_parallel(True)
                variant = (" dithered" if dither else "") + (f" without L_{without}" if without else "") + \
                    (f" +corrections (step {corrections})" if corrections else "") + \
                    (f" +{mode}" if mode else "")
                label = f"{method}{variant} {bits}-bit, {codec}"
                rows.append({"storage": label, "family": f"{method}{variant}, {codec}",
                             "bytes": f.stat().st_size / len(r), "accuracy": 100 * float(np.mean(accs)),
                             "per_seed": accs, "decode_img_s": rate, **({"dequantizer": deq} if deq else {})})
        print(f"  {rows[-1]['storage']}: {rows[-1]['accuracy']:.2f}% at {rows[-1]['bytes']:.0f} B "
              f"({time.time() - t0:.0f} s)", file=sys.stderr)
        partial = sorted(rows, key=lambda r: r["bytes"])
        frontier(partial)
        save(name, {"args": vars(args), "rows": partial, "complete": False, "seconds": time.time() - t0})
    rows.sort(key=lambda r: r["bytes"])
    frontier(rows)
    what = f"CIFAR-10, {len(y)} training images" if args.dataset == "cifar10" else \
        f"Caltech-101 at {CALTECH_SIDE} px, {len(y)} training photos"
    print(f"{what}, {args.epochs} epochs, seeds {args.seeds}; bytes per image of the file (all sections) or of the "
          "image blobs; decode (and dequantize) on one core")
    print(table(rows, [("storage", "storage", ""), ("bytes", "B/image", ",.0f"), ("accuracy", "accuracy %", ".2f"),
                       ("decode_img_s", "decode img/s/core", ",.0f"), ("frontier", "on frontier", "")]))
    out = save(name, {"args": vars(args), "rows": rows, "complete": True, "seconds": time.time() - t0})
    plot_saved(Path(args.plot))
    print(f"written {out} and {args.plot}")


if __name__ == "__main__":
    main()
