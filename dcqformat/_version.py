"""The package's version and the spec version it reads and writes."""

from ._layout import VERSION_MAJOR, VERSION_MINOR

__version__ = "0.1.0"
SPEC_VERSION = f"{VERSION_MAJOR}.{VERSION_MINOR}"
