"""Shared checkers and factories of the test suite."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dcqformat import DcqWriter
from dcqformat.decode import bitpack


@dataclass
class Sample:
    indices: np.ndarray
    palette: int
    label: int
    dropped: np.ndarray | None = None


@dataclass
class Spec:
    """A dataset to write: everything needed to know what decoding must give."""

    bits: int
    channels: int
    palettes: np.ndarray
    samples: list[Sample]
    codec: str = "packed"
    patch: tuple[int, int] | None = None
    meta: dict = field(default_factory=dict)

    def expected(self, i: int) -> np.ndarray:
        s = self.samples[i]
        img = self.palettes[s.palette][s.indices]
        if s.dropped is not None:
            ph, pw = self.patch  # type: ignore[misc]
            up = np.repeat(np.repeat(s.dropped, ph, 0), pw, 1)[: img.shape[0], : img.shape[1]]
            img = img.copy()
            img[up] = 0
        return img


def make_spec(rng: np.random.Generator, *, bits: int, channels: int, n: int, codec: str = "packed",
              sizes: list[tuple[int, int]] | None = None, n_palettes: int = 3, masked: float = 0.0,
              patch: tuple[int, int] | None = None) -> Spec:
    pals = rng.integers(0, 256, (n_palettes, 1 << bits, channels)).astype(np.uint8)
    samples = []
    for i in range(n):
        h, w = sizes[i % len(sizes)] if sizes else (8, 8)
        idx = rng.integers(0, 1 << bits, (h, w)).astype(np.uint8)
        dropped = None
        if patch is not None and rng.random() < masked:
            dropped = rng.random(bitpack.grid_shape(h, w, *patch)) < 0.4
        samples.append(Sample(idx, int(rng.integers(0, n_palettes)), int(rng.integers(-1, 10)), dropped))
    return Spec(bits, channels, pals, samples, codec, patch if patch else None, {"name": "test"})


def write_spec(spec: Spec, path: Path, **kw) -> Path:
    with DcqWriter(path, bits=spec.bits, channels=spec.channels, palettes=spec.palettes, codec=spec.codec,
                   meta=spec.meta, patch_size=spec.patch, dict_samples=kw.pop("dict_samples", 16), **kw) as w:
        for s in spec.samples:
            w.add(s.indices, palette=s.palette, label=s.label, dropped=s.dropped)
    return path


def check_roundtrip(spec: Spec, reader) -> None:  # type: ignore[no-untyped-def]
    """Every sample decodes to what was written, one by one and in batches, in both layouts."""
    assert len(reader) == len(spec.samples)
    for i in range(len(spec.samples)):
        want = spec.expected(i)
        np.testing.assert_array_equal(reader[i], want)
        np.testing.assert_array_equal(reader.decode(i, layout="NCHW"), want.transpose(2, 0, 1))
    np.testing.assert_array_equal(reader.labels, [s.label for s in spec.samples])
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(spec.samples):
        by_size.setdefault(s.indices.shape, []).append(i)
    for idx in by_size.values():
        want = np.stack([spec.expected(i) for i in idx])
        np.testing.assert_array_equal(reader.decode_batch(idx), want)
        out = np.full((len(idx), want.shape[3], want.shape[1], want.shape[2]), 7, np.uint8)
        reader.decode_batch(idx, out=out, layout="NCHW")
        np.testing.assert_array_equal(out, want.transpose(0, 3, 1, 2))


def gradient_npz(path: Path, *, n: int, side: int, step: int, noise: int, classes: list[str], seed: int) -> Path:
    """An .npz source of ``n`` noisy colour ramps (side x side RGB) labelled round-robin by ``classes``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side]
    base = np.stack([x * step, y * step, (x + y) * (step // 2)], -1)
    images = np.clip(base[None] + rng.integers(-noise, noise, (n, side, side, 3)), 0, 255).astype(np.uint8)
    np.savez(path, x=images, y=np.arange(n) % len(classes), classes=np.array(classes))
    return path
