"""Section MASK (spec §7): the patch size, then one drop bitmap per masked sample, both directions."""

from __future__ import annotations

import numpy as np

from .. import _layout as L
from ..errors import CorruptFile


def pack_header(patch: tuple[int, int]) -> bytes:
    return L.MASK_HEADER.pack(patch[0], patch[1], 0)


def parse_masks(buf: np.ndarray, file_offset: int) -> tuple[tuple[int, int], np.ndarray]:
    """``(patch (ph, pw), the section's bytes)``; mask offsets in records are relative to them."""
    if buf.size < L.MASK_HEADER.size:
        raise CorruptFile("too short for its header", section="MASK", offset=file_offset,
                          expected=f">= {L.MASK_HEADER.size} bytes", found=buf.size)
    ph, pw, _ = L.MASK_HEADER.unpack_from(buf, 0)
    if ph < 1 or pw < 1:
        raise CorruptFile("patch size is zero", section="MASK", offset=file_offset, expected=">= 1", found=(ph, pw))
    return (int(ph), int(pw)), buf
