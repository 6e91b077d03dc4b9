"""Patch dropping: file bytes, refill quality, loader speed per refill mode and epoch, MAE cost.

Usage: python -m benchmarks.bench_drop [--train 10000] [--epochs 3] [--workers 2] [--skip-size]

Uses the 10,000-image CIFAR-10 DCQ 2-bit files of bench_accuracy.py (out/accuracy/; run it with
``--methods dcq --bits 2``, with ``--dcq drop_patches=0.25`` and with ``--dcq
drop_patches=0.25,mae_size=tiny``): ``dcq-2bit-10000.dcq`` (no dropping),
``dcq-drop_patches0.25-2bit-10000.dcq`` (same seed, so the same palettes and indices; the
converter's defaults: the patches the harmonic fill restores best, and an MAE only if it earns
its bytes) and, for the mae rows when that file has no MAE, the ``mae_size=tiny`` one.

- Size: the first N samples of out/bench/cifar10-train-20000-2bit.dcq (bench_loader's; for 50,000
  the 20,000 repeat) rewritten with 25% of each image's patches dropped (the converter's masks,
  ``drop_by="fill"``: the smooth patches, which the ctx codec codes cheaply, so it saves less
  there than packed) and the MAE that ``--mae-size auto`` sizes for N images (int8), in codecs
  packed and ctx; against the same samples undropped. "pays from": the images from which the
  dropped file is the smaller. (auto then keeps the MAE only if it refills held-out images
  0.5 dB better than the harmonic fill; without it the file is smaller still.)
- Refill quality: PSNR over the dropped pixels against the same images quantized without
  dropping, and against the original images, for each refill mode.
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
from dcqformat.decode import bitpack
from dcqformat.loaders import DCQDataset, RandomCrop
from dcqformat.loaders.reconstruct import Reconstructor, refilled_images
from dcqformat.mae import MAE, mae_to_bytes, train_mae
from dcqformat.mae.sizing import SIZES, mae_config, size_name
from dcqformat.quantize.drop import drop_mask, fill_errors

WORK = Path("out/accuracy")
SOURCE = Path("out/bench/cifar10-train-20000-2bit.dcq")
MODES = ("mae", "smooth", "mean", "none")


def write(src: dcqformat.DcqReader, path: Path, n: int, codec: str, drop: float,
          masks: np.ndarray | None = None) -> tuple[int, tuple[str, bytes] | None]:
    """Bytes of the first ``n`` samples of ``src`` (cycled) rewritten, with the drop ``masks``
    of its samples (``drop`` of the patches) and the MAE embedded (its size name and weights)."""
    mae = None
    if drop:
        config = mae_config("auto", images=n, height=32, width=32, channels=3, patch=4, fraction=drop,
                            bits=src.bits, codec=codec, drop_by="fill")
        mae = ("none", b"") if config is None else (size_name(config), mae_to_bytes(MAE(config)))
    with dcqformat.DcqWriter(path, bits=src.bits, palettes=np.array(src.palettes), codec=codec,
                             patch_size=4 if drop else None) as w:
        for k in range(n):
            i = k % len(src)
            w.add(src.indices(i), palette=int(src.palette_ids[i]), label=int(src.labels[i]),
                  dropped=masks[i] if masks is not None else None)
        if mae and mae[1]:
            w.set_weights(mae[1])
    size = path.stat().st_size
    path.unlink()
    return size, mae


def fill_masks(src: dcqformat.DcqReader, drop: float) -> np.ndarray:
    """The converter's masks without the attention model (``drop_by="fill"``): the patches the
    harmonic fill restores best, scored on the decoded samples."""
    out = []
    for s in range(0, len(src), 2000):
        images = list(src.decode_batch(np.arange(s, min(s + 2000, len(src)))))
        out += [drop_mask(e, drop) for e in fill_errors(images, 4)]
    return np.stack(out)


def sizes() -> list[dict]:
    src = dcqformat.open(SOURCE)
    masks = fill_masks(src, 0.25)
    rows = []
    for n in (5000, 10000, 50000):
        for codec in ("packed", "ctx"):
            plain, _ = write(src, Path(f"out/bench/drop-plain-{n}.dcq"), n, codec, 0.0)
            dropped, mae = write(src, Path(f"out/bench/drop-{n}.dcq"), n, codec, 0.25, masks)
            assert mae is not None
            name, weights = mae
            saved_per_image = (plain - (dropped - len(weights))) / n
            rows.append({"images": n, "codec": codec, "plain_per_image": plain / n, "drop_per_image": dropped / n,
                         "vs_plain": dropped / plain, "mae_size": name, "mae_bytes": len(weights),
                         "pays_from": max(1, int(np.ceil(len(weights) / max(saved_per_image, 1e-9))))})
            print(f"  size {n} {codec}: {rows[-1]['vs_plain']:.3f}x", file=sys.stderr)
    return rows


def quality(cases: dict[str, Path], plain_file: Path, source: Path) -> list[dict]:
    """PSNR over the dropped pixels of each refill mode (``cases``: mode -> file)."""
    p = dcqformat.open(plain_file)
    plain_order = np.argsort(p.source_indices)
    rows = []
    for mode, path in cases.items():
        r = dcqformat.open(path)
        truth = p.decode_batch(plain_order)[r.source_indices].astype(np.float64)
        original = np.load(source)["x"][r.source_indices].astype(np.float64)
        hidden = np.stack([bitpack.dropped_pixels(r.mask(i), *r.patch_size, 32, 32) for i in range(len(r))])
        plain = r.decode_batch(np.arange(len(r)))
        assert np.array_equal(plain[~hidden], truth[~hidden].astype(np.uint8)), "the two files differ in kept pixels"
        rec = Reconstructor(mode, weights=r.weights_blob(), patch=r.patch_size)  # type: ignore[arg-type]
        refilled_images(r, np.arange(8), rec)  # compile the kernels first
        t = time.perf_counter()
        out = np.concatenate([refilled_images(r, np.arange(s, min(s + 1000, len(r))), rec)
                              for s in range(0, len(r), 1000)])
        secs = time.perf_counter() - t
        mse = ((out.astype(np.float64) - truth) ** 2)[hidden].mean()
        mse_original = ((out.astype(np.float64) - original) ** 2)[hidden].mean()
        rows.append({"mode": mode, "psnr_dropped": 10 * np.log10(255**2 / mse),
                     "psnr_original": 10 * np.log10(255**2 / mse_original), "refill_img_s": len(r) / secs})
    mse = ((truth - original) ** 2)[hidden].mean()  # what quantizing alone costs on those pixels
    rows.append({"mode": "(no dropping)", "psnr_dropped": float("inf"),
                 "psnr_original": 10 * np.log10(255**2 / mse), "refill_img_s": float("nan")})
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


def loaders(cases: dict[str, Path], plain_file: Path, args) -> list[dict]:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    kw = {"batch_size": 256, "shuffle": True, "num_workers": args.workers, "persistent_workers": args.workers > 0}
    crop = RandomCrop(32, padding=4, flip=0.5)
    runs = {"no dropping": (plain_file, "auto")} | {f"drop 0.25, refill {m}": (f, m) for m, f in cases.items()}
    rows = []
    for name, (path, mode) in runs.items():
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
    ap.add_argument("--drop-file", default=None, help="the dropped file (default: bench_accuracy's, drop_patches=0.25)")
    ap.add_argument("--mae-file", default=None, help="a dropped file with an MAE, for the mae rows when the dropped "
                    "file has none (default: bench_accuracy's drop_patches=0.25,mae_size=tiny)")
    args = ap.parse_args()
    drop_file = Path(args.drop_file or WORK / f"dcq-drop_patches0.25-2bit-{args.train}.dcq")
    mae_file = Path(args.mae_file or WORK / f"dcq-drop_patches0.25-mae_sizetiny-2bit-{args.train}.dcq")
    plain_file = WORK / f"dcq-2bit-{args.train}.dcq"
    for f in (drop_file, plain_file) + (() if args.skip_size else (SOURCE,)):
        if not f.exists():
            raise SystemExit(f"{f} is missing: run bench_accuracy.py (see this script's --help) and bench_loader.py")
    # each refill mode on the file it is for: the MAE's on a file that has one
    with_mae = drop_file if dcqformat.open(drop_file).weights_blob() is not None else mae_file
    cases = {m: with_mae if m == "mae" else drop_file for m in MODES if m != "mae" or with_mae.exists()}
    out: dict = {"args": vars(args), "files": {m: str(f) for m, f in cases.items()},
                 "mae_meta": dcqformat.open(cases["mae"]).meta.get("mae") if "mae" in cases else None}
    lo = loaders(cases, plain_file, args)
    print(f"Loader: DataLoader {args.workers} workers, batch 256, crop + flip, float32 normalised, {args.train} "
          "images; refills cached from the first epoch")
    print(table(lo, [("loader", "loader", ""), ("first", "epoch 1 img/s", ",.0f"), ("x_first", "x undropped", ".2f"),
                     ("later", "later epochs img/s", ",.0f"), ("x_later", "x undropped", ".2f")]))
    q = quality(cases, plain_file, WORK / f"cifar10-train-random{args.train}.npz")
    print("Refill of the dropped 25% (PSNR on the dropped pixels vs the same images quantized without dropping, "
          "and vs the original images)")
    print(table(q, [("mode", "refill", ""), ("psnr_dropped", "PSNR vs quantized (dB)", ".2f"),
                    ("psnr_original", "PSNR vs original (dB)", ".2f"),
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
