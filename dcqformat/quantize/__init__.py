"""The quantizers (PyTorch; CUDA when present, else the CPU): DCQ and per-image baselines.

Imported only by ``dcq convert`` and by users who quantize: ``import dcqformat`` needs no torch.
"""

from .convert import ConvertConfig, ConvertSummary, convert

__all__ = ["ConvertConfig", "ConvertSummary", "convert"]
