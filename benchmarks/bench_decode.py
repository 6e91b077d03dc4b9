"""Decode speed: dcq decode_batch vs Pillow (JPEG, palette PNG) vs a numpy copy, on one core.

Usage: python -m benchmarks.bench_decode [--threads 1] [--n 10000] [--no-verify]

The same quantized images are stored as .dcq (20 shared palettes, as DCQ writes them, and
per-image palettes), as JPEG (quality 90) and as a palette PNG of the same bit depth; each is
decoded to uint8 NHWC. Ratios are against baselines measured in the same run. Results go to
benchmarks/results/bench_decode.json.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # pin the thread count before numba is imported
    _threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
    os.environ["NUMBA_NUM_THREADS"] = _threads

import numpy as np
from PIL import Image

import dcqformat
from benchmarks.common import best_time, save, table
from dcqformat.cli import sample_data
from dcqformat.quantize import simple_quant


def images_32(n: int) -> np.ndarray:
    return sample_data.load_default(n).images


def images_224(n: int, seed: int = 0) -> np.ndarray:
    """Random 224x224 crops of the embedded photo mosaic (real photo texture)."""
    from importlib import resources

    raw = (resources.files("dcqformat.cli") / "data" / "photo_crops.png").read_bytes()
    mosaic = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, mosaic.shape[0] - 224, n)
    xs = rng.integers(0, mosaic.shape[1] - 224, n)
    return np.stack([mosaic[y : y + 224, x : x + 224] for y, x in zip(ys, xs)])


def quantize_shared(images: np.ndarray, bits: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    assign, palettes = simple_quant.shared_palettes(images, bits, clusters=20)
    idx = [simple_quant.map_to_palette(img, palettes[a]) for img, a in zip(images, assign)]
    return idx, assign, palettes


def pillow_rate(blobs: list[bytes]) -> float:
    def run() -> None:
        for b in blobs:
            np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))

    return len(blobs) / best_time(run, repeats=3)


def dcq_rate(path: Path, n: int, batch: int, expected: np.ndarray | None) -> float:
    r = dcqformat.open(path)
    out = np.empty((batch,) + r.decode(0).shape, np.uint8)
    starts = range(0, n - batch + 1, batch)

    def run() -> None:
        for s in starts:
            r.decode_batch(np.arange(s, s + batch), out=out)

    if expected is not None:
        for s in starts:
            r.decode_batch(np.arange(s, s + batch), out=out)
            if not np.array_equal(out, expected[s : s + batch]):
                raise SystemExit(f"verify failed: {path} decodes differently")
    return len(starts) * batch / best_time(run, repeats=5)


def bench_case(images: np.ndarray, bits: int, batch: int, verify: bool, tmp: Path, per_image: bool,
               pillow_n: int) -> dict:
    n, h, w, _ = images.shape
    idx, assign, palettes = quantize_shared(images, bits)
    decoded = np.stack([palettes[a][i] for i, a in zip(idx, assign)])
    path = tmp / f"shared-{bits}-{h}.dcq"
    with dcqformat.DcqWriter(path, bits=bits, palettes=palettes) as wr:
        for i, a in zip(idx, assign):
            wr.add(i, palette=int(a))
    row = {"size": f"{h}x{w}", "bits": bits, "images": n, "batch": batch,
           "dcq_img_s": dcq_rate(path, n, batch, decoded if verify else None)}
    if per_image:
        path2 = tmp / f"perimage-{bits}-{h}.dcq"
        with dcqformat.DcqWriter(path2, bits=bits) as wr:
            for i, a in zip(idx, assign):
                wr.add(i, palette=wr.add_palette(palettes[a]))
        row["dcq_per_image_pal_img_s"] = dcq_rate(path2, n, batch, decoded if verify else None)
    sub = decoded[:pillow_n]
    jpeg, png = [], []
    for img, i, a in zip(sub, idx, assign):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        jpeg.append(buf.getvalue())
        p = Image.fromarray(i, "P")
        p.putpalette(palettes[a].reshape(-1).tolist())
        buf = io.BytesIO()
        p.save(buf, "PNG", bits=bits, optimize=False)
        png.append(buf.getvalue())
    row["pillow_jpeg_img_s"] = pillow_rate(jpeg)
    row["pillow_png_img_s"] = pillow_rate(png)
    copy_out = np.empty_like(decoded)
    row["numpy_copy_img_s"] = n / best_time(lambda: np.copyto(copy_out, decoded), repeats=5)
    row["x_jpeg"] = row["dcq_img_s"] / row["pillow_jpeg_img_s"]
    row["x_png"] = row["dcq_img_s"] / row["pillow_png_img_s"]
    row["x_copy"] = row["dcq_img_s"] / row["numpy_copy_img_s"]
    row["bytes_dcq"] = path.stat().st_size / n
    row["bytes_jpeg"] = sum(map(len, jpeg)) / len(jpeg)
    row["bytes_png"] = sum(map(len, png)) / len(png)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="Numba threads (default 1: one core)")
    ap.add_argument("--n", type=int, default=10000, help="32x32 images (default 10000)")
    ap.add_argument("--n224", type=int, default=512, help="224x224 images (default 512)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--no-verify", action="store_true", help="skip the round-trip check")
    args = ap.parse_args()
    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        small = images_32(args.n)
        for bits in (1, 2, 4, 8):
            rows.append(bench_case(small, bits, args.batch, not args.no_verify, tmp, per_image=bits == 2,
                                   pillow_n=2000))
            print(f"  32x32 {bits}-bit done", file=sys.stderr)
        large = images_224(args.n224)
        for bits in (1, 2, 4, 8):
            rows.append(bench_case(large, bits, 64, not args.no_verify, tmp, per_image=False, pillow_n=256))
            print(f"  224x224 {bits}-bit done", file=sys.stderr)
    cols = [("size", "image", ""), ("bits", "bits", "d"), ("dcq_img_s", "dcq img/s", ",.0f"),
            ("dcq_per_image_pal_img_s", "dcq, per-image palettes", ",.0f"),
            ("pillow_jpeg_img_s", "Pillow JPEG img/s", ",.0f"), ("pillow_png_img_s", "Pillow PNG img/s", ",.0f"),
            ("numpy_copy_img_s", "numpy copy img/s", ",.0f"), ("x_jpeg", "x JPEG", ".0f"), ("x_png", "x PNG", ".0f"),
            ("x_copy", "x copy", ".2f"), ("bytes_dcq", "B/img dcq", ",.0f"), ("bytes_jpeg", "B/img JPEG", ",.0f"),
            ("bytes_png", "B/img PNG", ",.0f")]
    print(table(rows, cols))
    out = save("bench_decode", {"threads": args.threads, "batch": args.batch, "rows": rows,
                                "seconds": time.time() - t0})
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
