"""Patch dropping: file size, refill quality (MAE vs mean colour), loader speed, MAE training time.

Usage: python -m benchmarks.bench_drop [--train 10000] [--epochs 2] [--workers 2]

Uses the 10,000-image CIFAR-10 DCQ files of bench_accuracy.py (out/accuracy/; run it with
``--dcq drop_patches=0.25`` first): ``dcq-2bit-10000.dcq`` (no dropping) and
``dcq-drop_patches0.25-2bit-10000.dcq`` (same seed, so the same palettes and indices).

- Size, CIFAR-10 train (50,000 images, 2 bits): the 50k file of bench_size.py rewritten with
  drop masks of each fraction and the MAE's weights. Bytes depend on how many patches are
  dropped, not on which, so masks are drawn at random here (the converter uses attention).
- Refill quality: PSNR over the dropped pixels against the same images quantized without
  dropping, for ``reconstruct="mae"`` and ``"mean"``.
- Loader: DataLoader (``--workers``), batch 256, RandomCrop(32, 4) + flip, float32 normalised.
- MAE training: the converter's defaults on ``--train`` quantized images, timed per step.
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
from benchmarks.common import rate, save, table
from benchmarks.training import MEAN_RGB as MEAN
from benchmarks.training import STD_RGB as STD
from dcqformat import bitpack
from dcqformat.loaders import DCQDataset, RandomCrop
from dcqformat.loaders.reconstruct import Reconstructor, refilled_images
from dcqformat.mae import MAEConfig, train_mae

WORK = Path("out/accuracy")
FULL = Path("out/bench/cifar10-train-50000-2bit.dcq")


def sizes(weights: bytes) -> list[dict]:
    src = dcqformat.open(FULL)
    rng = np.random.default_rng(0)
    rows = []
    for fraction in (0.0, 0.25, 0.5):
        path = Path(f"out/bench/drop-{fraction}.dcq")
        with dcqformat.DcqWriter(path, bits=src.bits, palettes=np.array(src.palettes), meta=src.meta,
                                 patch_size=4 if fraction else None) as w:
            for i in range(len(src)):
                dropped = None
                if fraction:
                    dropped = np.zeros(64, bool)
                    dropped[rng.choice(64, int(64 * fraction), replace=False)] = True
                    dropped = dropped.reshape(8, 8)
                w.add(src.indices(i), palette=int(src.palette_ids[i]), label=int(src.labels[i]), dropped=dropped)
            if fraction:
                w.set_weights(weights)
        size = path.stat().st_size
        rows.append({"what": f"drop {fraction}", "bytes": size, "per_image": size / len(src),
                     "vs_no_drop": size / rows[0]["bytes"] if rows else 1.0, "x_raw": len(src) * 3072 / size})
        path.unlink()
    return rows


def quality(drop_file: Path, plain_file: Path) -> list[dict]:
    r, p = dcqformat.open(drop_file), dcqformat.open(plain_file)
    truth = p.decode_batch(np.argsort(p.source_indices))[r.source_indices].astype(np.float64)
    hidden = np.stack([bitpack.dropped_pixels(r.mask(i), *r.patch_size, 32, 32) for i in range(len(r))])
    plain = r.decode_batch(np.arange(len(r)))
    assert np.array_equal(plain[~hidden], truth[~hidden].astype(np.uint8)), "the two files differ in kept pixels"
    rows = []
    for mode in ("mae", "mean"):
        rec = Reconstructor(mode, weights=r.weights_blob(), patch=r.patch_size)  # type: ignore[arg-type]
        t = time.perf_counter()
        out = np.concatenate([refilled_images(r, np.arange(s, min(s + 1000, len(r))), rec)
                              for s in range(0, len(r), 1000)])
        secs = time.perf_counter() - t
        mse = ((out.astype(np.float64) - truth) ** 2)[hidden].mean()
        rows.append({"mode": mode, "psnr_dropped": 10 * np.log10(255**2 / mse),
                     "psnr_image": float(np.mean(10 * np.log10(255**2 / np.maximum(
                         ((out - truth) ** 2).mean((1, 2, 3)), 1e-3)))),
                     "refill_img_s": len(r) / secs})
    return rows


def loaders(drop_file: Path, plain_file: Path, args) -> list[dict]:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    kw = {"batch_size": 256, "shuffle": True, "num_workers": args.workers, "persistent_workers": args.workers > 0}
    crop = RandomCrop(32, padding=4, flip=0.5)
    cases = {"no dropping (plain fused decode)": (plain_file, "mae"), "drop 0.25, refill mae": (drop_file, "mae"),
             "drop 0.25, refill mean": (drop_file, "mean"), "drop 0.25, none (zeros + mask)": (drop_file, "none")}
    rows = []
    for name, (path, mode) in cases.items():
        def make(path=path, mode=mode):  # type: ignore[no-untyped-def]
            return DataLoader(DCQDataset(path, augment=crop, mean=MEAN, std=STD, reconstruct=mode), **kw)

        rows.append({"loader": name, "img_s": rate(make, args.epochs)})
        print(f"  {name}: {rows[-1]['img_s']:,.0f} img/s", file=sys.stderr)
    base = rows[0]["img_s"]
    for r in rows:
        r["x_plain"] = r["img_s"] / base
    return rows


def mae_time(plain_file: Path, n: int) -> dict:
    torch.set_num_threads(torch.get_num_threads() if torch.cuda.is_available() else 2)
    p = dcqformat.open(plain_file)
    x = p.decode_batch(np.arange(min(n, len(p))))
    steps = 20
    t = time.perf_counter()
    _, report = train_mae(x[: 256 * steps], 0.25, MAEConfig(), epochs=1)
    per_step = (time.perf_counter() - t) / report.steps
    default_steps = 30 * (min(n, 10000) // 256)
    return {"images": len(x), "seconds_per_step": per_step, "default_steps": default_steps,
            "default_seconds": per_step * default_steps, "cpu_cap_s": 240.0,
            "steps_within_cap": int(240 / per_step), "device": "cpu"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    drop_file, plain_file = WORK / f"dcq-drop_patches0.25-2bit-{args.train}.dcq", WORK / f"dcq-2bit-{args.train}.dcq"
    for f in (drop_file, plain_file, FULL):
        if not f.exists():
            raise SystemExit(f"{f} is missing: run bench_accuracy.py (with --dcq drop_patches=0.25) and bench_size.py")
    weights = dcqformat.open(drop_file).weights_blob()
    assert weights is not None
    size_rows = sizes(weights)
    print("Size, CIFAR-10 train 50,000 images, 2 bits (MAE weights included when dropping)")
    print(table(size_rows, [("what", "", ""), ("bytes", "bytes", ",d"), ("per_image", "B/image", ",.1f"),
                            ("vs_no_drop", "x no drop", ".3f"), ("x_raw", "x smaller than raw", ".1f")]))
    q = quality(drop_file, plain_file)
    print("Refill of the dropped 25% (PSNR vs the same images quantized without dropping)")
    print(table(q, [("mode", "reconstruct", ""), ("psnr_dropped", "PSNR dropped px (dB)", ".2f"),
                    ("psnr_image", "PSNR whole image (dB)", ".2f"), ("refill_img_s", "img/s (1 process)", ",.0f")]))
    lo = loaders(drop_file, plain_file, args)
    print(f"Loader: DataLoader {args.workers} workers, batch 256, crop + flip, float32 normalised, {args.train} images")
    print(table(lo, [("loader", "loader", ""), ("img_s", "img/s", ",.0f"), ("x_plain", "x no dropping", ".3f")]))
    mt = mae_time(plain_file, args.train)
    print(f"MAE training ({mt['device']}): {mt['seconds_per_step']:.3f} s/step (batch 256); the default "
          f"{mt['default_steps']} steps would take {mt['default_seconds']:.0f} s; the CPU cap of 240 s allows "
          f"{mt['steps_within_cap']}")
    out = save("bench_drop", {"args": vars(args), "size": size_rows, "quality": q, "loader": lo, "mae_training": mt,
                              "mae_meta": dcqformat.open(drop_file).meta.get("mae")})
    print(f"written {out}")


if __name__ == "__main__":
    main()
