"""Photo-size speed: bytes per image and decode speed on ONE core, per codec and bit depth, on real
photos, against Pillow decoding the same photos as JPEG, WebP and PNG; and the training input
pipeline (RandomResizedCrop(224) + flip + normalise) against a Pillow JPEG ImageFolder pipeline.

Usage: python -m benchmarks.bench_photos [--photos ../shared/data/caltech101/test] [--sizes 224 96]
                                         [--bits 1 2 4 8] [--limit N] [--repeats 3] [--no-pipeline]
                                         [--cifar N]

``--cifar N`` measures the same decode rows on the first N CIFAR-10 test images (32 px) instead
of the photos (the issue's per-image target at 32 px).

The photos are resized as ``dcq convert --resize S --center-crop`` does (short side S, centre
square). Each size and bit depth is quantized once (20 shared palettes, as bench_decode does) and
the same index maps are written with every codec (``ctx`` codes 1-4 bits), so the codecs are
compared on identical maps. Baselines, in the same run and on the same resized photos: Pillow's
JPEG q75 and q90, WebP q50 and lossless, and the index maps as optimised PNG-8
(``optimize=True``); simplejpeg (libjpeg-turbo) when installed. Decode speed is images per
CPU-second on one core (``NUMBA_NUM_THREADS=1``, best of ``--repeats``), with ns per pixel.
At 224 px, the 2-bit files also decode RandomResizedCrop(224) windows (bilinear, uint8) against
their whole images into the same output: what a crop-aware codec (``ctxs``, ``ctxg``) saves.

The physical limit: a decoded image is H x W x 3 bytes written; this machine's memory bandwidth
(a large NumPy copy, bytes written per second) divided by that is the most images per second a
decoder that writes every pixel once can reach. Each row says how close it gets.

The pipeline section (224 px only; batch 128): DCQDataset through a DataLoader with 2 workers
(batch_size=128, and a BatchSampler with batch_size=None: whole batches decoded into shared memory),
DCQLoader (normalised float32 out, and uint8 out for normalising on the device), and the
WebDataset pipeline, each on the 2-bit file of every codec, against a Pillow JPEG (q90)
ImageFolder pipeline with the same workers; images per second of wall time and per
CPU-second (this process and its workers, in steady state: persistent workers, timed after one
untimed epoch). Results go to benchmarks/results/bench_photos.json.
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
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
from PIL import Image

import dcqformat
from benchmarks.common import best_time, save, table
from dcqformat import codecs
from dcqformat.pipeline.sources import Sizing
from dcqformat.quantize import simple_quant

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech101" / "test"
CODECS = ("packed", "zstd", "ctx", "ctxs", "ctxg")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_photos(root: Path, size: int, limit: int | None) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Every photo of an ImageFolder tree as RGB, resized as ``--resize size --center-crop``."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
    classes = sorted({p.parent.name for p in files})
    sizing = Sizing(short_side=size, center_crop=True)
    images = []
    for p in files:
        with Image.open(p) as im:
            images.append(np.asarray(sizing.apply(im.convert("RGB"))))
    labels = np.array([classes.index(p.parent.name) for p in files])
    return np.stack(images), labels, files


def cpu_rate(fn, count: int, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Images per CPU-second of this process (best of ``repeats`` after a warm-up)."""
    return count / max(best_time(fn, repeats, clock=time.process_time), 1e-9)


def memory_bandwidth() -> float:
    """Bytes written per second by a large NumPy copy (256 MiB), best of 5."""
    src = np.ones(256 << 20, np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return src.nbytes / best


def encode_pillow(images: np.ndarray, fmt: str, **kw) -> list[bytes]:  # type: ignore[no-untyped-def]
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, fmt, **kw)
        out.append(buf.getvalue())
    return out


def png8(indices: list[np.ndarray], palettes: np.ndarray, assign: np.ndarray) -> list[bytes]:
    out = []
    for idx, a in zip(indices, assign):
        im = Image.fromarray(idx.astype(np.uint8), "P")
        im.putpalette(palettes[a].reshape(-1).tolist())
        buf = io.BytesIO()
        im.save(buf, "PNG", optimize=True)
        out.append(buf.getvalue())
    return out


def pillow_decoder(blobs: list[bytes], mode: str = "RGB"):  # type: ignore[no-untyped-def]
    def run() -> None:
        for b in blobs:
            np.asarray(Image.open(io.BytesIO(b)).convert(mode))
    return run


