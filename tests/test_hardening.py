"""Hostile or unlucky input on the surfaces beside the single-file reader (issue 25): each test
failed before its fix."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from common import make_spec, write_spec

import dcqformat
from dcqformat import CorruptFile


def test_zstd_reader_shared_by_threads(tmp_path):
    """python-zstandard's decompressors are not thread-safe: each thread gets its own, and 8
    threads decoding one reader all see the right pixels."""
    spec = make_spec(np.random.default_rng(3), bits=2, channels=3, n=64, codec="zstd", sizes=[(16, 16), (24, 20)],
                     n_palettes=4)
    reader = dcqformat.open(write_spec(spec, tmp_path / "z.dcq"))
    expected = [reader[i].copy() for i in range(len(reader))]
    decompressors: set[int] = set()
    failures: list[str] = []
    lock = threading.Lock()

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with lock:
            decompressors.add(id(reader._decoder._decompressor()))
        for _ in range(60):
            idx = sorted(rng.choice(len(reader), 8, replace=False).tolist())
            try:
                for i in idx:
                    if not np.array_equal(reader[i], expected[i]):
                        failures.append(f"sample {i}: wrong pixels")
            except CorruptFile as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert len(decompressors) == 8  # one per thread, never shared


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_meta_with_nan_is_not_json(tmp_path, constant):
    """RFC 8259 has no NaN or infinities; Python's json reads them. META (and every JSON the
    library reads) refuses them, naming the constant."""
    from dcqformat.format.meta import parse_meta

    with pytest.raises(CorruptFile, match=f"{constant} is not JSON"):
        parse_meta(f'{{"name": "x", "extra": {constant}}}'.encode())
    assert parse_meta(b'{"name": "x", "extra": 1e308}').raw["extra"] == 1e308
