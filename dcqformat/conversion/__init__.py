"""The conversion's orchestration: source -> image cache -> selection -> quantizer -> writer.

:func:`convert` (also ``dcqformat.convert``) is in :mod:`.run`; :mod:`.budget` turns
``--bytes-per-image`` into settings. The stages it runs are :mod:`dcqformat.select`,
:mod:`dcqformat.quantize` and :mod:`dcqformat.mae`, on the shared :mod:`dcqformat.pipeline`.
"""

from ..pipeline.options import ConvertConfig
from .run import convert

__all__ = ["ConvertConfig", "convert"]
