"""Fuzzing of the reader with crafted hostile files and random mutations of valid ones.

Every trial must end in one of two ways: a :class:`dcqformat.DcqError`, or a read that gives
exactly what the file holds. Anything else is counted against the reader: another exception,
a hang (more than ``--timeout`` seconds), an allocation above ``--max-mib`` (tracemalloc peak,
which sees NumPy's and Python's buffers), or wrong pixels / values. A crash ends the process,
so a run that finishes has none.

    python tests/fuzz.py --trials 10000 --out benchmarks/results/fuzz.json

test_fuzz.py runs a few hundred trials of every kind in ``make test``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its helpers beside it

import crafted  # noqa: E402
import fuzz_surfaces as surfaces  # noqa: E402
from common import make_spec, write_spec  # noqa: E402
from fuzz_surfaces import Lost, Outside, WrongValues  # noqa: E402

import dcqformat  # noqa: E402
from dcqformat import DcqError, DcqWriter  # noqa: E402

ERROR = "error"  # the trial must raise a DcqError
Check = Callable[[Path], None]  # reads the file and asserts what it must hold
OUTCOMES = ("DcqError", "read right", "other exception", "hang", "over-allocation", "wrong values",
            "lost in silence", "written outside")


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise WrongValues(what)


def _read_all(path: Path) -> list[np.ndarray]:
    with dcqformat.open(path) as r:
        images = [r[i] for i in range(len(r))]
        if len(r) and len({im.shape for im in images}) == 1:
            batch = r.decode_batch(np.arange(len(r)))
            _expect(all(np.array_equal(a, b) for a, b in zip(batch, images)), "batch differs from samples")
        r.verify()
        r.labels, r.source_indices, r.metadata, r.weights()  # noqa: B018
        return images


def _pick(rng: np.random.Generator, values: list[Any]) -> Any:
    """One of ``values`` (Python ints of any size stay exact, unlike rng.choice)."""
    return values[int(rng.integers(0, len(values)))]


# -- crafted kinds: each yields (blob, check or ERROR) -------------------------------------------
def k_zstd_declared(rng: np.random.Generator) -> tuple[bytes, Any]:
    declared = _pick(rng, [4, 3, 5, 0, 2**20, 2**40, 2**64 - 1, int(rng.integers(0, 2**62))])
    blob = crafted.zstd_file([crafted.frame(crafted.GOOD)] + [crafted.declared_size_frame(declared)])
    return blob, ERROR if declared != 4 else _zstd_ok


def _zstd_ok(path: Path) -> None:
    images = _read_all(path)
    with dcqformat.open(path) as r:
        _expect(all(np.array_equal(r.indices(i).reshape(-1)[[0, 4, 8, 12]], [0, 1, 2, 3]) for i in range(len(r)))
                if r.bits == 2 else True, "zstd indices")
    _expect(len(images) == 2, "sample count")


def k_zstd_bomb(rng: np.random.Generator) -> tuple[bytes, Any]:
    size = int(rng.integers(1 << 20, 32 << 20))
    return crafted.zstd_file([crafted.bomb_frame(size, bool(rng.integers(0, 2)))]), ERROR


def k_zstd_frames(rng: np.random.Generator) -> tuple[bytes, Any]:
    good = crafted.frame(crafted.GOOD)
    bad = [b"", good + bytes(int(rng.integers(1, 9))), good + good, good[: int(rng.integers(0, len(good)))],
           b"\x50\x2a\x4d\x18" + bytes(8), rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8).tobytes()]
    return crafted.zstd_file([good, bad[int(rng.integers(0, len(bad)))]]), ERROR


def k_mask_padding(rng: np.random.Generator) -> tuple[bytes, Any]:
    byte = int(rng.integers(0, 256))
    if byte >> 6:
        return crafted.masked_file(byte), ERROR

    def check(path: Path) -> None:
        (img,) = _read_all(path)
        dropped = np.repeat(np.repeat(np.array([(byte >> g) & 1 for g in range(6)], bool).reshape(2, 3), 2, 0), 2, 1)
        want = np.where(dropped[..., None], 0, np.array([0, 1, 2], np.uint8))
        _expect(np.array_equal(img, want), "masked pixels")
    return crafted.masked_file(byte), check


def k_huge_count(rng: np.random.Generator) -> tuple[bytes, Any]:
    count = _pick(rng, [int(rng.integers(1, 65)), int(rng.integers(65, 2**40)), 2**63 - 1, 2**64 - 1])
    if count > 64:
        return crafted.huge_count_file(count), ERROR

    def check(path: Path) -> None:
        images = _read_all(path)
        _expect(len(images) == count and all((im == [0, 1, 2]).all() for im in images), "affine samples")
    return crafted.huge_count_file(count), check


_ST_DTYPES = ["F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16", "I8", "U64", "U32", "U16",
              "U8", "BOOL"]


def k_weights_dtype(rng: np.random.Generator) -> tuple[bytes, Any]:
    import torch
    from safetensors.torch import save

    dtypes = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
              "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U64": torch.uint64, "U32": torch.uint32,
              "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool}
    tensors = {}
    for k in range(int(rng.integers(1, 4))):
        name = str(rng.choice(_ST_DTYPES))
        shape = tuple(int(s) for s in rng.integers(0, 4, int(rng.integers(0, 3))))
        raw = torch.from_numpy(rng.integers(0, 256, int(np.prod(shape)) * dtypes[name].itemsize, dtype=np.uint8))
        if not raw.numel():
            tensors[f"t{k}"] = torch.empty(shape, dtype=dtypes[name])
        else:
            tensors[f"t{k}"] = raw.view(dtypes[name]).reshape(shape) if name != "BOOL" else (raw > 127).reshape(shape)

    def check(path: Path) -> None:
        _read_all(path)
        with dcqformat.open(path) as r:
            got = r.weights()
        for name, t in tensors.items():
            numpy_kind = t.dtype in (torch.float64, torch.float32, torch.float16) or not t.dtype.is_floating_point
            want = t.numpy() if numpy_kind else t.float().numpy()  # BF16 and F8 are read as float32
            _expect(got[name].dtype == want.dtype and np.array_equal(got[name], want, equal_nan=want.dtype.kind == "f"),
                    f"tensor {name}")
    return crafted.plain_file(weights=save(tensors)), check


def k_weights_header(rng: np.random.Generator) -> tuple[bytes, Any]:
    bad_values = [1, None, [1], {"a": 1}, "x", True, -1, 1.5, "0", [0, "4"], [0], [4, 0], [-4, 0]]
    entry: dict[str, Any] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    field = str(rng.choice(["dtype", "shape", "data_offsets", "__metadata__", "entry"]))
    value = _pick(rng, [v for v in bad_values if not (field == "shape" and v == [1])])  # [1] is the right shape
    header: dict[str, Any] = {"t": entry}
    if field == "__metadata__":
        header["__metadata__"] = value if not isinstance(value, str) else {"k": 3}
    elif field == "entry":
        header["t"] = value
    else:
        entry[field] = value if not (field == "dtype" and value == "x") else "C128"
    return crafted.plain_file(weights=crafted.safetensors(header, bytes(4))), ERROR


GOOD_MAE = {"patch": 2, "channels": 3, "dim": 8, "depth": 1, "heads": 2, "decoder_dim": 8, "decoder_depth": 1,
            "mlp_ratio": 2.0}


def k_mae_config(rng: np.random.Generator) -> tuple[bytes, Any]:
    values = [0, -1, 3, 7, 8192, 2**31, math.nan, math.inf, "2", True, None, 1.5, 24]
    config = dict(GOOD_MAE)
    for key in rng.choice(list(GOOD_MAE), int(rng.integers(1, 4)), replace=False):
        config[str(key)] = values[int(rng.integers(0, len(values)))]
    blob = crafted.mae_weights(config)  # one tiny tensor: never the model's shapes

    def check(path: Path) -> None:
        from dcqformat.mae import mae_from_bytes

        with dcqformat.open(path) as r:
            mae_from_bytes(r.weights_blob())  # type: ignore[arg-type]
        raise WrongValues("an MAE was built from weights that do not match it")
    return crafted.plain_file(weights=blob), check


GOOD_DEQUANTIZER = {"channels": 3, "width": 4, "depth": 2}


def k_dequantizer_config(rng: np.random.Generator) -> tuple[bytes, Any]:
    """The DEQW section's config (spec §9.3): hostile values, a tensor that never matches."""
    values = [0, -1, 2, 3, 257, 2**31, math.nan, math.inf, "2", True, None, 1.5, 17, [1], {}]
    config: dict[str, Any] = dict(GOOD_DEQUANTIZER)
    for key in rng.choice([*GOOD_DEQUANTIZER, "extra"], int(rng.integers(1, 3)), replace=False):
        config[str(key)] = values[int(rng.integers(0, len(values)))]
    blob = crafted.mae_weights(config, key="dcq-dequant", fmt="dcq-dequant/1")

    def check(path: Path) -> None:
        from dcqformat.dequant import dequantizer_from_bytes

        with dcqformat.open(path) as r:
            dequantizer_from_bytes(r.weights_blob("DEQW"))  # type: ignore[arg-type]
        raise WrongValues("a dequantizer was built from weights that do not match it")
    return crafted.plain_file(dequantizer=blob), check


