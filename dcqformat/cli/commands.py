"""What each ``dcq`` command does, given its parsed arguments (the parser is in :mod:`dcqformat.cli`)."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import textwrap
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DcqError
from ..format.multifile import open_set, resolve
from ..format.reader import DcqReader
from ..format.reader import open as open_dcq
from ..format.writer import publish
from ..pipeline.options import ConvertConfig
from .refill import refilling_decoder


def cmd_info(args: argparse.Namespace) -> int:
    if Path(args.file).is_dir():
        return _set_info(args)
    with open_dcq(args.file) as r:
        info, meta = _info(r), r.metadata
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    _print_info(info, meta)
    return 0


def _set_info(args: argparse.Namespace) -> int:
    """``dcq info DIR`` of a dataset directory: its parts (checked against the manifest) and
    their sum, then the first part's header and metadata (the parts share the metadata)."""
    infos = []
    for part in resolve(args.file):
        with open_dcq(part) as r:
            infos.append(_info(r))
            if len(infos) == 1:
                meta = r.metadata
    samples, size = sum(i["samples"] for i in infos), sum(i["file_bytes"] for i in infos)
    if args.json:
        print(json.dumps({"directory": str(args.file), "samples": samples, "file_bytes": size, "parts": infos},
                         indent=2))
        return 0
    _say(f"{args.file}: dataset directory, {len(infos):,} part file(s), {samples:,} samples, {size:,} bytes")
    for i in infos:
        print(f"  {Path(i['path']).name}: {i['samples']:,} samples, {i['file_bytes']:,} bytes")
    print(f"the first part ({Path(infos[0]['path']).name}):")
    _print_info(infos[0], meta)
    return 0


def _info(r: DcqReader) -> dict[str, Any]:
    """What ``dcq info --json`` says of one file: the reader's info and its metadata as stored."""
    return {**r.info(), "meta": r.meta}


def _print_info(info: dict[str, Any], meta: Any) -> None:
    _say(f"{info['path']}: dcq {info['version']}, {info['samples']:,} samples, {info['bits']}-bit, "
         f"{info['channels']} channel(s), {info['palettes']:,} palette(s), codec {info['codec']}")
    if info["palette_correction_step"]:
        print(f"palette corrections: each sample's palette corrected in steps of {info['palette_correction_step']}")
    if info["patch_size"]:
        print(f"patches {info['patch_size'][0]}x{info['patch_size'][1]}, "
              f"{info['masked_samples']:,} samples with dropped patches")
    _say(f"size {info['file_bytes']:,} bytes, {info['bits_per_pixel']:.3f} bits/pixel, "
         f"{info['compression_ratio']:.1f}x smaller than raw uint8 ({info['raw_uint8_bytes']:,} bytes)")
    print(f"{'section':8}{'offset':>14}{'length':>14}  crc32")
    for s in info["sections"]:
        print(f"{s['tag']:8}{s['offset']:>14,}{s['length']:>14,}  {s['crc32']}")
    if meta.name is not None:
        _say(f"name: {meta.name}")
    if "color_space" in meta.raw:
        print(f"color_space: {meta.color_space}")
    if meta.classes is not None:
        more = " ..." if len(meta.classes) > 20 else ""
        _say(f"classes ({len(meta.classes)}): {', '.join(meta.classes[:20])}{more}")
    if meta.drop is not None:
        d = meta.drop
        print(f"dropped patches: {d.fraction} of each image's {d.patch} px patches ({d.importance})")
    if meta.mae is not None:
        wght = next((s["length"] for s in info["sections"] if s["tag"] == "WGHT"), 0)
        size = f"size {meta.mae['size']}, " if isinstance(meta.mae.get("size"), str) else ""
        kind = f" ({meta.mae['weights']})" if isinstance(meta.mae.get("weights"), str) else ""
        _say(f"MAE (refills dropped patches in the loaders): {size}{json.dumps(meta.mae.get('config'))}, "
             f"{wght:,} bytes of weights{kind}")
    if meta.selection is not None:
        sel = meta.selection
        counts = "" if sel.kept is None or sel.samples_in is None else f" ({sel.kept:,} of {sel.samples_in:,})"
        _say(f"selection: {sel.method}, keep {sel.keep}{counts}; per class: {json.dumps(sel.per_class)}")
    if meta.quantizer is not None:
        _say(f"quantizer: {json.dumps(_brief(meta.quantizer))}  (all of it: --json)")


