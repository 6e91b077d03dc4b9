"""The ``dcq`` command line."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
from collections.abc import Callable

from .. import _layout as L
from .._version import SPEC_VERSION, __version__
from ..errors import DcqError
from ..pipeline.options import (
    CLUSTER_FEATURES,
    DEQUANTIZER_SIZES,
    DROP_BY,
    MAE_SIZES,
    MAE_WEIGHTS,
    QUANTIZERS,
    SELECT_FEATURES,
    SELECTIONS,
    OptionError,
)
from . import commands
from .sample_data import DATASETS

EPILOG = """examples:
  dcq info train.dcq              header, sections, sizes, bits/pixel, ratio
  dcq info train.dcq --json       the same as JSON
  dcq verify train.dcq            check every checksum and sample (exit 1 on any problem)
  dcq verify train/               a dataset directory: its manifest, then every part
  dcq export train.dcq out/       decoded PNGs in an ImageFolder tree out/<class>/<index>.png
  dcq export train.dcq out.npz    decoded arrays x, y, source_index in one .npz
  dcq to-wds train.dcq 'shards/train-%06d.tar' --shards 8
                                  WebDataset shards (blocks of samples) and the sidecar shards/train.dcq
  dcq convert cifar10-train-{000000..000004}.tar train.dcq --bits 2
                                  quantize a dataset (ImageFolder, WebDataset shards, CIFAR folder, .npz)
  dcq preview train.dcq --source SRC --out preview.png
                                  originals next to decoded images, with the palettes as swatches
  dcq demo                        quantize a small image set and show what the format does
