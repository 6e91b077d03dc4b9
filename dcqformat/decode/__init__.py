"""The decode layer: the Numba kernels and everything that turns bit streams into pixels.

- :mod:`.batch`: the :class:`Streams` value and the decode API (whole images, fused crops),
  re-exported here: ``from dcqformat.decode import Streams, decode_crops``.
- :mod:`.kernels`: the Numba kernels (unpack, palette lookup, fused crop/flip/resize, CRC);
  :mod:`.inpaint`: the harmonic fill of dropped patches (spec §9.2); :mod:`.deband`: the
  debanding of ``dequantize="deband"``.
- :mod:`.bitpack` and :mod:`.resample`: their plain NumPy twins, which the tests compare against
  (``bitpack`` also packs for the writer).

The codecs' own kernels live beside their codecs (:mod:`dcqformat.codecs.rans`,
:mod:`dcqformat.codecs.zstdframe`). Nothing here imports from a layer above.
"""

from .batch import (
    PaletteSet,
    Streams,
    concat,
    crop_arguments,
    crop_rows,
    decode_crops,
    decode_debanded,
    decode_images,
    decode_indices,
    decode_masked_crops,
    kept_pixels,
    output_array,
    resample_planes,
    set_parallel,
)

__all__ = ["PaletteSet", "Streams", "concat", "crop_arguments", "crop_rows", "decode_crops", "decode_debanded",
           "decode_images", "output_array",
           "decode_indices", "decode_masked_crops", "kept_pixels", "resample_planes", "set_parallel"]
