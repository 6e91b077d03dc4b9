"""Fuzz kinds for the surfaces beside the single-file reader (issue 25): dataset-directory
manifests, WebDataset shards, members and sidecars (through ``dcq_pipeline`` with both error
policies, counting samples lost without a warning), tampered resume work directories, and
``dcq export`` of files whose class names are hostile.

Each kind makes a trial: a function of a fresh directory that raises a ``DcqError`` (refused),
returns (read right), or raises :class:`Lost` / :class:`Outside` / ``WrongValues``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import tarfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import make_spec, write_spec

Trial = Callable[[Path], None]


class WrongValues(AssertionError):
    """A read gave other values than the file holds, without an error."""


class Lost(AssertionError):
    """Samples went missing without an error or a warning."""


class Outside(AssertionError):
    """A file was written outside its target."""


def mutate_bytes(blob: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """1-3 flipped bytes, a truncation, or 8 bytes overwritten at random."""
    b = bytearray(blob)
    how = int(rng.integers(0, 3))
    if how == 0:
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(0, len(b)))] ^= int(rng.integers(1, 256))
        return "flip", bytes(b)
    if how == 1:
        return "truncate", bytes(b[: int(rng.integers(0, len(b)))])
    at = int(rng.integers(0, max(1, len(b) - 8)))
    b[at : at + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    return "overwrite", bytes(b)


def _digest(images: Any) -> list[bytes]:
    return sorted(np.ascontiguousarray(im).tobytes() for im in images)


# -- dataset directories ------------------------------------------------------------------------
class SetOriginal:
    """A dataset directory of three parts, its manifest and its images, made once."""

    def __init__(self, directory: Path) -> None:
        from dcqformat.format.multifile import DcqSetWriter

        rng = np.random.default_rng(11)
        pals = rng.integers(0, 256, (2, 4, 3), dtype=np.uint8)
        self.root = directory / "set-original"
        with DcqSetWriter(self.root, 5, bits=2, palettes=pals) as w:
            for i in range(15):
                w.add(rng.integers(0, 4, (4, 5), dtype=np.uint8), palette=i % 2, label=i % 3)
        self.files = {p.name: p.read_bytes() for p in self.root.iterdir()}
        self.manifest = json.loads(self.files["manifest.json"])
        self.images = set_images(self.root)


def set_images(root: Path) -> list[np.ndarray]:
    """Every sample of a dataset directory, decoded."""
    from dcqformat.format.multifile import open_set

    s = open_set(root)
    try:
        return list(s.decode_batch(np.arange(len(s))))
    finally:
        s.close()


def _manifest_edit(m: dict[str, Any], rng: np.random.Generator) -> tuple[str, Any]:
    m = copy.deepcopy(m)
    files = m["files"]
    k = int(rng.integers(0, len(files)))
    edits: list[tuple[str, Callable[[], Any]]] = [
        ("duplicate entry", lambda: files.append(copy.deepcopy(files[k]))),
        ("drop entry", lambda: files.pop(k)),
        ("swap entries", lambda: files.reverse()),
        ("samples", lambda: files[k].__setitem__("samples", int(rng.integers(-2, 12)))),
        ("bytes", lambda: files[k].__setitem__("bytes", int(rng.integers(0, 4000)))),
        ("total", lambda: m.__setitem__("samples", [0, -5, "15", 1.5, 10**30, None][int(rng.integers(0, 6))])),
        ("path", lambda: files[k].__setitem__("path", ["..", ".", "", "a\x00b", "x" * 5000, "../set-original/"
                                                       + files[k]["path"], "/etc/passwd", "loop.dcq",
                                                       "fifo.dcq"][int(rng.integers(0, 9))])),
        ("not an object", lambda: None),
        ("20,000 entries", lambda: m.__setitem__("files", [files[0]] * 20000)),
    ]
    name, edit = edits[int(rng.integers(0, len(edits)))]
    if name == "not an object":
        return name, [[], 5, "x", None, "[" * 100000][int(rng.integers(0, 5))]
    edit()
    return name, m


def k_manifest(original: SetOriginal, rng: np.random.Generator) -> tuple[str, Trial]:
    """A mutated or edited manifest (symlinks and a FIFO beside it as bait): the directory is
    refused, or reads exactly the original samples."""
    structured = bool(rng.integers(0, 2))
    if structured:
        how, manifest = _manifest_edit(original.manifest, rng)
        text = json.dumps(manifest).encode()
    else:
        how, text = mutate_bytes(original.files["manifest.json"], rng)

    def trial(d: Path) -> None:
        import os

        root = d / "set"
        root.mkdir()
        for name, blob in original.files.items():
            (root / name).write_bytes(text if name == "manifest.json" else blob)
        (d / "beside.dcq").write_bytes(original.files[original.manifest["files"][0]["path"]])
        os.symlink(root / "loop.dcq", root / "loop.dcq")
        os.mkfifo(root / "fifo.dcq")
        images = set_images(root)
        if len(images) != len(original.images) or _digest(images) != _digest(original.images):
            raise Lost(f"read {len(images)} samples of other content, not the {len(original.images)} written")

    return f"manifest: {'edit ' + how if structured else how}", trial


# -- WebDataset shards --------------------------------------------------------------------------
class ShardOriginal:
    """Shards of both member forms and their sidecars, and blocks of a ctxs and a ctxg file whose unmasked
    samples keep their coded payloads (CODED members), with every sample's image and label."""

    def __init__(self, directory: Path) -> None:
        from dcqformat.loaders.wds import write_shards

        rng = np.random.default_rng(12)
        spec = make_spec(rng, bits=2, channels=3, n=24, sizes=[(6, 6)], n_palettes=3, masked=0.3, patch=(3, 3))
        src = write_spec(spec, directory / "shard-src.dcq")
        self.forms: dict[str, tuple[dict[str, bytes], bytes]] = {}
        coded = write_spec(dataclasses.replace(spec, codec="ctxs"), directory / "shard-src-ctxs.dcq")
        grouped = write_spec(dataclasses.replace(spec, codec="ctxg"), directory / "shard-src-ctxg.dcq")
        for form, block, source in (("dcqb", 4, src), ("dcqi", 0, src), ("coded", 4, coded),
                                    ("coded-ctxg", 4, grouped)):
            out = directory / f"shards-{form}"
            side, names = write_shards(source, str(out / "s-%06d.tar"), maxcount=8, shuffle=False, block=block)
            self.forms[form] = ({Path(n).name: Path(n).read_bytes() for n in names}, side.read_bytes())
        # what the pipeline gives for each sample: (image bytes, label), refilled with "mean"
        self.expected = self._read(directory / "shards-dcqb", directory / "shards-dcqb" / "s.dcq", None)[0]
        # every form reads the same samples; reading them here also compiles, outside the trials'
        # time and memory bounds, the kernels each form needs (a CODED member's codec decode)
        for form in self.forms:
            got = self._read(directory / f"shards-{form}", directory / f"shards-{form}" / "s.dcq", None)[0]
            assert sorted(got) == sorted(self.expected), f"the {form} shards read other samples than written"

    @staticmethod
    def _read(folder: Path, side: Path, handler: Any) -> tuple[list[tuple[bytes, int]], list[str]]:
        import webdataset as wds

        from dcqformat.loaders.wds import dcq_pipeline

        urls = [str(p) for p in sorted(folder.glob("s-*.tar"))]
        got: list[tuple[bytes, int]] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe = dcq_pipeline(urls, side, batch_size=8, shuffle=0, reconstruct="mean",
                                handler=handler or wds.reraise_exception)
            for images, labels in pipe:
                got += [(im.numpy().tobytes(), int(y)) for im, y in zip(images, labels)]
        # what the error policy said (webdataset's warn_and_continue: a UserWarning), not the
        # ResourceWarnings of the shard streams webdataset leaves to the garbage collector
        return got, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def k_shards(original: ShardOriginal, rng: np.random.Generator) -> tuple[str, Trial]:
    """A shard or the sidecar mutated, read through dcq_pipeline under one of the two error
    policies: refused or warned (DcqError), or every sample read right; fewer samples without a
    word is a loss. Labels of .dcqi + .cls shards carry no checksum (WebDataset's .cls), so a
    changed digit there is not counted as a wrong value."""
    import webdataset as wds

    form = list(original.forms)[int(rng.integers(0, len(original.forms)))]
    shards, sidecar = original.forms[form]
    target = _pick_target(shards, rng)
    warn = bool(rng.integers(0, 2))
    how, blob = mutate_bytes(shards[target] if target else sidecar, rng)

    def trial(d: Path) -> None:
        from dcqformat import DcqError

        for name, data in shards.items():
            (d / name).write_bytes(blob if name == target else data)
        (d / "s.dcq").write_bytes(sidecar if target else blob)
        got, said = ShardOriginal._read(d, d / "s.dcq", wds.warn_and_continue if warn else None)
        expected = original.expected
        images = dict(expected)  # image bytes -> label
        wrong = [im for im, _ in got if im not in images]
        if wrong or (form != "dcqi" and any(images[im] != y for im, y in got)):
            raise WrongValues(f"{len(wrong)} samples that were never written")
        if len(got) < len(expected) and not said:
            raise Lost(f"{len(expected) - len(got)} of {len(expected)} samples lost without an error or a warning")
        if said:
            raise DcqError(f"reported: {said[0][:80]}")

    return f"shards: {form} {'shard' if target else 'sidecar'} {how}, {'warn' if warn else 'raise'}", trial


