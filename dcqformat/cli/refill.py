"""Decoded images with dropped patches refilled as the loaders refill them, for NumPy users of the
core (``dcq export``, ``dcq preview``). Refilling by the MAE or the mean colour needs torch (the
loaders' extra): it is imported on first use, with a clear error when it is missing."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import DcqError
from ..format.multifile import DcqSet
from ..format.reader import DcqReader


def refilling_decoder(r: DcqReader | DcqSet, mode: str = "auto",
                      dequantize: str = "lookup") -> Callable[[np.ndarray], list[np.ndarray]]:
    """Samples -> their (H, W, C) uint8 images in order, dropped patches refilled as ``mode`` says
    (auto: by the file's MAE when it has one, else by harmonic inpainting) and dequantized as the
    loaders' ``dequantize`` says; the samples of each image size decoded in one call."""
    decode: Callable[[np.ndarray], np.ndarray]
    if (not r.has_masks or mode == "none") and dequantize == "lookup":
        decode = r.decode_batch
    else:
        try:
            from ..loaders.dequantize import Restorer
            from ..loaders.reconstruct import Reconstructor, refilled_images
        except ImportError as exc:
            raise DcqError(f"refilling dropped patches and dequantizing need torch ({exc}); use --reconstruct "
                           "none and --dequantize lookup") from None
        rec = Reconstructor(mode, weights=r.weights_blob(), patch=r.patch_size) \
            if r.has_masks and r.patch_size is not None else None
        restorer = Restorer(dequantize, weights=r.weights_blob("DEQW"))

        def refill(idx: np.ndarray) -> np.ndarray:
            return refilled_images(r, idx, rec, restorer)
        decode = refill

    def run(idx: np.ndarray) -> list[np.ndarray]:
        shapes = r.shapes[idx]
        out: list[np.ndarray] = [np.empty(0, np.uint8)] * len(idx)
        for size in np.unique(shapes, axis=0):
            pos = np.flatnonzero((shapes == size).all(axis=1))
            for p, img in zip(pos.tolist(), decode(idx[pos])):
                out[p] = img
        return out
    return run