def write_dcq(path: Path, indices: list[np.ndarray], palettes: np.ndarray, assign: np.ndarray, labels: np.ndarray,
              bits: int, codec: str) -> Path:
    with dcqformat.DcqWriter(path, bits=bits, palettes=palettes, codec=codec) as w:
        for idx, a, y in zip(indices, assign, labels):
            w.add(idx, palette=int(a), label=int(y))
    return path


def decode_rows(images: np.ndarray, labels: np.ndarray, bits_list: list[int], work: Path, repeats: int,
                bandwidth: float) -> tuple[list[dict], dict[int, dict[str, Path]]]:
    n, h, w, _ = images.shape
    limit = bandwidth / (h * w * 3)
    rows: list[dict] = []

    def row(storage: str, bits: int | None, blobs_bytes: float, rate: float) -> None:
        rows.append({"size": f"{h}x{w}", "storage": storage, "bits": bits, "bytes": blobs_bytes, "img_s": rate,
                     "ns_px": 1e9 / (rate * h * w), "of_limit": rate / limit})

    jpeg90 = encode_pillow(images, "JPEG", quality=90)
    baselines = {"JPEG q90, Pillow": jpeg90, "JPEG q75, Pillow": encode_pillow(images, "JPEG", quality=75),
                 "WebP q50, Pillow": encode_pillow(images, "WEBP", quality=50),
                 "WebP lossless, Pillow": encode_pillow(images, "WEBP", lossless=True)}
    for name, blobs in baselines.items():
        row(name, None, np.mean([len(b) for b in blobs]), cpu_rate(pillow_decoder(blobs), n, repeats))
    try:
        import simplejpeg

        for q, blobs in (("q90", jpeg90), ("q75", baselines["JPEG q75, Pillow"])):
            def turbo(blobs: list[bytes] = blobs) -> None:
                for b in blobs:
                    simplejpeg.decode_jpeg(b, colorspace="RGB")
            row(f"JPEG {q}, simplejpeg", None, np.mean([len(b) for b in blobs]), cpu_rate(turbo, n, repeats))
    except ImportError:
        pass
    files: dict[int, dict[str, Path]] = {}
    for bits in bits_list:
        assign, palettes = simple_quant.shared_palettes(images, bits, clusters=20)
        indices = [simple_quant.map_to_palette(img, palettes[a]) for img, a in zip(images, assign)]
        blobs = png8(indices, palettes, assign)
        row("PNG-8 (optimize), Pillow", bits, np.mean([len(b) for b in blobs]), cpu_rate(pillow_decoder(blobs),
                                                                                          n, repeats))
        files[bits] = {}
        for codec in CODECS:
            if bits > codecs.max_bits(codec):
                continue
            path = write_dcq(work / f"{h}-{bits}-{codec}.dcq", indices, palettes, assign, labels, bits, codec)
            files[bits][codec] = path
            reader = dcqformat.open(path)
            out = np.empty((n, h, w, 3), np.uint8)
            rate = cpu_rate(lambda r=reader, o=out: r.decode_batch(np.arange(n), out=o), n, repeats)
            row(f"dcq {codec}", bits, path.stat().st_size / n, rate)  # the whole file, palettes and all
    return rows, files


def crop_rows(files: dict[str, Path], n: int, repeats: int) -> list[dict]:
    """Fused decode + RandomResizedCrop(224) windows (bilinear, uint8 CHW) on one core, against
    decoding the whole image into the same output: what crop-aware decoding (ctxs, ctxg) saves."""
    from dcqformat.loaders import RandomResizedCrop

    rows = []
    for codec, path in files.items():
        r = dcqformat.open(path)
        hs, ws = r.field("height"), r.field("width")
        import torch

        crop, _ = RandomResizedCrop(224).windows(hs, ws, torch.Generator().manual_seed(0))
        whole = np.stack([np.zeros(n), np.zeros(n), hs, ws], 1)
        out = np.empty((n, 3, 224, 224), np.uint8)
        rates = {}
        for name, boxes in (("crop", crop), ("whole", whole)):
            rates[name] = cpu_rate(lambda b=boxes, r=r, o=out: r.decode_crops(np.arange(n), b, (224, 224),
                                                                              interpolation="bilinear", out=o),
                                   n, repeats)
        rows.append({"codec": codec, "crop_img_s": rates["crop"], "whole_img_s": rates["whole"],
                     "gain": rates["crop"] / rates["whole"]})
    return rows