_META_VALUES: list[Any] = [None, 1, -2.5, "x", [], ["a", "b"], [["a"]], {}, {"method": "dq", "keep": 0.5},
                           {"fraction": 0.25, "patch": 4}, {"fraction": 7}, {"config": 3}, {"config": {}}, True,
                           {"method": 1, "keep": "x"}, {"method": "dq", "keep": 0.1, "per_class": [1, -1]}]


def k_meta_types(rng: np.random.Generator) -> tuple[bytes, Any]:
    meta = {str(k): _META_VALUES[int(rng.integers(0, len(_META_VALUES)))]
            for k in rng.choice(["name", "classes", "color_space", "quantizer", "provenance", "drop", "selection",
                                 "mae", "dequantizer", "future"], int(rng.integers(1, 4)), replace=False)}
    meta = {k: v for k, v in meta.items() if v is not None}

    def check(path: Path) -> None:
        from dcqformat.cli import main

        _read_all(path)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            _expect(main(["info", str(path)]) == 0, "dcq info failed on a file that opens")
        _expect("selection" not in meta or "selection:" in out.getvalue(), "info lost the selection")
    return crafted.plain_file(meta), check


def k_source_index(rng: np.random.Generator) -> tuple[bytes, Any]:
    value = _pick(rng, [int(rng.integers(0, 2**62)), 2**63 - 1, 2**63, 2**64 - 1])

    def check(path: Path) -> None:
        _read_all(path)
        with dcqformat.open(path) as r:
            _expect(r.source_indices.tolist() == [value, 1], "source_index")
    return crafted.plain_file(source_index=value), check


