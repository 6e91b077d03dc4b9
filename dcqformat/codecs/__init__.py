"""Payload codecs (spec §5), keyed by their spec id: one module each.

A codec has an ``id`` and a ``name`` (spec §5), an :class:`Encoder` for the writer (bit-packed
stream in, payload out, plus any section of its own such as ``ZDCT``) and a :class:`Decoder` for
the reader (payloads in, verified bit streams out). Adding a codec is a module here, its entry
in :data:`REGISTRY`, a section of spec/FORMAT.md, and its tests; reader and writer do not change.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .. import _layout as L
from ..errors import UnsupportedVersion
from . import ctx, ctxg, packed, zstd
from .base import Sample, Shapes


class Encoder(Protocol):
    """Turns bit-packed streams into payloads, in order."""

    warmup: int  # streams to see before encoding starts (e.g. to train a dictionary); 0: none

    def start(self, first: list[Sample]) -> None:
        """Called once with the first ``warmup`` samples (fewer when the file has fewer)."""

    def encode(self, sample: Sample) -> bytes: ...

    def sections(self) -> dict[bytes, bytes]:
        """Sections of the codec's own (tag -> bytes), written after encoding."""


class Decoder(Protocol):
    """Turns payloads back into bit streams."""

    needs_sizes: bool  # whether decode() needs each stream's size (the packed codec does not)
    in_place: bool  # whether decode() returns the payloads themselves (DATA and the payload offsets)

    def check_lengths(self, first: int, lengths: np.ndarray, sizes: np.ndarray, recs_offset: int) -> None:
        """Validate payload lengths against stream sizes at open (records ``first``...)."""

    def decode(self, data: np.ndarray, idx: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
               sizes: np.ndarray, data_offset: int, shapes: Shapes) -> tuple[np.ndarray, np.ndarray]:
        """The streams of samples ``idx`` (payloads at ``offsets``/``lengths`` of ``data``, the DATA
        section at file offset ``data_offset``, images ``shapes``): a buffer and each stream's
        offset in it."""
        ...


class Codec(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def max_bits(self) -> int:
        """The most bits per index it codes."""
        ...

    def encoder(self, bits: int, level: int, dictionary: bytes | None, dict_size: int,
                dict_samples: int) -> Encoder: ...

    def decoder(self, sections: dict[bytes, tuple[int, np.ndarray]], bits: int) -> Decoder:
        """A decoder for a file of ``bits``-bit maps whose sections are ``tag -> (file offset, bytes)``."""
        ...


REGISTRY: dict[int, Codec] = {c.id: c for c in (packed.CODEC, zstd.CODEC, ctx.CODEC, ctx.STRIPED, ctxg.CODEC)}
NAMES = {c.name: c for c in REGISTRY.values()}
assert {c.name: c.id for c in REGISTRY.values()} == L.CODECS, "the registry and spec/_layout.py disagree"


def max_bits(name: str) -> int:
    """The most bits per index the codec ``name`` codes (``ctx``, ``ctxs`` and ``ctxg``: 4; others: 8)."""
    return by_name(name).max_bits


def by_id(codec_id: int) -> Codec:
    if codec_id not in REGISTRY:
        raise UnsupportedVersion(f"unknown payload codec id {codec_id} (this reader knows {sorted(REGISTRY)})")
    return REGISTRY[codec_id]


def by_name(name: str) -> Codec:
    if name not in NAMES:
        raise ValueError(f"codec must be one of {sorted(NAMES)}, got {name!r}")
    return NAMES[name]
