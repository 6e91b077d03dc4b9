"""The ``dcq`` command line: :mod:`.main` (argument parsing; ``dcq = dcqformat.cli:main``),
:mod:`.commands` (one function per command), :mod:`.demo`, :mod:`.preview` (before/after
PNG sheets), :mod:`.refill` (refilled whole images for export and previews) and
:mod:`.sample_data` (the embedded default dataset in ``data/``)."""

from .main import main

__all__ = ["main"]
