"""Conversion at scale: one process against torch.distributed ranks, and real photos at 224 px.

Usage: python -m benchmarks.bench_scale [--cifar 50000] [--procs 1 2] [--photos caltech101/train]
           [--photo-bits 2 4] [--skip-cifar] [--skip-photos]

1. CIFAR-10 (the first ``--cifar`` training images, from the JPEG shards), DCQ at 2 bits, as one
   process and under ``torchrun --standalone --nproc-per-node P`` on this machine: wall time
   and the time of every stage (rank 0's), written as a dataset directory in both cases.
2. Photos (an ImageFolder; default ../shared/data/caltech101/train), DCQ with ``--resize 224``
   (shorter side 224, aspect kept) at each of ``--photo-bits`` with the ctx codec: images per
   second of each stage, the process's peak resident memory, bytes per image against the
   source JPEG files.

Every conversion runs in its own process(es) through the CLI. Writes
benchmarks/results/bench_scale.json.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import save, table
from dcqformat.cli import sample_data


def run_convert(cmd: list[str]) -> tuple[float, dict[str, float], str]:
    """Wall seconds, the stage times the summary prints, and its text."""
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    stages = {m.group(1): float(m.group(2)) for m in re.finditer(r"time: (.+?)\s{2,}([\d.]+) s", r.stdout)}
    return wall, stages, r.stdout


def peak_rss_mb(cmd: list[str]) -> tuple[float, dict[str, float], str, float]:
    """run_convert, plus the peak resident memory of the converting process (GNU time's %M)."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as f:
        wall, stages, out = run_convert(["/usr/bin/time", "-f", "%M", "-o", f.name, *cmd])
        return wall, stages, out, int(f.read().split()[-1]) / 1024


def cifar(n: int, procs: list[int], work: Path) -> list[dict]:
    root = sample_data.find_cifar10()
    if root is None:
        raise SystemExit("needs CIFAR-10 (../shared/data/cifar10 or $DCQ_CIFAR10_DIR)")
    src = str(root / "cifar10-train-{000000..000004}.tar")
    rows = []
    for p in procs:
        launch = [sys.executable, "-m", "dcqformat"] if p == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={p}", "-m", "dcqformat"]
        out = work / f"cifar-{p}"
        wall, stages, _ = run_convert([*launch, "convert", src, str(out), "--limit", str(n), "--bits", "2",
                                       "--samples-per-file", str(n)])
        rows.append({"processes": p, "images": n, "wall_s": wall, **{f"{k} s": v for k, v in stages.items()}})
        print(f"  {p} process(es): {wall:.0f} s", file=sys.stderr)
    return rows


def photos(root: Path, bits: list[int], work: Path) -> list[dict]:
    jpeg_bytes = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    rows = []
    for b in bits:
        out = work / f"photos-{b}.dcq"
        wall, stages, text, peak = peak_rss_mb([sys.executable, "-m", "dcqformat", "convert", str(root), str(out),
                                                "--resize", "224", "--bits", str(b), "--codec", "ctx"])
        written = int(re.search(r"written\s+([\d,]+)", text).group(1).replace(",", ""))  # type: ignore[union-attr]
        size = out.stat().st_size
        rows.append({"bits": b, "images": written, "wall_s": wall, "peak_rss_mb": peak,
                     "bytes_per_image": size / written, "jpeg_bytes_per_image": jpeg_bytes / written,
                     "x_smaller_than_jpeg": jpeg_bytes / size,
                     **{f"{k} img/s": written / v for k, v in stages.items() if v > 0 and k != "total"}})
        print(f"  photos {b}-bit: {wall:.0f} s, {size / written:,.0f} B/image, peak {peak:,.0f} MB", file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar", type=int, default=50000)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--photos", default=str(Path(__file__).resolve().parents[2] / "shared/data/caltech101/train"))
    ap.add_argument("--photo-bits", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--skip-cifar", action="store_true")
    ap.add_argument("--skip-photos", action="store_true")
    args = ap.parse_args()
    t0 = time.time()
    result: dict = {"args": vars(args)}
    with tempfile.TemporaryDirectory(dir="out" if Path("out").is_dir() else None) as d:
        if not args.skip_cifar:
            rows = result["cifar"] = cifar(args.cifar, args.procs, Path(d))
            cols = [k for k in rows[0] if k.endswith(" s")]  # the stages, in pipeline order
            print(f"CIFAR-10, {args.cifar} images, DCQ 2 bits; seconds (rank 0's stages)")
            print(table(rows, [("processes", "processes", "d"), ("wall_s", "wall s", ".0f")]
                        + [(k, k, ".1f") for k in cols]))
        if not args.skip_photos:
            rows = result["photos"] = photos(Path(args.photos), args.photo_bits, Path(d))
            rate_cols = [k for k in rows[0] if k.endswith("img/s")]
            print(f"\nPhotos ({args.photos}), --resize 224, codec ctx")
            print(table(rows, [("bits", "bits", "d"), ("images", "images", ",d"), ("wall_s", "wall s", ".0f"),
                               ("peak_rss_mb", "peak RSS MB", ",.0f"), ("bytes_per_image", "B/image", ",.0f"),
                               ("jpeg_bytes_per_image", "JPEG B/image", ",.0f"),
                               ("x_smaller_than_jpeg", "x smaller than JPEG", ".1f")]
                        + [(k, k, ",.0f") for k in rate_cols]))
    result["seconds"] = time.time() - t0
    print(f"\nwritten {save('bench_scale', result)}")


if __name__ == "__main__":
    main()
