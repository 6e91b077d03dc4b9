"""The quantizers (PyTorch; CUDA when present, else the CPU): DCQ and per-image baselines.

The stages of a conversion; :mod:`dcqformat.conversion` runs them.

Imported only by ``dcq convert`` and by users who quantize: ``import dcqformat`` needs no torch.
"""

from ..pipeline.options import ConvertConfig
from ..pipeline.summary import ConvertSummary

__all__ = ["ConvertConfig", "ConvertSummary"]
