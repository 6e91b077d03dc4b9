"""Sections PALT (spec §3: palette count, bits, channels, then the colours) and PCOR (§3.1:
each sample's small correction of its shared palette), both directions."""

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


def pack_deltas(deltas: np.ndarray) -> bytes:
    """PCOR's body for samples' deltas (N, K, C) (or (N, K * C)) in -8..7: two per byte, low nibble first."""
    deltas = np.asarray(deltas, np.int8)
    flat = deltas.reshape(len(deltas), int(np.prod(deltas.shape[1:])))
    nibbles = (flat.astype(np.uint8) & 15).reshape(len(flat), flat.shape[1] // 2, 2)
    return (nibbles[..., 0] | nibbles[..., 1] << 4).astype(np.uint8).tobytes()


def parse_corrections(buf: np.ndarray, file_offset: int, samples: int, bits: int,
                      channels: int) -> tuple[int, np.ndarray]:
    """``(step, deltas (N, K, C) int8)`` of a PCOR section, checked against the file."""
    head = L.PCOR_HEADER.size
    if buf.size < head:
        raise CorruptFile("too short for its header", section="PCOR", offset=file_offset,
                          expected=f">= {head} bytes", found=buf.size)
    count, step, _ = L.PCOR_HEADER.unpack_from(buf, 0)
    if bits > L.PCOR_MAX_BITS:
        raise CorruptFile("palette corrections in a file of more bits than they are for", section="PCOR",
                          offset=file_offset, expected=f"bits <= {L.PCOR_MAX_BITS}", found=f"bits {bits}")
    if count != samples or step == 0:
        raise CorruptFile("bad correction header", section="PCOR", offset=file_offset,
                          expected=f"one correction per sample ({samples}), step >= 1",
                          found=f"{count} corrections, step {step}")
    per = (1 << bits) * channels // 2
    if buf.size != head + count * per:
        raise CorruptFile("length does not match the correction header", section="PCOR", offset=file_offset,
                          expected=head + count * per, found=buf.size)
    packed = buf[head:].reshape(count, per)
    nibbles = np.stack([packed & 15, packed >> 4], -1).astype(np.int8)
    deltas = np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)
    return int(step), deltas.reshape(count, 1 << bits, channels)


def corrected(palettes: np.ndarray, parents: np.ndarray, step: int, deltas: np.ndarray) -> np.ndarray:
    """Each sample's palette (N, K, C) uint8: its parent ``palettes[parents]`` plus ``step``
    times its deltas, clipped to 0..255 (spec §3.1)."""
    return np.clip(palettes[parents].astype(np.int16) + step * deltas.astype(np.int16), 0, 255).astype(np.uint8)
