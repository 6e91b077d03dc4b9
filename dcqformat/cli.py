"""The ``dcq`` command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from . import SPEC_VERSION, __version__
from .errors import DcqError
from .options import CLUSTER_FEATURES, QUANTIZERS, SELECT_FEATURES, SELECTIONS, ConvertConfig, OptionError
from .reader import DcqReader
from .reader import open as open_dcq
from .sample_data import DATASETS

EPILOG = """examples:
  dcq info train.dcq              header, sections, sizes, bits/pixel, ratio
  dcq info train.dcq --json       the same as JSON
  dcq verify train.dcq            check every checksum and sample (exit 1 on any problem)
  dcq export train.dcq out/       decoded PNGs in an ImageFolder tree out/<class>/<index>.png
  dcq export train.dcq out.npz    decoded arrays x, y, source_index in one .npz
  dcq to-wds train.dcq 'shards/train-%06d.tar' --maxcount 10000
                                  WebDataset shards (.dcqi + .cls) and the sidecar shards/train.dcq
  dcq convert cifar10-train-{000000..000004}.tar train.dcq --bits 2
                                  quantize a dataset (ImageFolder, WebDataset shards, CIFAR folder, .npz)
  dcq preview train.dcq --source SRC --out preview.png
                                  originals next to decoded images, with the palettes as swatches
  dcq demo                        quantize a small image set and show what the format does