def _say(line: str) -> None:
    """Print a long line wrapped to the terminal's width, continuation lines indented."""
    print(textwrap.fill(line, width=max(60, shutil.get_terminal_size().columns), subsequent_indent="    ",
                        break_on_hyphens=False))


def _brief(obj: Any, longest: int = 12) -> Any:
    """``obj`` with every list of more than ``longest`` numbers replaced by a one-line summary."""
    if isinstance(obj, dict):
        return {k: _brief(v, longest) for k, v in obj.items()}
    if isinstance(obj, list) and len(obj) > longest and all(isinstance(v, (int, float)) for v in obj):
        return f"{len(obj)} values, {min(obj):g} .. {max(obj):g}, median {float(np.median(obj)):g}"
    if isinstance(obj, list):
        return [_brief(v, longest) for v in obj]
    return obj


def cmd_verify(args: argparse.Namespace) -> int:
    bad = 0
    for source in args.files:
        try:  # a dataset directory: its manifest checked, then each part
            paths = resolve(source) if Path(source).is_dir() else [source]
        except DcqError as exc:
            print(f"{source}: FAILED: {exc}")
            bad += 1
            continue
        for path in paths:
            try:
                with open_dcq(path) as r:
                    r.verify()
                    print(f"{path}: ok ({len(r):,} samples, all checksums match)")
            except DcqError as exc:
                print(f"{path}: FAILED: {exc}")
                bad += 1
    return 1 if bad else 0


def cmd_export(args: argparse.Namespace) -> int:
    from PIL import Image

    r = open_set(args.file)  # a file, or a dataset directory's parts as one
    try:
        n = len(r) if args.limit is None else min(args.limit, len(r))
        classes = r.classes or []
        out = Path(args.out)
        decode = refilling_decoder(r, args.reconstruct, args.dequantize)
        if out.suffix == ".npz":
            shapes = r.shapes[:n]
            if n and (shapes != shapes[0]).any():
                raise DcqError("samples differ in size: export to a folder of PNGs instead of .npz")
            x = np.stack([img for s in range(0, n, 1024) for img in decode(np.arange(s, min(s + 1024, n)))]) \
                if n else r.decode_batch(np.arange(0))
            out.parent.mkdir(parents=True, exist_ok=True)
            arrays: dict[str, Any] = {"x": x, "y": r.labels[:n], "source_index": r.source_indices[:n]}
            if classes:
                arrays["classes"] = np.array(classes)
            with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".npz", delete=False) as tmp:
                np.savez(tmp, **arrays)
            publish(tmp.name, out)
            print(f"wrote {n:,} samples to {out}")
            return 0
        names = _source_names(args.names_from, {int(s) for s in r.source_indices[:n]}) if args.names_from else {}
        escaped: dict[str, str] = {}
        folders = [_folder_name(classes, label, escaped) for label in range(-1, len(classes))]
        for start in range(0, n, 256):  # decoded in batches
            idx = np.arange(start, min(start + 256, n))
            for i, img in zip(idx.tolist(), decode(idx)):
                label = int(r.labels[i])
                name = folders[label + 1] if -1 <= label < len(classes) else _folder_name(classes, label, escaped)
                folder = out / name
                folder.mkdir(parents=True, exist_ok=True)
                src = int(r.source_indices[i])
                stem = path_component(names[src], escaped) if src in names else f"{src:08d}"
                Image.fromarray(img[..., 0] if img.shape[2] == 1 else img).save(folder / f"{stem}.png")
        print(f"wrote {n:,} PNGs under {out}/")
        if escaped:
            shown = ", ".join(f"{k!r} -> {v!r}" for k, v in list(escaped.items())[:5])
            print(f"{len(escaped)} name(s) from the file were not safe as file names and were escaped "
                  f"(%XX as in URLs; names over {MAX_COMPONENT} bytes shortened with a digest): {shown}")
    finally:
        r.close()
    return 0


MAX_COMPONENT = 200  # bytes of UTF-8: file systems take 255


