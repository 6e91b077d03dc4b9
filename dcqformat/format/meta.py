"""The META section (spec §8): a JSON object whose known keys are checked once, at open.

:func:`parse_meta` turns the section's bytes into :class:`FileMeta`: the raw object (unknown
keys kept, as the spec asks) and the known keys, each of the type the spec gives it. The rest
of the code reads the typed fields; a known key of the wrong type is a :class:`CorruptFile`
naming the key, what was expected and what was found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .. import _json as strict_json
from .. import _layout as L
from ..errors import CorruptFile


@dataclass(frozen=True)
class DropInfo:
    """``drop``: how patches were dropped."""

    fraction: float
    patch: int | None
    importance: str | None


@dataclass(frozen=True)
class SelectionInfo:
    """``selection``: which samples were kept."""

    method: str
    keep: float
    samples_in: int | None
    kept: int | None
    per_class: dict[str, int] | list[int] | None


@dataclass(frozen=True)
class FileMeta:
    """What the reader knows of META; ``raw`` is the whole object, unknown keys included."""

    raw: dict[str, Any]
    name: str | None
    classes: tuple[str, ...] | None
    color_space: str
    quantizer: dict[str, Any] | None
    provenance: dict[str, Any] | None
    drop: DropInfo | None
    selection: SelectionInfo | None
    mae: dict[str, Any] | None


class _Checker:
    def __init__(self, offset: int) -> None:
        self.offset = offset

    def fail(self, key: str, expected: str, value: Any) -> CorruptFile:
        found = type(value).__name__ if not isinstance(value, (int, float, str)) or isinstance(value, bool) \
            else repr(value)[:60]
        return CorruptFile(f"metadata key {key!r} has the wrong type or range", section="META", offset=self.offset,
                           expected=expected, found=found)

    def obj(self, d: dict[str, Any], key: str, prefix: str = "") -> dict[str, Any] | None:
        v = d.get(key)
        if v is not None and not isinstance(v, dict):
            raise self.fail(prefix + key, "an object", v)
        return v

    def string(self, d: dict[str, Any], key: str, prefix: str = "", required: bool = False) -> str | None:
        v = d.get(key)
        if (v is None and required) or (v is not None and not isinstance(v, str)):
            raise self.fail(prefix + key, "a string", v)
        return v

    def number(self, d: dict[str, Any], key: str, lo: float, hi: float, prefix: str = "",
               integer: bool = False, required: bool = False) -> Any:
        v = d.get(key)
        if v is None and not required:
            return None
        kind = (int,) if integer else (int, float)
        if not isinstance(v, kind) or isinstance(v, bool) or not math.isfinite(v) or not lo <= v <= hi:
            raise self.fail(prefix + key, f"{'an integer' if integer else 'a number'} in {lo:g}..{hi:g}", v)
        return v


def parse_meta(buf: bytes, offset: int = 0) -> FileMeta:
    """Validate META's bytes (UTF-8 JSON object, known keys typed) into a :class:`FileMeta`."""
    if len(buf) > L.MAX_META_BYTES:
        raise CorruptFile("metadata too large", section="META", offset=offset,
                          expected=f"<= {L.MAX_META_BYTES} bytes", found=len(buf))
    try:
        raw = strict_json.loads(buf.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptFile(f"metadata is not UTF-8 JSON ({exc})", section="META", offset=offset) from None
    if not isinstance(raw, dict):
        raise CorruptFile("metadata is not a JSON object", section="META", offset=offset,
                          expected="object", found=type(raw).__name__)
    c = _Checker(offset)
    classes = raw.get("classes")
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(x, str) for x in classes)):
        raise c.fail("classes", "an array of strings", classes)
    drop = c.obj(raw, "drop")
    selection = c.obj(raw, "selection")
    mae = c.obj(raw, "mae")
    if mae is not None:
        c.obj(mae, "config", "mae.")
    c.obj(raw, "dequantizer")
    return FileMeta(
        raw=raw,
        name=c.string(raw, "name"),
        classes=tuple(classes) if classes is not None else None,
        color_space=c.string(raw, "color_space") or "sRGB",
        quantizer=c.obj(raw, "quantizer"),
        provenance=c.obj(raw, "provenance"),
        drop=None if drop is None else DropInfo(
            fraction=c.number(drop, "fraction", 0, 1, "drop.", required=True),
            patch=c.number(drop, "patch", 1, L.MAX_SIDE, "drop.", integer=True),
            importance=c.string(drop, "importance", "drop.")),
        selection=None if selection is None else _selection(c, selection),
        mae=mae,
    )


def _selection(c: _Checker, sel: dict[str, Any]) -> SelectionInfo:
    per_class = sel.get("per_class")
    counts = list(per_class.values()) if isinstance(per_class, dict) else per_class
    if per_class is not None and (not isinstance(counts, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts)):
        raise c.fail("selection.per_class", "an object or array of counts", per_class)
    return SelectionInfo(
        method=c.string(sel, "method", "selection.", required=True) or "",
        keep=c.number(sel, "keep", 0, 1, "selection.", required=True),
        samples_in=c.number(sel, "samples_in", 0, 2**63 - 1, "selection.", integer=True),
        kept=c.number(sel, "kept", 0, 2**63 - 1, "selection.", integer=True),
        per_class=per_class,
    )
