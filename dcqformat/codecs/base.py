"""What the writer gives an encoder and the reader gives a decoder, besides the bytes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sample:
    """One sample as the writer gives it to an encoder: its bit-packed pixel stream (spec §5) and
    where those pixels lie: an image ``height x width``, less the patches ``dropped`` (a
    (gh, gw) bool mask on the grid of ``patch``) when it is masked."""

    stream: bytes
    height: int
    width: int
    dropped: np.ndarray | None = None
    patch: tuple[int, int] | None = None


@dataclass(frozen=True)
class Shapes:
    """The geometry of the samples a decoder decodes: sizes and drop masks (spec §7; a sample with
    ``mask_offsets[k] < 0`` is unmasked), and, when only some rows will be read (a crop), the
    rows ``rows[k] = (first, end)`` that must be right: a codec that can skip the others may
    (``ctx`` decodes only the stripes that hold them), leaving them any valid index."""

    heights: np.ndarray
    widths: np.ndarray
    patch: tuple[int, int] | None = None
    mask_data: np.ndarray | None = None
    mask_offsets: np.ndarray | None = None
    rows: np.ndarray | None = None