CRAFTED: dict[str, Callable[[np.random.Generator], tuple[bytes, Any]]] = {
    "zstd declared size": k_zstd_declared, "zstd bomb": k_zstd_bomb, "zstd not one frame": k_zstd_frames,
    "mask padding": k_mask_padding, "huge sample count": k_huge_count, "weights dtypes": k_weights_dtype,
    "weights header": k_weights_header, "MAE config": k_mae_config,
    "dequantizer config": k_dequantizer_config, "metadata types": k_meta_types,
    "source_index u64": k_source_index,
}


# -- random mutations of valid files ----------------------------------------------------------
def originals(directory: Path) -> dict[str, tuple[bytes, list[np.ndarray]]]:
    rng = np.random.default_rng(7)
    files = {"packed": write_spec(make_spec(rng, bits=2, channels=3, n=12, sizes=[(8, 8)]), directory / "a.dcq",
                                  block_size=4096),
             "zstd": write_spec(make_spec(rng, bits=3, channels=3, n=20, sizes=[(6, 6), (5, 7)], codec="zstd"),
                                directory / "b.dcq"),
             "masked gray": write_spec(make_spec(rng, bits=4, channels=1, n=10, sizes=[(5, 6), (4, 4)], masked=0.6,
                                                 patch=(2, 3)), directory / "c.dcq"),
             "ctx masked": write_spec(make_spec(rng, bits=2, channels=3, n=12, sizes=[(7, 9), (8, 8)], masked=0.5,
                                                patch=(4, 4), codec="ctx"), directory / "d.dcq"),
             "ctxs stripes": write_spec(make_spec(rng, bits=2, channels=3, n=6, sizes=[(70, 5), (130, 3)],
                                                  masked=0.5, patch=(4, 4), codec="ctxs"), directory / "e.dcq"),
             "ctxg groups": write_spec(make_spec(rng, bits=2, channels=3, n=6, sizes=[(70, 6), (130, 8)],
                                                 masked=0.5, patch=(4, 4), codec="ctxg"), directory / "f.dcq"),
             "palette corrections": _corrected(rng, directory / "g.dcq")}
    return {name: (p.read_bytes(), _read_all(p)) for name, p in files.items()}


