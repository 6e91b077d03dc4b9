"""Section PALT (spec §3): palette count, bits, channels, then the colours, both directions."""

from __future__ import annotations

import numpy as np

from .. import _layout as L
from ..errors import CorruptFile


def pack_header(count: int, bits: int, channels: int) -> bytes:
    return L.PALT_HEADER.pack(count, bits, channels, 0)


def parse_palettes(buf: np.ndarray, file_offset: int) -> tuple[int, int, np.ndarray]:
    """``(bits, channels, palettes (P, 2**bits, C) uint8)`` of a PALT section, checked."""
    if buf.size < L.PALT_HEADER.size:
        raise CorruptFile("too short for its header", section="PALT", offset=file_offset,
                          expected=f">= {L.PALT_HEADER.size} bytes", found=buf.size)
    count, bits, channels, _ = L.PALT_HEADER.unpack_from(buf, 0)
    if bits not in L.BITS or channels not in L.CHANNELS or not 1 <= count <= L.MAX_PALETTES:
        raise CorruptFile("bad palette header", section="PALT", offset=file_offset,
                          expected=f"bits 1..8, channels 1|3, 1..{L.MAX_PALETTES} palettes",
                          found=f"bits {bits}, channels {channels}, {count} palettes")
    k = 1 << bits
    if buf.size != L.PALT_HEADER.size + count * k * channels:
        raise CorruptFile("length does not match the palette header", section="PALT", offset=file_offset,
                          expected=L.PALT_HEADER.size + count * k * channels, found=buf.size)
    return int(bits), int(channels), buf[L.PALT_HEADER.size :].reshape(count, k, channels)
