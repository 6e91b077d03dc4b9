"""dcqformat.loaders: PyTorch and WebDataset adapters over .dcq files.

Installed as ``dcqformat.loaders`` (source in the repository's top-level ``loaders/``).
The adapters import torch; the core ``dcqformat`` package never imports this one.
"""

__all__: list[str] = []