def _pick_target(shards: dict[str, bytes], rng: np.random.Generator) -> str:
    """A shard's name, or "" (the sidecar) one time in six."""
    names = sorted(shards)
    return "" if rng.integers(0, 6) == 0 else names[int(rng.integers(0, len(names)))]


def k_members(original: ShardOriginal, rng: np.random.Generator) -> tuple[str, Trial]:
    """A .dcqb or .dcqi member mutated (its CRC recomputed half the time): parsed to the same
    samples, or refused."""
    from dcqformat.format.dcqi import parse_block, parse_dcqi

    shards, _ = original.forms["dcqb"]
    with tarfile.open(fileobj=io.BytesIO(shards[sorted(shards)[0]])) as tar:
        member = tar.extractfile(tar.getmembers()[0]).read()  # type: ignore[union-attr]
    single = bool(rng.integers(0, 2))
    if single:
        member = member[16 + 8 : 16 + 8 + int.from_bytes(member[16:20], "little")]
    how, blob = mutate_bytes(member, rng)
    refresh = bool(rng.integers(0, 2))
    if refresh and len(blob) >= 32:
        crc_at, body = (28, 32) if single else (12, 16)
        b = bytearray(blob)
        b[crc_at : crc_at + 4] = zlib.crc32(bytes(b[:crc_at]) + bytes(b[body:])).to_bytes(4, "little")
        blob = bytes(b)

    def trial(d: Path) -> None:
        parse = parse_dcqi if single else parse_block
        parse(blob)  # a valid member (or refused): both fine, as long as nothing else happens

    return f"members: .{'dcqi' if single else 'dcqb'} {how}{' + CRC' if refresh else ''}", trial