"""


def _cmd_info(args: argparse.Namespace) -> int:
    with open_dcq(args.file) as r:
        info = r.info()
        info["meta"] = r.meta
        meta = r.metadata
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['path']}: dcq {info['version']}, {info['samples']:,} samples, {info['bits']}-bit, "
          f"{info['channels']} channel(s), {info['palettes']:,} palette(s), codec {info['codec']}")
    if info["patch_size"]:
        print(f"patches {info['patch_size'][0]}x{info['patch_size'][1]}, "
              f"{info['masked_samples']:,} samples with dropped patches")
    print(f"size {info['file_bytes']:,} bytes, {info['bits_per_pixel']:.3f} bits/pixel, "
          f"{info['compression_ratio']:.1f}x smaller than raw uint8 ({info['raw_uint8_bytes']:,} bytes)")
    print(f"{'section':8}{'offset':>14}{'length':>14}  crc32")
    for s in info["sections"]:
        print(f"{s['tag']:8}{s['offset']:>14,}{s['length']:>14,}  {s['crc32']}")
    if meta.name is not None:
        print(f"name: {meta.name}")
    if "color_space" in meta.raw:
        print(f"color_space: {meta.color_space}")
    if meta.classes is not None:
        more = " ..." if len(meta.classes) > 20 else ""
        print(f"classes ({len(meta.classes)}): {', '.join(meta.classes[:20])}{more}")
    if meta.drop is not None:
        d = meta.drop
        print(f"dropped patches: {d.fraction} of each image's {d.patch} px patches ({d.importance})")
    if meta.mae is not None:
        wght = next((s["length"] for s in info["sections"] if s["tag"] == "WGHT"), 0)
        print(f"MAE (refills dropped patches in the loaders): {json.dumps(meta.mae.get('config'))}, "
              f"{wght:,} bytes of weights")
    if meta.selection is not None:
        sel = meta.selection
        counts = "" if sel.kept is None or sel.samples_in is None else f" ({sel.kept:,} of {sel.samples_in:,})"
        print(f"selection: {sel.method}, keep {sel.keep}{counts}; per class: {json.dumps(sel.per_class)}")
    if meta.quantizer is not None:
        print(f"quantizer: {json.dumps(_brief(meta.quantizer))}  (all of it: --json)")
    return 0


def _brief(obj: Any, longest: int = 12) -> Any:
    """``obj`` with every list of more than ``longest`` numbers replaced by a one-line summary."""
    if isinstance(obj, dict):
        return {k: _brief(v, longest) for k, v in obj.items()}
    if isinstance(obj, list) and len(obj) > longest and all(isinstance(v, (int, float)) for v in obj):
        return f"{len(obj)} values, {min(obj):g} .. {max(obj):g}, median {float(np.median(obj)):g}"
    if isinstance(obj, list):
        return [_brief(v, longest) for v in obj]
    return obj


def _cmd_verify(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.files:
        try:
            with open_dcq(path) as r:
                r.verify()
                print(f"{path}: ok ({len(r):,} samples, all checksums match)")
        except DcqError as exc:
            print(f"{path}: FAILED: {exc}")
            bad += 1
    return 1 if bad else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from PIL import Image

    with open_dcq(args.file) as r:
        n = len(r) if args.limit is None else min(args.limit, len(r))
        classes = r.classes
        out = Path(args.out)
        decode = _export_decoder(r, args.reconstruct)
        if out.suffix == ".npz":
            shapes = r.shapes[:n]
            if n and (shapes != shapes[0]).any():
                raise DcqError("samples differ in size: export to a folder of PNGs instead of .npz")
            x = np.concatenate([decode(np.arange(s, min(s + 1024, n))) for s in range(0, n, 1024)]) if n else \
                r.decode_batch(np.arange(0))
            out.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".npz", delete=False) as tmp:
                np.savez(tmp, x=x, y=r.labels[:n], source_index=r.source_indices[:n])
            Path(tmp.name).replace(out)
            print(f"wrote {n:,} samples to {out}")
            return 0
        for i in range(n):
            label = int(r.labels[i])
            name = classes[label] if classes and 0 <= label < len(classes) else (
                str(label) if label >= 0 else "unlabelled")
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            img = decode(np.array([i]))[0]
            Image.fromarray(img[..., 0] if img.shape[2] == 1 else img).save(
                folder / f"{int(r.source_indices[i]):08d}.png")
        print(f"wrote {n:,} PNGs under {out}/")
    return 0


def _export_decoder(r: DcqReader, mode: str) -> Callable[[np.ndarray], np.ndarray]:
    """Samples -> (N, H, W, C) uint8, dropped patches refilled as ``mode`` says (auto: by the
    file's MAE when it has one, else left black); samples of several sizes one by one."""
    if mode == "auto":
        mode = "mae" if r.weights_blob() is not None else "none"
    decode: Callable[[np.ndarray], np.ndarray]
    if not r.has_masks or mode == "none":
        decode = r.decode_batch
    else:
        try:
            from .loaders.reconstruct import Reconstructor, refilled_images
        except ImportError as exc:
            raise DcqError(f"refilling dropped patches needs torch ({exc}); use --reconstruct none") from None
        assert r.patch_size is not None
        rec = Reconstructor(mode, weights=r.weights_blob(), patch=r.patch_size)

        def refill(idx: np.ndarray) -> np.ndarray:
            return refilled_images(r, idx, rec)
        decode = refill

    def run(idx: np.ndarray) -> np.ndarray:
        if len({tuple(s) for s in r.shapes[idx]}) <= 1:
            return decode(idx)
        return np.stack([decode(np.array([i]))[0] for i in idx.tolist()])
    return run


def _cmd_to_wds(args: argparse.Namespace) -> int:
    try:
        from .loaders.wds import write_shards
    except ImportError as exc:
        raise DcqError(f"to-wds needs the loaders' dependencies (torch, webdataset): {exc}") from None
    side, shards = write_shards(args.file, args.pattern, maxcount=args.maxcount, sidecar=args.sidecar)
    print(f"wrote {len(shards)} shard(s) ({shards[0] if shards else '-'} ...) and the sidecar {side}")
    return 0


# dcq convert's options that are named otherwise in ConvertConfig
_CONFIG_NAMES = {"epochs": "model_epochs"}


def _convert_config(args: argparse.Namespace) -> ConvertConfig:
    """The ConvertConfig of ``dcq convert``'s options, checked (before torch is imported)."""
    names = {f.name for f in fields(ConvertConfig)}
    values = {_CONFIG_NAMES.get(k, k): v for k, v in vars(args).items() if _CONFIG_NAMES.get(k, k) in names}
    cfg = ConvertConfig(**values)
    cfg.check()
    return cfg


def _cmd_convert(args: argparse.Namespace) -> int:
    cfg = _convert_config(args)
    if Path(args.dst).is_dir():
        raise DcqError(f"{args.dst}: the destination is a directory")
    from .conversion import convert

    summary = convert(args.src, args.dst, cfg, progress=not args.quiet)
    print(f"wrote {args.dst}")
    print(summary.table(cfg))
    if summary.problems:
        print(f"{len(summary.problems)} unreadable sample(s) skipped, e.g.:")
        for index, why in summary.problems[:5]:
            print(f"  sample {index}: {why}")
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from .preview import preview

    path = preview(args.file, args.out, source=args.source, count=args.count)
    print(f"wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    run(Path(args.out), limit=args.limit, bits=args.bits, dataset=args.dataset, epochs=args.epochs)
    return 0


def _count(least: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``least``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {value}")
        return value
    return parse


def _wds_pattern(text: str) -> str:
    """An argparse type: a printf-style shard pattern with one integer field."""
    try:
        if text % 0 == text % 1:
            raise TypeError
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must hold one integer field such as %06d, got {text!r}") from None
    return text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dcq``."""
    p = argparse.ArgumentParser(prog="dcq", description="Inspect, check and export .dcq image datasets.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version",
                   version=f"dcq {__version__} (dcqformat {__version__}, spec {SPEC_VERSION})")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("info", help="show header, sections, sizes and metadata")
    s.add_argument("file")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(fn=_cmd_info)
    s = sub.add_parser("verify", help="check every checksum and sample; exit 1 on any problem")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.set_defaults(fn=_cmd_verify)
    s = sub.add_parser("export", help="decode to PNGs (ImageFolder tree) or to one .npz",
                       description="Decode to OUT/<class>/<source index>.png, or to OUT.npz when OUT "
                                   "ends in .npz. Dropped patches are refilled by the file's MAE when it has "
                                   "one (--reconstruct).")
    s.add_argument("file")
    s.add_argument("out", metavar="OUT")
    s.add_argument("--reconstruct", default="auto", choices=["auto", "mae", "mean", "none"],
                   help="refill dropped patches: auto (default: the file's MAE if any, else none), mae, mean "
                        "(the image's mean colour) or none (black)")
    s.add_argument("--limit", type=_count(0), default=None, help="export only the first N samples")
    s.set_defaults(fn=_cmd_export)
    s = sub.add_parser("to-wds", help="write WebDataset shards (.dcqi + .cls members) and their sidecar",
                       description="Write every sample as a .dcqi member (spec/WEBDATASET.md) with its .cls "
                                   "label into shards named by PATTERN (printf-style, e.g. 'out/train-%06d.tar'), "
                                   "and the palettes and metadata into a sidecar .dcq file.")
    s.add_argument("file")
    s.add_argument("pattern", metavar="PATTERN", type=_wds_pattern)
    s.add_argument("--maxcount", type=_count(1), default=10000, help="samples per shard (default 10000)")
    s.add_argument("--sidecar", default=None, help="sidecar path (default: PATTERN's prefix + .dcq)")
    s.set_defaults(fn=_cmd_to_wds)
    s = sub.add_parser("convert", help="quantize a dataset into a .dcq file",
                       description="Quantize SRC (an ImageFolder tree, WebDataset tar shards given as a file, a "
                                   "glob or a brace pattern, a CIFAR-10/100 python folder, or an .npz with x and y) "
                                   "into DST. Unreadable images are skipped and reported (--on-error fail stops).")
    s.add_argument("src", metavar="SRC")
    s.add_argument("dst", metavar="DST")
    s.add_argument("--method", default="dcq", choices=QUANTIZERS,
                   help="dcq (default): shared cluster palettes; the others: one palette per image")
    s.add_argument("--bits", type=int, default=2, choices=range(1, 9), help="bits per pixel (default 2)")
    s.add_argument("--clusters", type=int, default=256, help="shared palettes (dcq; default 256)")
    s.add_argument("--reassign", type=int, default=4, help="rounds in which images choose their best palette and "
                   "palettes are refitted to them (dcq; default 4; 0: palettes of the feature clusters)")
    s.add_argument("--cluster-features", default="shallow", choices=CLUSTER_FEATURES,
                   help="cluster images by the attention model's shallow features (default), LAB colour "
                        "statistics, or both")
    s.add_argument("--codec", default="packed", choices=["packed", "zstd"])
    s.add_argument("--channels", type=int, default=3, choices=[1, 3], help="output channels (default 3)")
    s.add_argument("--alpha", default="drop", choices=["drop", "composite"], help="RGBA input: drop alpha or "
                   "composite over white")
    s.add_argument("--on-error", default="skip", choices=["skip", "fail"])
    s.add_argument("--limit", type=int, default=None, help="convert the first N samples only")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    s.add_argument("--model", default=None, help="attention model checkpoint (.safetensors from dcq, or TorchScript)")
    s.add_argument("--epochs", type=int, default=8, help="attention model training epochs (default 8)")
    s.add_argument("--refine-steps", type=int, default=10, help="texture refinement steps per palette (default 10)")
    s.add_argument("--drop-patches", type=float, default=0.0, metavar="FRACTION",
                   help="drop this fraction of each image's patches, those of least Grad-CAM++ attention, and "
                        "train an MAE that the loaders use to refill them (e.g. 0.25; default 0: keep all)")
    s.add_argument("--patch-size", type=int, default=None, help="patch side in pixels (default: 4 below 96 px, "
                   "else 16)")
    s.add_argument("--mae", default=None, metavar="PATH", help="reuse the MAE of a .dcq file or .safetensors "
                   "checkpoint instead of training one")
    s.add_argument("--mae-epochs", type=int, default=30, help="MAE training epochs (default 30; on a CPU also "
                   "capped at 240 s, see --mae-seconds)")
    s.add_argument("--mae-seconds", type=float, default=None, help="MAE training time limit (default: 240 on a "
                   "CPU, none on a GPU)")
    s.add_argument("--keep", type=float, default=1.0, metavar="FRACTION",
                   help="sample selection: keep this fraction of each class (default 1: all)")
    s.add_argument("--select", default="dq", choices=SELECTIONS,
                   help="how to choose the kept samples: dq (default: Dataset Quantization bins), adq (adaptive "
                        "per-bin rates), graphcut (AutoPalette: GraphCut on quantized images), random")
    s.add_argument("--bins", type=int, default=10, help="DQ/ADQ bins (default 10)")
    s.add_argument("--select-features", default="gradient", choices=SELECT_FEATURES,
                   help="selection features: the last-layer gradient embedding (default, as DQ) or the "
                        "penultimate features")
    s.add_argument("--adq-alpha", type=float, default=0.65, help="ADQ importance weight a (default 0.65)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(fn=_cmd_convert)
    s = sub.add_parser("preview", help="a PNG grid of decoded images (and originals) with palette swatches")
    s.add_argument("file", metavar="FILE.dcq")
    s.add_argument("--source", default=None, help="the dataset FILE was converted from, to show originals")
    s.add_argument("--out", default="preview.png")
    s.add_argument("--count", type=_count(1), default=16, help="images to show (default 16)")
    s.set_defaults(fn=_cmd_preview)
    s = sub.add_parser("demo", help="convert a small image set with DCQ and MedianCut; sizes, PSNR, speed, preview")
    s.add_argument("--out", default="out/demo", help="folder for the files (default: out/demo)")
    s.add_argument("--limit", type=_count(1), default=2000, help="number of images (default: 2000)")
    s.add_argument("--bits", type=int, default=2, choices=range(1, 9), help="bits per pixel (default: 2)")
    s.add_argument("--dataset", default="auto", choices=DATASETS,
                   help="auto: CIFAR-10 from ../shared/data/cifar10 when present, else the embedded photo crops")
    s.add_argument("--epochs", type=_count(0), default=8, help="attention model epochs (default 8)")
    s.set_defaults(fn=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dcq`` console script."""
    if hasattr(signal, "SIGPIPE"):  # `dcq info f | head` ends quietly, like other Unix tools
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM (a scheduler stopping the job) unwinds like Ctrl-C: writers drop their temporary files.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.fn(args))
    except OptionError as exc:  # a value out of its range: a usage error, named by its option
        flag = _flag(parser, args.command, exc.option)
        print(f"dcq {args.command}: error: argument {flag}: {exc.message}", file=sys.stderr)
        return 2
    except (DcqError, OSError) as exc:
        print(f"dcq: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Terminated:
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)


def _flag(parser: argparse.ArgumentParser, command: str, option: str) -> str:
    """The command-line flag of a ConvertConfig setting (``model_epochs`` -> ``--epochs``)."""
    dest = {v: k for k, v in _CONFIG_NAMES.items()}.get(option, option)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return next((a.option_strings[0] for a in sub._actions if a.dest == dest and a.option_strings), option)


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


if __name__ == "__main__":
    sys.exit(main())