# -- the training input pipeline ------------------------------------------------------------------
class JpegFolder:
    """A Pillow JPEG ImageFolder with RandomResizedCrop(224) + flip + normalise (torchvision's recipe,
    written out: torchvision does not import beside this torch)."""

    def __init__(self, blobs: list[bytes], labels: np.ndarray, size: int = 224) -> None:
        from dcqformat.loaders import RandomResizedCrop

        self.blobs, self.labels, self.size = blobs, labels, size
        self.crop = RandomResizedCrop(size, flip=0.5)

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        import torch

        im = Image.open(io.BytesIO(self.blobs[i])).convert("RGB")
        (y, x, h, w), = self.crop.windows(np.array([im.height]), np.array([im.width]))[0]
        im = im.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(x, y, x + w, y + h))
        if torch.rand(()) < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        t = torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div_(255)
        return (t - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None], int(self.labels[i])


def _descendants(pid: int) -> list[int]:
    """Every live descendant of process ``pid`` (Linux /proc)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        for k in kids:
            out += [k, *_descendants(k)]
    return out


def tree_cpu() -> float:
    """CPU seconds used so far by this process, its live descendants (DataLoader workers, read
    from /proc) and its children that have exited and been waited for."""
    tick = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    r = os.times()
    return total + r.children_user + r.children_system


def pipeline_rate(make, epochs: int = 2) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(images per second of wall time, images per CPU-second of this process and its workers),
    in steady state: one loader (persistent workers), one untimed epoch first (worker start,
    compilation), then ``epochs`` timed epochs, as a long training run sees it."""
    loader = make()
    for _ in loader:
        pass
    seen = 0
    wall, cpu0 = time.perf_counter(), tree_cpu()
    for _ in range(epochs):
        for x, _y in loader:
            seen += len(x)
    cpu = tree_cpu() - cpu0
    wall = time.perf_counter() - wall
    del loader
    return seen / wall, seen / max(cpu, 1e-9)