"""


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
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors (no progress)")
    s = sub.add_parser("info", parents=[quiet], help="show header, sections, sizes and metadata")
    s.add_argument("file", help="a .dcq file or a dataset directory (its parts, then the first part)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(fn=commands.cmd_info)
    s = sub.add_parser("verify", parents=[quiet], help="check every checksum and sample; exit 1 on any problem")
    s.add_argument("files", nargs="+", metavar="FILE", help=".dcq files or dataset directories (the manifest too)")
    s.set_defaults(fn=commands.cmd_verify)
    s = sub.add_parser("export", parents=[quiet], help="decode to PNGs (ImageFolder tree) or to one .npz",
                       description="Decode to OUT/<class>/<source index>.png, or to OUT.npz when OUT "
                                   "ends in .npz. Dropped patches are refilled by the file's MAE when it has "
                                   "one (--reconstruct).")
    s.add_argument("file", help="a .dcq file or a dataset directory (its parts as one dataset)")
    s.add_argument("out", metavar="OUT")
    s.add_argument("--reconstruct", default="auto", choices=["auto", "mae", "smooth", "mean", "none"],
                   help="refill dropped patches: auto (default: the file's MAE if any, else smooth), mae, smooth "
                        "(harmonic inpainting from the visible pixels), mean (the image's mean colour) or none "
                        "(black)")
    s.add_argument("--dequantize", default="lookup", choices=["auto", "lookup", "deband", "learned"],
                   help="what the palette images become, as the loaders' dequantize=: lookup (default: the palette "
                        "colours, exact), deband (false contours softened), learned (the file's learned "
                        "dequantizer, section DEQW) or auto (learned when the file has one, else lookup)")
    s.add_argument("--limit", type=_count(0), default=None, help="export only the first N samples")
    s.add_argument("--names-from", default=None, metavar="SRC", help="name PNGs after the source's files "
                   "(the dataset FILE was converted from) instead of by source index")
    s.set_defaults(fn=commands.cmd_export)
    s = sub.add_parser("to-wds", parents=[quiet],
                       help="write WebDataset shards (blocks of .dcqi samples) and their sidecar",
                       description="Write the samples, in a seeded random order, in blocks of --block to a .dcqb "
                                   "member (spec/WEBDATASET.md) into shards named by PATTERN (printf-style, e.g. "
                                   "'out/train-%06d.tar'), and the palettes and metadata into a sidecar .dcq file.")
    s.add_argument("file")
    s.add_argument("pattern", metavar="PATTERN", type=_wds_pattern)
    s.add_argument("--maxcount", type=_count(1), default=10000, help="samples per shard (default 10000)")
    s.add_argument("--shards", type=_count(1), default=None, metavar="N",
                   help="write N shards of equal size instead (at least ranks x DataLoader workers)")
    s.add_argument("--seed", type=_count(0), default=0, help="seed of the samples' shuffled order (default 0)")
    s.add_argument("--no-shuffle", action="store_true", help="keep the file's order (class-sorted sources give "
                   "class-sorted shards)")
    s.add_argument("--block", type=_count(0), default=512, help="samples per tar member (default 512; 0: one "
                   ".dcqi + .cls member pair per sample, for WebDataset's per-sample decoders)")
    s.add_argument("--sidecar", default=None, help="sidecar path (default: PATTERN's prefix + .dcq)")
    s.add_argument("--packed", action="store_true", help="write every sample as packed bits (readers before "
                   "WebDataset format 3); by default samples of a zstd, ctx, ctxs or ctxg file keep their coded "
                   "payloads, and the sidecar the codec's model")
    s.set_defaults(fn=commands.cmd_to_wds)
    s = sub.add_parser("convert", parents=[quiet], help="quantize a dataset into a .dcq file",
                       description="Quantize SRC (an ImageFolder tree, WebDataset tar shards given as a file, a "
                                   "glob or a brace pattern, a CIFAR-10/100 python folder, or an .npz with x and y) "
                                   "into DST. Unreadable images are skipped and reported (--on-error fail stops).")
    s.add_argument("src", metavar="SRC")
    s.add_argument("dst", metavar="DST")
    s.add_argument("--method", default="dcq", choices=QUANTIZERS,
                   help="dcq (default): shared cluster palettes; autopalette: AutoPalette's palette network "
                        "(per image; autopalette-shared pools its colours into --clusters palettes); mediancut, "
                        "octree, kmeans: one palette per image")
    s.add_argument("--bits", type=int, default=2, choices=L.BITS, help="bits per pixel (default 2)")
    s.add_argument("--clusters", type=int, default=256, help="shared palettes (dcq; default 256)")
    s.add_argument("--reassign", type=int, default=4, help="rounds in which images choose their best palette and "
                   "palettes are refitted to them (dcq; default 4; 0: palettes of the feature clusters)")
    s.add_argument("--cluster-features", default="shallow", choices=CLUSTER_FEATURES,
                   help="cluster images by the attention model's shallow features (default), LAB colour "
                        "statistics, or both")
    s.add_argument("--codec", default="packed", choices=list(L.CODECS),
                   help="payloads: packed bits (default; decoded in place), zstd, ctx (context-modelled "
                        "rANS, 1-4 bits: about half the bytes of packed, decoded at loader speed), ctxs "
                        "(ctx in stripes of 64 rows: about 2%% more bytes; a crop decodes only the stripes it "
                        "touches), or ctxg (1-4 bits, stripes, a group of pixels per rANS step: 2-3x the decode "
                        "speed of ctxs on photos for 0-17%% more bytes)")
    s.add_argument("--bytes-per-image", type=float, default=None, metavar="B",
                   help="a byte budget: the most bits that fit B bytes per image, with the fastest codec that "
                        "fits (estimated on a sample; overrides --bits and --codec; the summary says what it chose)")
    s.add_argument("--work-dir", default=None, metavar="DIR", help="where finished stages are kept so that a "
                   "killed conversion resumes when rerun (default: .DST.work beside DST; removed on success)")
    s.add_argument("--no-resume", dest="resume", action="store_false", help="start over, ignoring the stages a "
                   "killed run of the same conversion kept")
    s.add_argument("--resize", type=int, default=None, metavar="N", help="scale every image so its shorter "
                   "side is N pixels (keep aspect) while reading; JPEGs decode at reduced scale when that suffices")
    s.add_argument("--center-crop", action="store_true", help="with --resize: keep the central N x N square")
    s.add_argument("--max-size", type=int, default=None, metavar="N", help="scale down images whose longer side "
                   "exceeds N pixels (as FFCV's max_resolution)")
    s.add_argument("--dither", action="store_true", help="Floyd-Steinberg error diffusion through each image's "
                   "palette: smoother gradients, noisier (larger) ctx/zstd payloads")
    s.add_argument("--palette-corrections", type=int, default=0, metavar="STEP",
                   help="method dcq, 1-4 bits: each image keeps its shared palette and stores a correction of it "
                        "(4 bits per colour channel, in steps of STEP, e.g. 6: 6 bytes per image at 2 bits RGB), "
                        "its pixels reassigned to the corrected colours (default 0: off)")
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
                   help="drop this fraction of each image's patches, those the loaders refill best (see "
                        "--drop-by), and train an MAE that the loaders use to refill them (e.g. 0.25; default 0: "
                        "keep all)")
    s.add_argument("--drop-by", default="fill", choices=DROP_BY, help="which patches to drop: fill (default: "
                   "those the harmonic fill restores best, i.e. the smoothest), attention (the least attended by "
                   "the attention model's Grad-CAM++, as Dataset Quantization) or both (the fill's error weighted "
                   "by attention)")
    s.add_argument("--patch-size", type=int, default=None, help="patch side in pixels (default: 4 below 96 px, "
                   "else 16)")
    s.add_argument("--mae", default=None, metavar="PATH", help="reuse the MAE of a .dcq file or .safetensors "
                   "checkpoint instead of training one")
    s.add_argument("--mae-epochs", type=int, default=30, help="MAE training epochs (default 30; on a CPU also "
                   "capped at 240 s, see --mae-seconds)")
    s.add_argument("--mae-size", default="auto", choices=MAE_SIZES, help="the MAE's size: auto (default: "
                   "the largest that costs at most a tenth of what dropping saves on this dataset, none when even "
                   "tiny would cost more), none (no MAE: the loaders refill with the harmonic fill) or tiny, "
                   "small, base, large")
    s.add_argument("--mae-weights", default="int8", choices=MAE_WEIGHTS, help="how the file stores the MAE: "
                   "int8 (default, a scale per tensor; a quarter of float32) or float16")
    s.add_argument("--dequantizer", default="none", choices=DEQUANTIZER_SIZES, help="a learned dequantizer "
                   "stored in the file (section DEQW), trained on this dataset's (palette image, original) pairs, "
                   "that the loaders run with dequantize='learned' (or 'auto'): none (default), auto (the largest "
                   "costing at most 2%% of the index bytes, kept only if on held-out images it beats lookup and the "
                   "debanding filter by 0.2 dB) or tiny, small, base")
    s.add_argument("--dequantizer-seconds", type=float, default=None, help="its training time limit (default: "
                   "60 on a CPU, none on a GPU)")
    s.add_argument("--palette-seconds", type=float, default=None, help="autopalette: time limit of the palette "
                   "network's training (default: 180 on a CPU, none on a GPU)")
    s.add_argument("--palette-losses", default="max,balance,align", help="autopalette: the auxiliary losses to "
                   "use (default all three; the paper's ablation drops one)")
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
    s.add_argument("--overwrite", action="store_true", help="replace DST when it exists (refused otherwise)")
    s.add_argument("--samples-per-file", type=_count(1), default=None, metavar="N",
                   help="write DST as a dataset directory: part files of N samples and a manifest, which "
                        "DCQDataset(DST) reads as one")
    s.set_defaults(fn=commands.cmd_convert)
    s = sub.add_parser("preview", parents=[quiet],
                       help="a PNG grid of decoded images (and originals) with palette swatches")
    s.add_argument("file", metavar="FILE.dcq")
    s.add_argument("--source", default=None, help="the dataset FILE was converted from, to show originals")
    s.add_argument("--out", default="preview.png")
    s.add_argument("--count", type=_count(1), default=16, help="images to show (default 16)")
    s.set_defaults(fn=commands.cmd_preview)
    s = sub.add_parser("demo", parents=[quiet],
                       help="convert a small image set with DCQ and MedianCut; sizes, PSNR, speed, preview")
    s.add_argument("--out", default="out/demo", help="folder for the files (default: out/demo)")
    s.add_argument("--limit", type=_count(1), default=2000, help="number of images (default: 2000)")
    s.add_argument("--bits", type=int, default=2, choices=L.BITS, help="bits per pixel (default: 2)")
    s.add_argument("--dataset", default="auto", choices=DATASETS,
                   help="auto: CIFAR-10 from ../shared/data/cifar10 when present, else the embedded photo crops")
    s.add_argument("--epochs", type=_count(0), default=8, help="attention model epochs (default 8)")
    s.set_defaults(fn=commands.cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dcq`` console script."""
    code = _main(argv)
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        # A torchrun rank: its files are written and its process group is left. It ends here,
        # without the interpreter's teardown, where threads of torch's distributed runtime are
        # destroyed and now and then abort the process ("terminate called without an active
        # exception", SIGABRT), which torchrun reports as a failure of the whole run.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `dcq info f | head` ends quietly, like other Unix tools
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM (a scheduler stopping the job) unwinds like Ctrl-C: writers drop their temporary files.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.quiet:  # errors still go to stderr; the exit status tells the rest
            with contextlib.redirect_stdout(io.StringIO()):
                return int(args.fn(args))
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
    dest = {v: k for k, v in commands.CONFIG_NAMES.items()}.get(option, option)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return next((a.option_strings[0] for a in sub._actions if a.dest == dest and a.option_strings), option)


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


if __name__ == "__main__":
    sys.exit(main())