def path_component(name: str, escaped: dict[str, str] | None = None) -> str:
    """``name`` as one safe file or folder name, never a path: ``/``, ``\\``, ``%``, control
    characters and NUL are %-escaped as in URLs (``urllib.parse.unquote`` gives the name back),
    and so is a leading ``.`` (``.``, ``..``, hidden files); an empty name is ``%empty`` (which no
    escaped name can be); a name over :data:`MAX_COMPONENT` bytes keeps its start and a digest (the
    one change that cannot be undone). What was changed is recorded in ``escaped``."""
    out = "".join(f"%{ord(c):02X}" if c in "/\\%" or ord(c) < 32 or ord(c) == 127 else c for c in name)
    if out.startswith("."):
        out = "%2E" + out[1:]
    out = out or "%empty"
    raw = out.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_COMPONENT:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        out = raw[: MAX_COMPONENT - 13].decode("utf-8", "ignore") + "~" + digest
    if out != name and escaped is not None:
        escaped[name] = out
    return out


def _folder_name(classes: list[str], label: int, escaped: dict[str, str]) -> str:
    """The export folder of ``label``: its class name (made safe), else the number."""
    if classes and 0 <= label < len(classes):
        return path_component(classes[label], escaped)
    return str(label) if label >= 0 else "unlabelled"


def _source_names(source: str, wanted: set[int]) -> dict[int, str]:
    """File stems (or shard keys) of the source samples ``wanted``, by source index, read from the
    source's listing without decoding its images."""
    from ..pipeline.sources import open_source

    names: dict[int, str] = {}
    for index, _, _, name in open_source(source):
        if index in wanted:
            names[index] = Path(name.rsplit(":", 1)[-1]).stem  # a file's stem, or a shard's key
            if len(names) == len(wanted):
                break
    return names


def cmd_to_wds(args: argparse.Namespace) -> int:
    try:
        from ..loaders.wds import write_shards
    except ImportError as exc:
        raise DcqError(f"to-wds needs the loaders' dependencies (torch, webdataset): {exc}") from None
    if Path(args.file).is_dir():  # each part has its own codec model: one sidecar cannot serve them all
        raise DcqError(f"{args.file} is a dataset directory: convert its part files one at a time "
                       f"(dcq to-wds {args.file}/part-00000.dcq ...), or convert to one file")
    side, shards = write_shards(args.file, args.pattern, maxcount=args.maxcount, sidecar=args.sidecar,
                                shards=args.shards, shuffle=not args.no_shuffle, seed=args.seed, block=args.block,
                                keep_codec=not args.packed)
    print(f"wrote {len(shards)} shard(s) ({shards[0] if shards else '-'} ...) and the sidecar {side}")
    return 0


# dcq convert's options that are named otherwise in ConvertConfig
CONFIG_NAMES = {"epochs": "model_epochs"}


def _convert_config(args: argparse.Namespace) -> ConvertConfig:
    """The ConvertConfig of ``dcq convert``'s options, checked (before torch is imported)."""
    names = {f.name for f in fields(ConvertConfig)}
    values = {CONFIG_NAMES.get(k, k): v for k, v in vars(args).items() if CONFIG_NAMES.get(k, k) in names}
    cfg = ConvertConfig(**values)
    cfg.check()
    return cfg


def cmd_convert(args: argparse.Namespace) -> int:
    cfg = _convert_config(args)
    if Path(args.dst).is_dir() and not args.samples_per_file:
        raise DcqError(f"{args.dst}: the destination is a directory")
    if Path(args.dst).exists() and (args.samples_per_file or not args.overwrite):
        raise DcqError(f"{args.dst} exists; " + ("remove it first" if args.samples_per_file
                                                  else "--overwrite replaces it"))
    from ..conversion import convert
    from ..pipeline.distributed import join, leave

    try:
        summary = convert(args.src, args.dst, cfg, progress=not args.quiet, samples_per_file=args.samples_per_file)
        leader = join(cfg.device).leader  # under torchrun, rank 0 reports
    except BaseException:
        leave(barrier=False)
        raise
    leave()
    if not leader:
        return 0
    print(f"wrote {args.dst}")
    print(summary.table(cfg))
    if summary.problems:
        print(f"{len(summary.problems)} unreadable sample(s) skipped, e.g.:")
        for index, why in summary.problems[:5]:
            print(f"  sample {index}: {why}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from .preview import preview

    path = preview(args.file, args.out, source=args.source, count=args.count)
    print(f"wrote {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    run(Path(args.out), limit=args.limit, bits=args.bits, dataset=args.dataset, epochs=args.epochs,
        progress=not args.quiet)
    return 0