def pipeline_rows(images: np.ndarray, labels: np.ndarray, files: dict[str, Path], work: Path,
                  workers: int, batch: int) -> list[dict]:
    import torch
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    from dcqformat.loaders import DCQDataset, DCQLoader, RandomResizedCrop
    from dcqformat.loaders.wds import dcq_pipeline, write_shards

    aug = RandomResizedCrop(224, flip=0.5)
    rows: list[dict] = []
    jpeg = encode_pillow(images, "JPEG", quality=90)
    wall, cpu = pipeline_rate(lambda: DataLoader(JpegFolder(jpeg, labels), batch_size=batch, shuffle=True,
                                                 num_workers=workers, persistent_workers=True))
    rows.append({"loader": f"Pillow JPEG q90 ImageFolder, DataLoader {workers} workers", "codec": "-",
                 "img_s": wall, "img_cpu_s": cpu})
    base = cpu
    for codec, path in files.items():
        def dataset(path: Path = path) -> DataLoader:
            ds = DCQDataset(path, augment=aug, mean=MEAN, std=STD)
            return DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=True)
        wall, cpu = pipeline_rate(dataset)
        rows.append({"loader": f"DCQDataset, DataLoader {workers} workers", "codec": codec, "img_s": wall,
                     "img_cpu_s": cpu})
        wall, cpu = pipeline_rate(lambda path=path: DataLoader(DCQDataset(path, augment=aug), batch_size=batch,
                                                               shuffle=True, num_workers=workers,
                                                               persistent_workers=True))
        rows.append({"loader": f"DCQDataset, DataLoader {workers} workers, uint8 out (normalised on the device)",
                     "codec": codec, "img_s": wall, "img_cpu_s": cpu})
        def batches(path: Path = path) -> DataLoader:  # dataset[indices]: decoded into shared memory, no collate
            ds = DCQDataset(path, augment=aug, mean=MEAN, std=STD)
            return DataLoader(ds, sampler=BatchSampler(RandomSampler(ds), batch, drop_last=False), batch_size=None,
                              num_workers=workers, persistent_workers=True)
        wall, cpu = pipeline_rate(batches)
        rows.append({"loader": f"DCQDataset, DataLoader {workers} workers, BatchSampler (no collate copy)",
                     "codec": codec, "img_s": wall, "img_cpu_s": cpu})
        wall, cpu = pipeline_rate(lambda path=path: DCQLoader(DCQDataset(path, augment=aug, mean=MEAN, std=STD),
                                                              batch_size=batch, shuffle=True))
        rows.append({"loader": "DCQLoader", "codec": codec, "img_s": wall, "img_cpu_s": cpu})
        wall, cpu = pipeline_rate(lambda path=path: DCQLoader(DCQDataset(path, augment=aug), batch_size=batch,
                                                              shuffle=True))
        rows.append({"loader": "DCQLoader, uint8 out (normalised on the device)", "codec": codec, "img_s": wall,
                     "img_cpu_s": cpu})
        side, shards = write_shards(path, str(work / f"wds-{codec}" / "p-%06d.tar"), shards=workers)
        wall, cpu = pipeline_rate(lambda shards=shards, side=side: torch.utils.data.DataLoader(
            dcq_pipeline(shards, side, batch_size=batch, augment=aug, mean=MEAN, std=STD, dtype=torch.float32),
            batch_size=None, num_workers=workers, persistent_workers=True))
        rows.append({"loader": f"WebDataset pipeline, {workers} workers", "codec": codec, "img_s": wall,
                     "img_cpu_s": cpu})
    for r in rows:
        r["x_jpeg_cpu"] = r["img_cpu_s"] / base
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", default=str(DEFAULT_PHOTOS))
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 96])
    p.add_argument("--bits", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--limit", type=int, default=None, help="use the first N photos")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--no-pipeline", action="store_true")
    p.add_argument("--cifar", type=int, default=None, metavar="N",
                   help="decode rows of the first N CIFAR-10 test images instead (results: bench_photos_cifar.json)")
    p.add_argument("--out", default="bench_photos", help="results file name under benchmarks/results (no .json)")
    args = p.parse_args()
    import numba

    bandwidth = memory_bandwidth()
    print(f"memory bandwidth (NumPy copy, bytes written): {bandwidth / 1e9:.1f} GB/s; numba threads "
          f"{numba.get_num_threads()}")
    decode, pipeline, crops = [], [], []
    if args.cifar:
        from dcqformat.cli import sample_data

        test = sample_data.load_cifar10(args.cifar, split="test")
        with tempfile.TemporaryDirectory() as d:
            decode, _ = decode_rows(test.images, test.labels, args.bits, Path(d), args.repeats, bandwidth)
        print(table(decode, [("size", "size", ""), ("storage", "storage", ""), ("bits", "bits", ""),
                             ("bytes", "B/image", ",.0f"), ("img_s", "img/CPU-s", ",.0f"),
                             ("ns_px", "ns/pixel", ".2f"), ("of_limit", "of memory limit", ".3f")]))
        print(f"written {save('bench_photos_cifar', {'images': len(test.images), 'decode': decode})}")
        return
    with tempfile.TemporaryDirectory() as d:
        for size in args.sizes:
            t = time.perf_counter()
            images, labels, _ = load_photos(Path(args.photos), size, args.limit)
            print(f"{len(images)} photos at {size} px in {time.perf_counter() - t:.0f} s")
            rows, files = decode_rows(images, labels, args.bits, Path(d), args.repeats, bandwidth)
            decode += rows
            print(table(rows, [("size", "size", ""), ("storage", "storage", ""), ("bits", "bits", ""),
                               ("bytes", "B/image", ",.0f"), ("img_s", "img/CPU-s", ",.0f"),
                               ("ns_px", "ns/pixel", ".2f"), ("of_limit", "of memory limit", ".3f")]))
            if size == 224 and 2 in files:
                crops = crop_rows(files[2], len(images), args.repeats)
                print(table(crops, [("codec", "2-bit file, RandomResizedCrop(224) bilinear uint8", ""),
                                    ("crop_img_s", "crops img/CPU-s", ",.0f"),
                                    ("whole_img_s", "whole images img/CPU-s", ",.0f"), ("gain", "x", ".2f")]))
            if size == 224 and not args.no_pipeline and 2 in files:
                numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
                pipeline = pipeline_rows(images, labels, files[2], Path(d), args.workers, args.batch)
                print(table(pipeline, [("loader", "pipeline (2-bit file)", ""), ("codec", "codec", ""),
                                       ("img_s", "img/s", ",.0f"), ("img_cpu_s", "img/CPU-s", ",.0f"),
                                       ("x_jpeg_cpu", "x Pillow JPEG per CPU-s", ".2f")]))
    path = save(args.out, {"photos": args.photos, "bandwidth_bytes_s": bandwidth, "decode": decode,
                                 "crops": crops, "pipeline": pipeline})
    print(f"written {path}")


if __name__ == "__main__":
    sys.exit(main())