def _corrected(rng: np.random.Generator, path: Path) -> Path:
    """A file with palette corrections (PCOR, spec §3.1) of every sample."""
    pal = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    with DcqWriter(path, bits=2, palettes=pal, correction_step=int(rng.integers(1, 40)), codec="ctxg") as w:
        for i in range(8):
            w.add(rng.integers(0, 4, (9, 10)), palette=i % 3, label=i, correction=rng.integers(-8, 8, (4, 3)))
    return path


def mutate(blob: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """A flip, a truncation, or an overwrite with every CRC recomputed (as a hostile writer would)."""
    how, mutated = surfaces.mutate_bytes(blob, rng)
    return ("overwrite + CRCs", crafted.refresh(mutated)) if how == "overwrite" else (how, mutated)


# -- the runner ----------------------------------------------------------------------------------
class _Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hang()


def trials(n: int, seed: int, directory: Path) -> Iterator[tuple[str, Callable[[Path], None]]]:
    """``n`` trials: (kind, a function of a fresh directory that makes and reads the input).
    Half are crafted hostile files, a sixth random mutations of valid files, a third the other
    surfaces (manifests, shards, members, work directories, export)."""
    rng = np.random.default_rng(seed)
    origs = originals(directory)
    sets, shards = surfaces.SetOriginal(directory), surfaces.ShardOriginal(directory)
    others: list[Callable[[], tuple[str, Callable[[Path], None]]]] = [
        lambda: surfaces.k_manifest(sets, rng), lambda: surfaces.k_shards(shards, rng),
        lambda: surfaces.k_members(shards, rng), lambda: surfaces.k_work_dir(rng), lambda: surfaces.k_export(rng)]
    kinds = list(CRAFTED)
    for t in range(n):
        if t % 2 == 0:
            kind = kinds[(t // 2) % len(kinds)]
            yield kind, _file_trial(*CRAFTED[kind](rng))
        elif t % 6 == 1:
            name = list(origs)[(t // 6) % len(origs)]
            blob, images = origs[name]
            how, mutated = mutate(blob, rng)

            def check(path: Path, images: list[np.ndarray] = images, refreshed: bool = how.endswith("CRCs")) -> None:
                got = _read_all(path)
                # With its checksums recomputed a mutated file may be a valid file of other pixels:
                # reading it without another exception is all that can be asked.
                _expect(refreshed or (len(got) == len(images) and all(np.array_equal(a, b)
                                                                      for a, b in zip(got, images))),
                        "a mutated file decoded to other pixels without an error")
            yield f"mutation: {name}, {how}", _file_trial(mutated, check)
        else:
            yield others[(t // 2) % len(others)]()


def _file_trial(blob: bytes, expect: Any) -> Callable[[Path], None]:
    """A trial of the single-file reader: ``blob`` as a file, read and checked (or refused)."""
    def trial(d: Path) -> None:
        path = d / "trial.dcq"
        path.write_bytes(blob)
        if expect == ERROR:
            _read_all(path)
            raise WrongValues("it should have been refused")
        expect(path)
    return trial


def run(n: int, seed: int = 0, timeout: float = 10.0, max_mib: float = 64.0) -> dict[str, Counter]:
    """Run ``n`` trials; return the outcome counts of each kind."""
    import torch

    import dcqformat.cli  # noqa: F401 - imported before the trials, whose allocations are counted
    import dcqformat.loaders.wds  # noqa: F401
    from dcqformat.mae import MAE, MAEConfig

    with torch.device("meta"):  # the meta device imports its registrations on first use (~60 MiB)
        MAE(MAEConfig())

    table: dict[str, Counter] = {}
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        with tempfile.TemporaryDirectory() as d:
            for t, (kind, trial) in enumerate(trials(n, seed, Path(d))):
                place = Path(d) / f"t{t}"
                place.mkdir()
                table.setdefault(kind, Counter())[_trial(trial, place, timeout, max_mib)] += 1
                shutil.rmtree(place, ignore_errors=True)
    finally:
        signal.signal(signal.SIGALRM, old)
    return table


def _trial(trial: Callable[[Path], None], place: Path, timeout: float, max_mib: float) -> str:
    tracemalloc.start()
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        trial(place)
        outcome = "read right"
    except DcqError:
        outcome = "DcqError"
    except WrongValues:
        outcome = "wrong values"
    except Lost:
        outcome = "lost in silence"
    except Outside:
        outcome = "written outside"
    except _Hang:
        outcome = "hang"
    except Exception:  # noqa: BLE001 - anything else is what the fuzzer looks for
        outcome = "other exception"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if peak > max_mib * 2**20 and outcome in ("DcqError", "read right"):
        outcome = "over-allocation"
    return outcome


def format_table(table: dict[str, Counter]) -> str:
    head = "| kind | trials | " + " | ".join(OUTCOMES) + " |"
    rows = [head, "|---|" + "---:|" * (len(OUTCOMES) + 1)]
    total: Counter = Counter()
    for kind in sorted(table):
        c = table[kind]
        total.update(c)
        rows.append(f"| {kind} | {sum(c.values()):,} | " + " | ".join(f"{c[o]:,}" for o in OUTCOMES) + " |")
    rows.append(f"| **all** | {sum(total.values()):,} | " + " | ".join(f"{total[o]:,}" for o in OUTCOMES) + " |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before a trial counts as a hang")
    p.add_argument("--max-mib", type=float, default=64.0, help="allocation bound per trial (tracemalloc peak)")
    p.add_argument("--out", default=None, help="write the table as JSON here")
    args = p.parse_args()
    t = time.perf_counter()
    table = run(args.trials, args.seed, args.timeout, args.max_mib)
    print(format_table(table))
    bad = sum(c[o] for c in table.values() for o in OUTCOMES[2:])
    print(f"{args.trials:,} trials in {time.perf_counter() - t:.0f} s; {bad} against the reader "
          f"(bound {args.max_mib:g} MiB, timeout {args.timeout:g} s)")
    if args.out:
        Path(args.out).write_text(json.dumps({"trials": args.trials, "seed": args.seed, "max_mib": args.max_mib,
                                              "timeout": args.timeout, "table": table}, indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
