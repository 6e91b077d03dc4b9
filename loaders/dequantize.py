"""Dequantization on decode: what a decoded palette image becomes before it is cropped.

- ``"lookup"``: each index takes its palette colour (exact; fused with the crop, the fastest).
- ``"deband"``: the debanding filter (:mod:`dcqformat.decode.deband`), no stored bytes.
- ``"learned"``: the palette image through the file's learned dequantizer (section DEQW,
  :mod:`dcqformat.dequant`), one forward pass per batch.
- ``"auto"`` (default): ``"learned"`` when the file has a dequantizer, else ``"lookup"``.

Anything but ``"lookup"`` works on whole images, so the loaders decode whole images (one batch
per image size), restore them, then crop/flip/resize the pixels (the refill path of
:mod:`dcqformat.loaders.reconstruct`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from dcqformat import DcqError
from dcqformat.decode import PaletteSet, Streams, decode_debanded, decode_images

if TYPE_CHECKING:
    from dcqformat.dequant import Dequantizer

Dequantize = Literal["auto", "lookup", "deband", "learned"]
MODES = ("auto", "lookup", "deband", "learned")


class Restorer:
    """Turns decoded samples into images as ``mode`` says; picklable, builds its model lazily.

    Args:
        mode: see the module's doc.
        weights: the file's DEQW section (safetensors bytes) or None.
        device: where the learned dequantizer runs (``"cpu"`` in DataLoader workers).
    """

    def __init__(self, mode: Dequantize, *, weights: bytes | None, device: str | torch.device = "cpu") -> None:
        if mode not in MODES:
            raise ValueError(f"dequantize must be one of {MODES}, got {mode!r}")
        if mode == "auto":
            mode = "learned" if weights is not None else "lookup"
        if mode == "learned" and weights is None:
            raise DcqError("dequantize='learned' needs the file's learned dequantizer (section DEQW), found none; "
                           "use 'deband' or 'lookup', or convert with --dequantizer auto (it trains one)")
        self.mode, self.weights, self.device = mode, weights, torch.device(device)
        self._model: Dequantizer | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None}

    @property
    def whole_images(self) -> bool:
        """Whether this mode needs whole decoded images (anything but the fused lookup)."""
        return self.mode != "lookup"

    @property
    def model(self) -> Dequantizer:
        if self._model is None:
            from dcqformat.dequant import dequantizer_from_bytes

            assert self.weights is not None  # checked in __init__ for mode "learned"
            self._model = dequantizer_from_bytes(self.weights, self.device)
        return self._model

    def decode(self, streams: Streams, palettes: PaletteSet, out: np.ndarray) -> np.ndarray:
        """Samples of one size into ``out`` (N, C, H, W) uint8: looked up or debanded (dropped pixels 0)."""
        if self.mode == "deband":
            return decode_debanded(streams, palettes, out)
        return decode_images(streams, palettes, out, True)

    def refine(self, images: np.ndarray) -> np.ndarray:
        """The learned dequantizer's output for uint8 (N, C, H, W) images (others: unchanged)."""
        if self.mode != "learned" or not len(images):
            return images
        if self.model.config.channels != images.shape[1]:
            raise DcqError(f"the learned dequantizer works on {self.model.config.channels} channels, the file has "
                           f"{images.shape[1]}")
        return self.model.restore(torch.from_numpy(images)).numpy()