# -- resume work directories --------------------------------------------------------------------
def k_work_dir(rng: np.random.Generator) -> tuple[str, Trial]:
    """A work directory whose kept stage files were changed: a rerun uses a stage only if it
    loads exactly what was saved."""
    saved = {"clusters": {"cluster": rng.integers(0, 5, 40).astype(np.int64)},
             "palettes": {"palettes_lab": rng.normal(size=(5, 4, 3)).astype(np.float32)}}
    victim = ["clusters.npz", "clusters.json", "palettes.npz", "palettes.json", "state.json",
              "model.safetensors"][int(rng.integers(0, 6))]
    mode = int(rng.integers(0, 4))

    def trial(d: Path) -> None:
        from dcqformat.pipeline.checkpoint import Checkpoints

        work = d / "work"
        ck = Checkpoints(work, "key", True, False)
        for stage, arrays in saved.items():
            extra = (lambda path: path("model.safetensors").write_bytes(b"weights")) if stage == "clusters" else None
            ck.save(stage, arrays, {"rng": {"state": 1}}, extra)
        path = work / victim
        blob = path.read_bytes()
        if mode == 0:
            path.write_bytes(mutate_bytes(blob, rng)[1])
        elif mode == 1:
            path.write_bytes(blob[: len(blob) // 2])
        elif mode == 2 and victim.endswith(".npz"):
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            arrays = {k: (np.full_like(v, np.nan) if v.dtype.kind == "f" else v + 1) for k, v in arrays.items()}
            np.savez(path, **arrays)
        else:
            path.unlink()
        again = Checkpoints(work, "key", True, False)
        for stage in again.done:
            arrays, _ = again.load(stage)
            if set(arrays) != set(saved[stage]) or not all(np.array_equal(arrays[k], saved[stage][k])
                                                          for k in arrays):
                raise WrongValues(f"stage {stage} kept with other arrays than saved")

    return f"work dir: {victim}, {['mutate', 'truncate', 'other values', 'delete'][mode]}", trial


# -- dcq export ---------------------------------------------------------------------------------
HOSTILE = ["..", ".", "", "/", "\\", "\x00", "a", "é", "%", "../", "x" * 300, "/etc", "~", "*", "\n", ":", " "]


def k_export(rng: np.random.Generator) -> tuple[str, Trial]:
    """Class names built from hostile pieces: export writes every PNG inside its folder."""
    classes = ["".join(HOSTILE[int(rng.integers(0, len(HOSTILE)))] for _ in range(int(rng.integers(1, 4))))
               for _ in range(int(rng.integers(1, 5)))]

    def trial(d: Path) -> None:
        import contextlib

        from dcqformat import DcqWriter
        from dcqformat.cli.commands import cmd_export

        work = d / "a" / "b"
        work.mkdir(parents=True)
        with DcqWriter(work / "h.dcq", bits=1, palettes=np.zeros((1, 2, 3), np.uint8),
                       meta={"classes": classes}) as w:
            for label in range(len(classes)):
                w.add(np.zeros((2, 2), np.uint8), palette=0, label=label)
        before = set(d.rglob("*"))
        args = argparse.Namespace(file=str(work / "h.dcq"), out=str(work / "out"), limit=None, names_from=None,
                                  reconstruct="auto", dequantize="lookup")
        with contextlib.redirect_stdout(io.StringIO()):
            cmd_export(args)
        made = set(d.rglob("*")) - before
        outside = [p for p in made if not p.is_relative_to(work / "out")]
        if outside:
            raise Outside(f"{outside[0]}")
        if len([p for p in made if p.suffix == ".png"]) != len(classes):
            raise Lost("not every sample was exported")

    return "export: hostile class names", trial
