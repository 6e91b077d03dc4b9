"""Codec ``packed`` (spec §5.1, id 0): the payload is the bit-packed stream itself."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CorruptFile
from .base import Sample, Shapes


class _Encoder:
    warmup = 0

    def start(self, first: list[Sample]) -> None:
        pass

    def encode(self, sample: Sample) -> bytes:
        return sample.stream

    def sections(self) -> dict[bytes, bytes]:
        return {}


class _Decoder:
    needs_sizes = False
    in_place = True

    def check_lengths(self, first: int, lengths: np.ndarray, sizes: np.ndarray, recs_offset: int) -> None:
        ok = lengths == sizes
        if not ok.all():
            i = int(np.argmin(ok))
            raise CorruptFile(f"record {first + i}: bad payload_length", section="RECS", offset=recs_offset,
                              expected=f"(kept pixels * bits + 7) // 8 = {int(sizes[i])}", found=int(lengths[i]))

    def decode(self, data: np.ndarray, idx: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
               sizes: np.ndarray, data_offset: int, shapes: Shapes) -> tuple[np.ndarray, np.ndarray]:
        return data, offsets


@dataclass(frozen=True)
class Packed:
    id: int = 0
    name: str = "packed"
    max_bits: int = 8

    def encoder(self, bits: int, level: int, dictionary: bytes | None, dict_size: int, dict_samples: int) -> _Encoder:
        return _Encoder()

    def decoder(self, sections: dict[bytes, tuple[int, np.ndarray]], bits: int) -> _Decoder:
        return _Decoder()


CODEC = Packed()
