"""Corruption fuzzing: every mutated file raises a DcqError or decodes exactly the original."""

from __future__ import annotations

import signal
import struct
from collections import Counter

import numpy as np
import pytest
from common import make_spec, write_spec
from crafted import refresh as refresh_checksums

import dcqformat
from dcqformat import DcqError


def _decode_all(path):
    """Everything a user can read from a file, or the DcqError it raises."""
    with dcqformat.open(path) as r:
        images = [r[i] for i in range(len(r))]
        by_size: dict = {}
        for i, img in enumerate(images):
            by_size.setdefault(img.shape, []).append(i)
        batches = [r.decode_batch(idx, layout="NCHW") for idx in by_size.values()]
        r.verify()
        return images, batches, r.labels.tolist(), r.meta, r.weights()


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    from safetensors.numpy import save

    rng = np.random.default_rng(7)
    d = tmp_path_factory.mktemp("orig")
    files = {
        "packed-uniform": write_spec(make_spec(rng, bits=2, channels=3, n=12, sizes=[(8, 8)]), d / "a.dcq",
                                     block_size=4096),
        "zstd-dict": write_spec(make_spec(rng, bits=3, channels=3, n=40, sizes=[(6, 6), (5, 7)], codec="zstd"),
                                d / "b.dcq"),
        "masked-gray-weights": d / "c.dcq",
        "ctx-masked": d / "e.dcq",
    }
    spec = make_spec(rng, bits=4, channels=1, n=10, sizes=[(5, 6), (4, 4)], masked=0.6, patch=(2, 3))
    with dcqformat.DcqWriter(files["masked-gray-weights"], bits=4, channels=1, palettes=spec.palettes,
                             patch_size=spec.patch, meta={"classes": ["a"]}) as w:
        w.set_weights(save({"w": np.arange(4, dtype=np.float32)}))
        for s in spec.samples:
            w.add(s.indices, palette=s.palette, label=s.label, dropped=s.dropped)
    write_spec(make_spec(rng, bits=2, channels=3, n=16, sizes=[(7, 9), (8, 8)], masked=0.5, patch=(4, 4),
                         codec="ctx"), files["ctx-masked"])
    return {name: (path.read_bytes(), _decode_all(path)) for name, path in files.items()}


def _mutations(blob: bytes, rng: np.random.Generator, per_section: int, truncations: int):
    table_offset, count = struct.unpack_from("<QI", blob, 24)
    regions = [("header", 0, 64), ("table", table_offset, 32 * count)]
    for k in range(count):
        tag, _, off, length, _, _ = struct.unpack_from("<4sIQQII", blob, table_offset + 32 * k)
        if length:
            regions.append((tag.decode(), off, length))
    for name, start, length in regions:
        for _ in range(per_section):
            b = bytearray(blob)
            for _ in range(int(rng.integers(1, 4))):
                b[start + int(rng.integers(0, length))] ^= int(rng.integers(1, 256))
            yield f"flip:{name}", bytes(b)
    for cut in np.unique(rng.integers(0, len(blob), truncations)):
        yield "truncate", blob[:cut]
    for _ in range(per_section):  # garbage appended, or overwritten runs of bytes
        b = bytearray(blob)
        at = int(rng.integers(0, len(b) - 8))
        b[at : at + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
        yield "overwrite", bytes(b)


def _alarm(signum, frame):
    raise TimeoutError("decoding a corrupt file hung")


def test_mutated_files_never_crash_hang_or_lie(originals, tmp_path):
    rng = np.random.default_rng(2026)
    outcomes: Counter = Counter()
    total = 0
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for name, (blob, expected) in originals.items():
            for kind, mutated in _mutations(blob, rng, per_section=40, truncations=120):
                path = tmp_path / f"{total}.dcq"
                path.write_bytes(mutated)
                signal.alarm(10)
                try:
                    got = _decode_all(path)
                except DcqError:
                    outcomes[(kind, "error")] += 1
                except Exception as exc:  # anything else is a bug
                    pytest.fail(f"{name} {kind}: {type(exc).__name__}: {exc}")
                else:
                    outcomes[(kind, "intact")] += 1
                    assert _same(got, expected), f"{name} {kind}: decoded differently without an error"
                finally:
                    signal.alarm(0)
                path.unlink()
                total += 1
    finally:
        signal.signal(signal.SIGALRM, old)
    assert total >= 1000, total
    # Nearly every mutation is caught; the few intact ones hit bytes nothing reads.
    errors = sum(v for (k, o), v in outcomes.items() if o == "error")
    assert errors >= 0.95 * total, outcomes


def _same(a, b) -> bool:
    images_a, batches_a, labels_a, meta_a, w_a = a
    images_b, batches_b, labels_b, meta_b, w_b = b
    return (len(images_a) == len(images_b) and all(np.array_equal(x, y) for x, y in zip(images_a, images_b))
            and all(np.array_equal(x, y) for x, y in zip(batches_a, batches_b))
            and labels_a == labels_b and meta_a == meta_b
            and w_a.keys() == w_b.keys() and all(np.array_equal(w_a[k], w_b[k]) for k in w_a))


def test_structural_mutations_with_valid_checksums_never_crash(originals, tmp_path):
    """With checksums recomputed, only validation stands between bad offsets and the kernels."""
    rng = np.random.default_rng(11)
    outcomes: Counter = Counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for name, (blob, _) in originals.items():
            for n, (kind, mutated) in enumerate(_mutations(blob, rng, per_section=40, truncations=0)):
                if kind.startswith("flip:DATA"):
                    continue
                path = tmp_path / f"{name}-{n}.dcq"
                path.write_bytes(refresh_checksums(mutated))
                signal.alarm(10)
                try:
                    _decode_all(path)
                    outcomes["decoded"] += 1
                except DcqError:
                    outcomes["error"] += 1
                except Exception as exc:
                    pytest.fail(f"{name} {kind}: {type(exc).__name__}: {exc}")
                finally:
                    signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert sum(outcomes.values()) >= 900, outcomes
