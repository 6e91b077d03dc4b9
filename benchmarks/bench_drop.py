"""Patch dropping: file bytes, refill quality, loader speed per refill mode and epoch, MAE cost.

Usage: python -m benchmarks.bench_drop [--train 10000] [--epochs 3] [--workers 2] [--skip-size]

Uses the 10,000-image CIFAR-10 DCQ 2-bit files of bench_accuracy.py (out/accuracy/; run it with
``--methods dcq --bits 2`` and again with ``--dcq drop_patches=0.25``): ``dcq-2bit-10000.dcq``
(no dropping) and ``dcq-drop_patches0.25-2bit-10000.dcq`` (same seed, so the same palettes and
indices; patches of least attention dropped, the MAE sized and trained by the converter).

- Size: the first N samples of out/bench/cifar10-train-20000-2bit.dcq (bench_loader's; for 50,000
  the 20,000 repeat) rewritten with 25% of each image's patches dropped (masks drawn at random:
  bytes depend on how many patches are dropped, not which) and the MAE the converter would embed
  for N images (``--mae-size auto``, int8), in codecs packed and ctx; against the same samples
  undropped. "pays from": the images from which the dropped file is the smaller.
- Refill quality: PSNR over the dropped pixels against the same images quantized without
  dropping, for each refill mode.
- Loader: DataLoader (``--workers``), batch 256, RandomCrop(32, 4) + flip, float32 normalised;
  img/s of each epoch; refilled images are cached (DCQDataset's refill_cache) from the first.
- MAE training: seconds per step of each size on this machine, and the file's MAE report.
Results go to benchmarks/results/bench_drop.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import dcqformat
from benchmarks.common import save, table
from benchmarks.training import MEAN_RGB as MEAN
from benchmarks.training import STD_RGB as STD
from dcqformat import bitpack
from dcqformat.loaders import DCQDataset, RandomCrop
from dcqformat.loaders.reconstruct import Reconstructor, refilled_images
from dcqformat.mae import MAE, mae_to_bytes, train_mae
from dcqformat.mae.sizing import SIZES, mae_config, size_name

WORK = Path("out/accuracy")
SOURCE = Path("out/bench/cifar10-train-20000-2bit.dcq")
MODES = ("mae", "smooth", "mean", "none")


def write(src: dcqformat.DcqReader, path: Path, n: int, codec: str, drop: float,
          rng: np.random.Generator) -> tuple[int, tuple[str, bytes] | None]:
    """Bytes of the first ``n`` samples of ``src`` (cycled) rewritten, ``drop`` of the patches
    dropped, and the MAE embedded (its size name and weights)."""
    mae = None
    if drop:
        config = mae_config("auto", images=n, height=32, width=32, channels=3, patch=4, fraction=drop,
                            bits=src.bits, codec=codec)
        mae = ("none", b"") if config is None else (size_name(config), mae_to_bytes(MAE(config)))
    with dcqformat.DcqWriter(path, bits=src.bits, palettes=np.array(src.palettes), codec=codec,
                             patch_size=4 if drop else None) as w:
        for k in range(n):
            i = k % len(src)
            dropped = None
            if drop:
                dropped = np.zeros(64, bool)
                dropped[rng.choice(64, int(64 * drop + 0.5), replace=False)] = True
                dropped = dropped.reshape(8, 8)
            w.add(src.indices(i), palette=int(src.palette_ids[i]), label=int(src.labels[i]), dropped=dropped)
        if mae and mae[1]:
            w.set_weights(mae[1])
    size = path.stat().st_size
    path.unlink()
    return size, mae


def sizes() -> list[dict]:
    src = dcqformat.open(SOURCE)
    rows = []
    for n in (5000, 10000, 50000):
        for codec in ("packed", "ctx"):
            rng = np.random.default_rng(0)
            plain, _ = write(src, Path(f"out/bench/drop-plain-{n}.dcq"), n, codec, 0.0, rng)
            dropped, mae = write(src, Path(f"out/bench/drop-{n}.dcq"), n, codec, 0.25, rng)
            assert mae is not None
            name, weights = mae
            saved_per_image = (plain - (dropped - len(weights))) / n
            rows.append({"images": n, "codec": codec, "plain_per_image": plain / n, "drop_per_image": dropped / n,
                         "vs_plain": dropped / plain, "mae_size": name, "mae_bytes": len(weights),
                         "pays_from": max(1, int(np.ceil(len(weights) / max(saved_per_image, 1e-9))))})
            print(f"  size {n} {codec}: {rows[-1]['vs_plain']:.3f}x", file=sys.stderr)
    return rows


def quality(drop_file: Path, plain_file: Path) -> list[dict]:
    r, p = dcqformat.open(drop_file), dcqformat.open(plain_file)
    truth = p.decode_batch(np.argsort(p.source_indices))[r.source_indices].astype(np.float64)
    hidden = np.stack([bitpack.dropped_pixels(r.mask(i), *r.patch_size, 32, 32) for i in range(len(r))])
    plain = r.decode_batch(np.arange(len(r)))
    assert np.array_equal(plain[~hidden], truth[~hidden].astype(np.uint8)), "the two files differ in kept pixels"
    rows = []
    for mode in MODES:
        rec = Reconstructor(mode, weights=r.weights_blob(), patch=r.patch_size)  # type: ignore[arg-type]
        refilled_images(r, np.arange(8), rec)  # compile the kernels first
        t = time.perf_counter()
        out = np.concatenate([refilled_images(r, np.arange(s, min(s + 1000, len(r))), rec)
                              for s in range(0, len(r), 1000)])
        secs = time.perf_counter() - t
        mse = ((out.astype(np.float64) - truth) ** 2)[hidden].mean()
        rows.append({"mode": mode, "psnr_dropped": 10 * np.log10(255**2 / mse), "refill_img_s": len(r) / secs})
    return rows


def epoch_rates(make, epochs: int) -> list[float]:  # type: ignore[no-untyped-def]
    loader = make()
    rates = []
    for _ in range(epochs):
        seen, t = 0, time.perf_counter()
        for _, y in loader:
            seen += len(y)
        rates.append(seen / (time.perf_counter() - t))
    return rates


def loaders(drop_file: Path, plain_file: Path, args) -> list[dict]:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    kw = {"batch_size": 256, "shuffle": True, "num_workers": args.workers, "persistent_workers": args.workers > 0}
    crop = RandomCrop(32, padding=4, flip=0.5)
    cases = {"no dropping": (plain_file, "auto")} | {f"drop 0.25, refill {m}": (drop_file, m) for m in MODES}
    rows = []
    for name, (path, mode) in cases.items():
        def make(path=path, mode=mode):  # type: ignore[no-untyped-def]
            return DataLoader(DCQDataset(path, augment=crop, mean=MEAN, std=STD, reconstruct=mode), **kw)

        rates = epoch_rates(make, args.epochs)
        rows.append({"loader": name, "first": rates[0], "later": float(np.mean(rates[1:])), "epochs": rates})
        print(f"  {name}: {[round(r) for r in rates]} img/s", file=sys.stderr)
    base = rows[0]
    for r in rows:
        r["x_first"], r["x_later"] = r["first"] / base["first"], r["later"] / base["later"]
    return rows


def mae_cost(plain_file: Path) -> list[dict]:
    torch.set_num_threads(2)
    x = dcqformat.open(plain_file).decode_batch(np.arange(256 * 8))
    rows = []
    for name in SIZES:
        config = mae_config(name, images=1, height=32, width=32, channels=3, patch=4, fraction=0.25, bits=2,
                            codec="packed")
        assert config is not None
        t = time.perf_counter()
        _, report = train_mae(x, 0.25, config, epochs=1)
        rows.append({"size": name, "seconds_per_step": (time.perf_counter() - t) / report.steps,
                     "steps_in_240s": int(240 / ((time.perf_counter() - t) / report.steps))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-size", action="store_true")
    args = ap.parse_args()
    drop_file, plain_file = WORK / f"dcq-drop_patches0.25-2bit-{args.train}.dcq", WORK / f"dcq-2bit-{args.train}.dcq"
    for f in (drop_file, plain_file) + (() if args.skip_size else (SOURCE,)):
        if not f.exists():
            raise SystemExit(f"{f} is missing: run bench_accuracy.py (see this script's --help) and bench_loader.py")
    out: dict = {"args": vars(args), "mae_meta": dcqformat.open(drop_file).meta.get("mae")}
    lo = loaders(drop_file, plain_file, args)
    print(f"Loader: DataLoader {args.workers} workers, batch 256, crop + flip, float32 normalised, {args.train} "
          "images; refills cached from the first epoch")
    print(table(lo, [("loader", "loader", ""), ("first", "epoch 1 img/s", ",.0f"), ("x_first", "x undropped", ".2f"),
                     ("later", "later epochs img/s", ",.0f"), ("x_later", "x undropped", ".2f")]))
    q = quality(drop_file, plain_file)
    print("Refill of the dropped 25% (PSNR vs the same images quantized without dropping)")
    print(table(q, [("mode", "refill", ""), ("psnr_dropped", "PSNR dropped px (dB)", ".2f"),
                    ("refill_img_s", "img/s (decode + refill, 1 process)", ",.0f")]))
    out |= {"loader": lo, "quality": q}
    if not args.skip_size:
        sz = sizes()
        print("Size: CIFAR-10 2-bit, 25% of patches dropped (masks and the MAE included) against undropped")
        print(table(sz, [("images", "images", ",d"), ("codec", "codec", ""), ("plain_per_image", "B/image", ",.1f"),
                         ("drop_per_image", "dropped B/image", ",.1f"), ("vs_plain", "x undropped", ".3f"),
                         ("mae_size", "MAE", ""), ("mae_bytes", "MAE bytes", ",d"), ("pays_from", "pays from", ",d")]))
        out["size"] = sz
    mc = mae_cost(plain_file)
    print("MAE training on this machine (batch 256, 2 threads)")
    print(table(mc, [("size", "size", ""), ("seconds_per_step", "s/step", ".3f"), ("steps_in_240s", "steps in 240 s",
                                                                                   ",d")]))
    out["mae_training"] = mc
    print(f"written {save('bench_drop', out)}")


if __name__ == "__main__":
    main()
