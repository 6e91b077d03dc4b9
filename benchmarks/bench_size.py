"""Size of CIFAR-10 train (50,000 images) as .dcq, against raw uint8, the JPEG source and PNG.

Usage: python -m benchmarks.bench_size [--n 50000] [--bits 2]

Quantizers: 20 shared palettes (mean-colour k-means + MedianCut per cluster, as DCQ stores its
cluster palettes) and per-image MedianCut (a palette per image). Each is written with the
`packed` and `zstd` codecs; the same indices saved as per-image palette PNGs of the same bit
depth give the PNG figure. Every file is verified by decoding it back.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

import dcqformat
from benchmarks.common import save, table
from dcqformat.cli import sample_data
from dcqformat.quantize import simple_quant


def write(path: Path, bits: int, codec: str, idx, pal_of, palettes, labels) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    with dcqformat.DcqWriter(path, bits=bits, codec=codec, palettes=palettes) as w:
        for i, (x, y) in enumerate(zip(idx, labels)):
            p = pal_of(w, i)
            w.add(x, palette=p, label=int(y))
    return path.stat().st_size, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--bits", type=int, default=2)
    args = ap.parse_args()
    t0 = time.time()
    data = sample_data.load_cifar10(args.n)
    n, bits = len(data.images), args.bits
    raw = data.images.nbytes
    print(f"{n} images, raw {raw:,} B, JPEG source {data.source_bytes:,} B", file=sys.stderr)

    assign, shared = simple_quant.shared_palettes(data.images, bits, clusters=20)
    shared_idx = [simple_quant.map_to_palette(img, shared[a]) for img, a in
                  tqdm(zip(data.images, assign), total=n, desc="shared palettes", file=sys.stderr)]
    per = [simple_quant.mediancut(img, bits) for img in tqdm(data.images, desc="mediancut", file=sys.stderr)]
    per_idx = [i for i, _ in per]

    rows = [{"format": "raw uint8", "bytes": raw}, {"format": "JPEG source files", "bytes": data.source_bytes}]
    png = 0
    for i, pal in tqdm(per, desc="png", file=sys.stderr):
        im = Image.fromarray(i, "P")
        im.putpalette(pal.reshape(-1).tolist())
        buf = io.BytesIO()
        im.save(buf, "PNG", bits=bits, optimize=True)
        png += len(buf.getvalue())
    rows.append({"format": f"PNG {bits}-bit, per-image MedianCut", "bytes": png})
    with tempfile.TemporaryDirectory() as d:
        for name, idx, palettes, pal_of in [
            ("shared palettes (20)", shared_idx, shared, lambda w, i: int(assign[i])),
            ("per-image MedianCut", per_idx, None, lambda w, i: w.add_palette(per[i][1])),
        ]:
            for codec in ("packed", "zstd"):
                path = Path(d) / f"{codec}.dcq"
                size, secs = write(path, bits, codec, idx, pal_of, palettes, data.labels)
                r = dcqformat.open(path, verify=True)
                got = r.indices(n - 1)
                assert np.array_equal(got, idx[n - 1]), "round trip failed"
                rows.append({"format": f"dcq {codec}, {name}", "bytes": size, "write_s": secs})
    for r in rows:
        r["bytes_per_image"] = r["bytes"] / n
        r["vs_raw"] = raw / r["bytes"]
        r["vs_jpeg"] = data.source_bytes / r["bytes"]
        r["mb"] = r["bytes"] / 1e6
    packed = next(r["bytes"] for r in rows if r["format"] == "dcq packed, shared palettes (20)")
    zstd = next(r["bytes"] for r in rows if r["format"] == "dcq zstd, shared palettes (20)")
    print(table(rows, [("format", "format", ""), ("mb", "MB", ".3f"), ("bytes_per_image", "B/image", ".1f"),
                       ("vs_raw", "x smaller than raw", ".1f"), ("vs_jpeg", "x smaller than JPEG", ".2f"),
                       ("write_s", "write s", ".1f")]))
    print(f"\nzstd / packed (shared palettes): {zstd / packed:.3f}")
    out = save("bench_size", {"images": n, "bits": bits, "rows": rows, "zstd_over_packed": zstd / packed,
                              "seconds": time.time() - t0})
    print(f"written {out}")


if __name__ == "__main__":
    main()
