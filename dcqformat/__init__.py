"""dcqformat: a compressed, palette-quantized image-dataset format for PyTorch training.

>>> import dcqformat
>>> reader = dcqformat.open("train.dcq")            # doctest: +SKIP
>>> image = reader[0]                               # (H, W, C) uint8  # doctest: +SKIP
>>> batch = reader.decode_batch(range(256), layout="NCHW")  # doctest: +SKIP
"""

from ._version import SPEC_VERSION, __version__  # noqa: F401  (__version__: public, not in __all__)
from .errors import ChecksumMismatch, CorruptFile, DcqError, FileChanged, NotADcqFile, TruncatedFile, UnsupportedVersion
from .format.reader import DcqReader, open
from .format.writer import DcqWriter
from .pipeline.options import ConvertConfig


def __getattr__(name: str) -> object:
    """``dcqformat.convert`` imports the converter (and torch) on first use only."""
    if name == "convert":
        from .conversion import convert

        return convert
    raise AttributeError(f"module 'dcqformat' has no attribute {name!r}")


__all__ = [
    "ChecksumMismatch",
    "ConvertConfig",
    "CorruptFile",
    "DcqError",
    "FileChanged",
    "DcqReader",
    "DcqWriter",
    "NotADcqFile",
    "SPEC_VERSION",
    "TruncatedFile",
    "UnsupportedVersion",
    "convert",
    "open",
]
