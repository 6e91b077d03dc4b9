"""Conversion time and peak memory of `dcq convert` (DCQ, 2 bits) on 5k, 20k and 50k CIFAR-10 images.

Usage: python -m benchmarks.bench_convert [--sizes 5000 20000 50000] [--device auto]

Each size runs end to end in its own process, from the JPEG shards (decoding included) to the
written file, attention model training included; peak memory is that process's maximum
resident set size, and the peaks of its anonymous (heap) and file-backed (mapped image cache,
libraries) parts, sampled every 0.1 s. Writes benchmarks/results/bench_convert.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

from benchmarks.common import save, table
from dcqformat.cli import sample_data

CHILD = """
import json, sys, threading, time
from dcqformat.conversion import ConvertConfig, convert
peaks = {"RssAnon": 0, "RssFile": 0}
def sample():
    while True:
        for line in open("/proc/self/status"):
            key = line.split(":")[0]
            if key in peaks:
                peaks[key] = max(peaks[key], int(line.split()[1]) / 1024)
        time.sleep(0.1)
threading.Thread(target=sample, daemon=True).start()
s = convert(sys.argv[1], sys.argv[2], ConvertConfig(bits=2, limit=int(sys.argv[3]), device=sys.argv[4]), progress=False)
peak = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0] / 1024  # MB
print(json.dumps({"stages": s.stages, "written": s.written, "bytes": s.file_bytes, "device": s.device, "peak": peak,
                  "anon": peaks["RssAnon"], "file": peaks["RssFile"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    root = sample_data.find_cifar10()
    if root is None:
        raise SystemExit("bench_convert needs CIFAR-10 (../shared/data/cifar10 or $DCQ_CIFAR10_DIR)")
    src = str(root / "cifar10-train-{000000..000004}.tar")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in args.sizes:
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", CHILD, src, f"{d}/c{n}.dcq", str(n), args.device],
                               capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t
            out = json.loads(r.stdout.strip().splitlines()[-1])
            row = {"images": n, "wall_s": wall, "peak_rss_mb": out["peak"], "peak_anon_mb": out["anon"],
                   "peak_file_mb": out["file"], **{
                f"{k}_s": v for k, v in out["stages"].items()}, "bytes": out["bytes"], "device": out["device"]}
            rows.append(row)
            print(f"  {n}: {wall:.0f} s, peak {row['peak_rss_mb']:.0f} MB", file=sys.stderr)
    stage_cols = [(k, k[:-2], ".1f") for k in rows[0] if k.endswith("_s") and k != "wall_s"]
    print(table(rows, [("images", "images", ","), ("wall_s", "wall s", ".1f"), *stage_cols,
                       ("peak_rss_mb", "peak RSS MB", ",.0f"), ("peak_anon_mb", "of it anonymous", ",.0f"),
                       ("peak_file_mb", "file-backed", ",.0f"), ("device", "device", "")]))
    print(f"written {save('bench_convert', {'rows': rows})}")


if __name__ == "__main__":
    main()
