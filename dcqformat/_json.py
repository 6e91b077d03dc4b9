"""JSON as RFC 8259 defines it: ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, though
Python's ``json`` reads them. Every JSON the library reads from a file goes through :func:`loads`."""

from __future__ import annotations

import json
from typing import Any


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses ``NaN`` and the infinities (a ``ValueError`` naming them)."""
    return json.loads(text, parse_constant=_refuse)
