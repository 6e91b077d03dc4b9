"""dcqformat.loaders: PyTorch and WebDataset adapters over .dcq files.

Installed as ``dcqformat.loaders`` (source in the repository's top-level ``loaders/``). These
modules import torch; the core ``dcqformat`` package never imports them.
"""

from .augment import CenterCrop, RandomCrop, RandomResizedCrop, Resize
from .dataset import DCQDataset, PackedView
from .gpu import DeviceDecoder, random_crop_flip
from .loader import DCQLoader
from .tables import normalized_table

__all__ = [
    "CenterCrop",
    "DCQDataset",
    "DCQLoader",
    "DeviceDecoder",
    "PackedView",
    "RandomCrop",
    "RandomResizedCrop",
    "Resize",
    "normalized_table",
    "random_crop_flip",
]
