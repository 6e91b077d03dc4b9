"""DataLoader throughput, end to end: DCQDataset vs ImageFolder (Pillow JPEG) vs in-memory tensors.

Usage: python -m benchmarks.bench_loader [--n 50000] [--epochs 3] [--workers 2] [--batch 256]
                                         [--only dataloader|webdataset|multifile]

Every loader yields float32 NCHW batches normalised with CIFAR's mean/std after a random crop
(padding 4) and a horizontal flip, through torch's DataLoader. The .dcq file is CIFAR-10 train
quantized to 2 bits with 20 shared palettes; the ImageFolder holds the source JPEGs. A
WebDataset section compares .dcq shards with the source JPEG shards in the same pipeline; a
multi-file section reads the same samples as one file and as a dataset directory of 4 part files.
Files are cached under out/bench/. Results go to benchmarks/results/bench_loader.json.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import dcqformat
from benchmarks.common import rate, save, table
from benchmarks.training import MEAN_RGB as MEAN
from benchmarks.training import STD_RGB as STD
from dcqformat.cli import sample_data
from dcqformat.loaders import DCQDataset, DCQLoader, RandomCrop, random_crop_flip
from dcqformat.pipeline.sources import tar_samples
from dcqformat.quantize import simple_quant

CACHE = Path("out/bench")
warnings.filterwarnings("ignore", category=ResourceWarning)


def _augment(img: torch.Tensor) -> torch.Tensor:
    """Per-sample RandomCrop(32, padding=4) + flip + normalise on a uint8 CHW tensor."""
    padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
    y, x = torch.randint(0, 9, (2,)).tolist()
    out = padded[:, y : y + 32, x : x + 32]
    if torch.rand(()) < 0.5:
        out = out.flip(2)
    return (out.float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


class JpegFolder(Dataset):
    """torchvision's ImageFolder, minus torchvision: Pillow decodes each JPEG."""

    def __init__(self, root: Path) -> None:
        self.files = sorted(root.rglob("*.jpg"))
        classes = sorted({f.parent.name for f in self.files})
        self.labels = [classes.index(f.parent.name) for f in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        img = np.asarray(Image.open(self.files[i]).convert("RGB"))
        return _augment(torch.from_numpy(img).permute(2, 0, 1)), self.labels[i]


class InMemory(Dataset):
    """A uint8 tensor of every image, augmented per sample (the usual way)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.y = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        return _augment(self.x[i]), self.y[i]


class Ceiling(Dataset):
    """No decoding at all: a ready float32 batch, to measure what DataLoader itself can move."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, idx):  # type: ignore[no-untyped-def]
        return torch.zeros((len(idx), 3, 32, 32)), torch.zeros(len(idx), dtype=torch.int64)


class InMemoryBatched(InMemory):
    """The same tensor, augmented a whole batch at a time (the strongest in-memory baseline)."""

    def __getitems__(self, idx):  # type: ignore[no-untyped-def]
        x = random_crop_flip(self.x[idx].float(), padding=4) / 255
        x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
        return list(zip(x, self.y[idx]))


def _passthrough(batch):  # type: ignore[no-untyped-def]
    return batch


def prepare(n: int) -> tuple[Path, Path, sample_data.ImageSet]:
    root = sample_data.find_cifar10()
    if root is None:
        raise SystemExit("bench_loader needs CIFAR-10 (../shared/data/cifar10 or $DCQ_CIFAR10_DIR)")
    data = sample_data.load_cifar10(n)
    CACHE.mkdir(parents=True, exist_ok=True)
    dcq = CACHE / f"cifar10-train-{n}-2bit.dcq"
    if not dcq.exists():
        assign, palettes = simple_quant.shared_palettes(data.images, 2, clusters=20)
        with dcqformat.DcqWriter(dcq, bits=2, palettes=palettes, meta={"classes": data.classes}) as w:
            for img, a, y in zip(data.images, assign, data.labels):
                w.add(simple_quant.map_to_palette(img, palettes[a]), palette=int(a), label=int(y))
    folder = CACHE / f"imagefolder-{n}"
    if not folder.exists():
        for count, sample in enumerate(tar_samples(sorted(root.glob("cifar10-train-*.tar")))):
            if count >= n:
                break
            cls_dir = folder / data.classes[int(sample["cls"])]
            cls_dir.mkdir(parents=True, exist_ok=True)
            (cls_dir / f"{sample['__key__'].decode()}.jpg").write_bytes(sample["jpg"])
    return dcq, folder, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--only", choices=["dataloader", "webdataset", "multifile"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    dcq, folder, data = prepare(args.n)
    result: dict = {"args": vars(args)}
    if args.only in (None, "dataloader"):
        result["dataloader"] = bench_dataloader(dcq, folder, data, args)
    if args.only in (None, "webdataset"):
        wds_rows = result["webdataset"] = bench_wds(dcq, args)
        print("\nWebDataset, same pipeline (shuffle 1000, decode, crop+flip, normalise, batch), 2 workers")
        print(table(wds_rows, [("loader", "shards", ""), ("img_s", "img/s", ",.0f"),
                               ("bytes", "shard bytes", ",.0f"), ("dcq_x", "dcq is x faster", ".2f")]))
    if args.only in (None, "multifile"):
        multi_rows = result["multifile"] = bench_multifile(dcq, args)
        print(f"\nOne .dcq file against a dataset directory of 4 part files, same samples, batch {args.batch}")
        print(table(multi_rows, [("loader", "loader", ""), ("one_file", "one file img/s", ",.0f"),
                                 ("four_files", "4 files img/s", ",.0f"), ("ratio", "4 files / one", ".2f")]))
    result["seconds"] = time.time() - t0
    out = save("bench_loader" if args.only is None else f"bench_loader_{args.only}", result)
    print(f"\nwritten {out}")


def bench_dataloader(dcq: Path, folder: Path, data: sample_data.ImageSet, args) -> list[dict]:  # type: ignore[no-untyped-def]
    kw = {"batch_size": args.batch, "shuffle": True, "num_workers": args.workers, "persistent_workers": True}
    crop = RandomCrop(32, padding=4, flip=0.5)
    loaders = {
        "DCQDataset (2-bit .dcq)": lambda: DataLoader(DCQDataset(dcq, augment=crop, mean=MEAN, std=STD), **kw),
        "DCQDataset, uint8 out (normalise on the GPU)": lambda: DataLoader(DCQDataset(dcq, augment=crop), **kw),
        "DCQDataset, num_workers=0 (parallel decode in-process)": lambda: DataLoader(
            DCQDataset(dcq, augment=crop, mean=MEAN, std=STD), batch_size=args.batch, shuffle=True, num_workers=0),
        "DCQLoader (background thread, no worker processes)": lambda: DCQLoader(
            DCQDataset(dcq, augment=crop, mean=MEAN, std=STD), args.batch, shuffle=True),
        "ImageFolder (Pillow JPEG)": lambda: DataLoader(JpegFolder(folder), **kw),
        "in-memory uint8 tensor, per-sample aug": lambda: DataLoader(InMemory(data.images, data.labels), **kw),
        "in-memory uint8 tensor, batched aug": lambda: DataLoader(InMemoryBatched(data.images, data.labels), **kw),
        "ceiling: DataLoader moving ready float32 batches, no decoding": lambda: DataLoader(
            Ceiling(len(data.images)), collate_fn=_passthrough, **kw),
    }
    rows = []
    for name, make in loaders.items():
        epochs = 1 if "ImageFolder" in name else args.epochs
        rows.append({"loader": name, "epochs": epochs, "img_s": rate(make, epochs)})
        print(f"  {name}: {rows[-1]['img_s']:,.0f} img/s", file=sys.stderr)
    base = {r["loader"]: r["img_s"] for r in rows}
    for r in rows:
        r["x_imagefolder"] = r["img_s"] / base["ImageFolder (Pillow JPEG)"]
        r["x_in_memory"] = r["img_s"] / base["in-memory uint8 tensor, per-sample aug"]
        r["x_in_memory_batched"] = r["img_s"] / base["in-memory uint8 tensor, batched aug"]
    print(f"CIFAR-10 train, batch {args.batch}, DataLoader with {args.workers} workers unless said, crop+flip, "
          "float normalised unless said")
    print(table(rows, [("loader", "loader", ""), ("epochs", "epochs timed", "d"), ("img_s", "img/s", ",.0f"),
                       ("x_imagefolder", "x ImageFolder", ".1f"), ("x_in_memory", "x in-memory", ".2f"),
                       ("x_in_memory_batched", "x in-memory batched", ".2f")]))
    return rows


def bench_multifile(dcq: Path, args) -> list[dict]:  # type: ignore[no-untyped-def]
    """The same samples as one file and as 4 part files, alternating, each loader twice (the best kept)."""
    from dcqformat.format.multifile import DcqSetWriter

    parts = CACHE / f"{dcq.stem}-4files"
    if not parts.exists():
        with dcqformat.open(dcq) as r, DcqSetWriter(parts, -(-len(r) // 4), bits=r.bits, palettes=r.palettes,
                                                    meta={"classes": r.classes}) as w:
            for i in range(len(r)):
                w.add(r.indices(i), palette=int(r.palette_ids[i]), label=int(r.labels[i]))
    crop = RandomCrop(32, padding=4, flip=0.5)
    kw = {"batch_size": args.batch, "shuffle": True, "num_workers": args.workers, "persistent_workers": True}
    makers = {
        f"DataLoader, {args.workers} workers": lambda src: DataLoader(
            DCQDataset(src, augment=crop, mean=MEAN, std=STD), **kw),
        "DCQLoader (background thread)": lambda src: DCQLoader(
            DCQDataset(src, augment=crop, mean=MEAN, std=STD), args.batch, shuffle=True),
    }
    rows = []
    for name, make in makers.items():
        best = {"one_file": 0.0, "four_files": 0.0}
        for _ in range(2):
            for key, src in (("one_file", dcq), ("four_files", parts)):
                best[key] = max(best[key], rate(lambda make=make, src=src: make(src), args.epochs))
        rows.append({"loader": name, **best, "ratio": best["four_files"] / best["one_file"]})
        print(f"  {name}: one file {best['one_file']:,.0f}, 4 files {best['four_files']:,.0f} img/s", file=sys.stderr)
    return rows


def bench_wds(dcq: Path, args) -> list[dict]:  # type: ignore[no-untyped-def]
    import webdataset as wds

    from dcqformat.loaders.wds import dcq_pipeline, write_shards

    root = sample_data.find_cifar10()
    shard_dir = CACHE / f"wds-{args.n}-blocks"  # .dcqb members of 512 samples (spec/WEBDATASET.md v2)
    if not (shard_dir / "train.dcq").exists():
        write_shards(dcq, str(shard_dir / "train-%06d.tar"), maxcount=10000)
    dcq_urls = sorted(str(p) for p in shard_dir.glob("train-*.tar"))
    jpeg_urls = sorted(str(p) for p in root.glob("cifar10-train-*.tar"))[: max(1, args.n // 10000)]

    def jpeg_pipe() -> wds.DataPipeline:
        def to_pair(s):  # type: ignore[no-untyped-def]
            img = np.asarray(Image.open(io.BytesIO(s["jpg"])).convert("RGB"))
            return _augment(torch.from_numpy(img).permute(2, 0, 1)), int(s["cls"])

        return wds.DataPipeline(wds.SimpleShardList(jpeg_urls), wds.split_by_worker, wds.tarfile_to_samples(),
                                wds.shuffle(1000), wds.map(to_pair), wds.batched(args.batch))

    def dcq_pipe() -> wds.DataPipeline:
        return dcq_pipeline(dcq_urls, shard_dir / "train.dcq", batch_size=args.batch, shuffle=1000,
                            augment=RandomCrop(32, padding=4, flip=0.5), mean=MEAN, std=STD)

    rows = []
    for name, make, urls in [(".dcq shards (2-bit)", dcq_pipe, dcq_urls), ("JPEG shards (source)", jpeg_pipe,
                                                                            jpeg_urls)]:
        r = rate(lambda make=make: wds.WebLoader(make(), batch_size=None, num_workers=args.workers,
                                                 persistent_workers=True), 1)
        rows.append({"loader": name, "img_s": r, "bytes": sum(Path(u).stat().st_size for u in urls)})
        print(f"  {name}: {r:,.0f} img/s", file=sys.stderr)
    for r in rows:
        r["dcq_x"] = rows[0]["img_s"] / r["img_s"]
    return rows


if __name__ == "__main__":
    main()
