"""A small network's weights as a safetensors buffer, the way this format stores models (the MAE
of spec §9.1 in WGHT, the dequantizer of §9.3 in DEQW): one ``__metadata__`` key holding JSON
``{"config": ..., "format": ...}`` (one key: safetensors orders several arbitrarily and the bytes
must be reproducible); each tensor float16, or int8 with a float32 scalar ``NAME.scale``
(value = int8 * scale, scale = max|w| / 127 of that tensor). NumPy only; nothing is unpickled."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from safetensors.numpy import save

from .. import _json as strict_json
from ..errors import DcqError
from .weights import load_weights, validate_safetensors

SCALE = ".scale"
PRECISIONS = ("int8", "float16")


def pack(state: dict[str, np.ndarray], key: str, info: dict[str, Any], precision: str = "int8") -> bytes:
    """``state`` (name -> float array) as a safetensors buffer: tensors of two or more dimensions
    in int8 with a per-tensor scale (``precision`` "int8") or everything in float16; vectors are
    float16 either way. ``info`` is stored as JSON under the one metadata key ``key``."""
    if precision not in PRECISIONS:
        raise ValueError(f"weight precision must be one of {PRECISIONS}, got {precision!r}")
    tensors: dict[str, np.ndarray] = {}
    for k, v in state.items():
        v = np.asarray(v, np.float32)
        if precision == "int8" and v.ndim >= 2:
            scale = float(np.abs(v).max()) / 127 or 1.0
            tensors[k] = np.clip(np.round(v / np.float32(scale)), -127, 127).astype(np.int8)
            tensors[k + SCALE] = np.array(scale, np.float32)
        else:
            tensors[k] = v.astype(np.float16)
    return save(tensors, metadata={key: json.dumps(info, sort_keys=True)})


def metadata(buf: bytes | memoryview, key: str, formats: tuple[str, ...], what: str) -> tuple[dict, dict[str, Any]]:
    """The checked safetensors header of ``buf`` and its JSON metadata ``key``, whose ``format``
    must be one of ``formats`` (a DcqError naming ``what`` otherwise)."""
    header = validate_safetensors(buf)
    try:
        info = strict_json.loads(header.get("__metadata__", {}).get(key, "{}"))
    except (ValueError, RecursionError):
        info = {}
    if not isinstance(info, dict) or info.get("format") not in formats:
        found = info.get("format") if isinstance(info, dict) else None
        raise DcqError(f"weights are not a dcqformat {what}: expected format {' or '.join(map(repr, formats))}, "
                       f"found {found!r}")
    return header, info


def check(header: dict, expected: dict[str, tuple[int, ...]], int8: bool, what: str) -> None:
    """Raise DcqError unless the header's tensors are exactly those ``expected`` (name -> shape),
    each F16 or (with ``int8``) I8 with an F32 ``NAME.scale`` of shape []."""
    stored = {k: v for k, v in header.items() if k != "__metadata__"}
    names = set(expected) | {k + SCALE for k in expected if stored.get(k, {}).get("dtype") == "I8"}
    if set(stored) != names:
        name = sorted(set(stored) ^ names)[0]
        raise DcqError(f"{what} weights do not match their config: tensor {name!r} "
                       f"{'expected' if name in names else 'not expected'}, found {'it' if name in stored else 'none'}")
    for name, shape in expected.items():
        dtype = stored[name]["dtype"]
        allowed = ("F16", "I8") if int8 else ("F16",)
        if dtype not in allowed:
            raise DcqError(f"{what} tensor {name!r}: expected dtype {' or '.join(allowed)}, found {dtype}")
        if tuple(stored[name]["shape"]) != shape:
            raise DcqError(f"{what} weights do not match their config: tensor {name!r} expected shape "
                           f"{shape}, found {tuple(stored[name]['shape'])}")
        if dtype == "I8" and (stored[name + SCALE]["dtype"], stored[name + SCALE]["shape"]) != ("F32", []):
            raise DcqError(f"{what} tensor {name + SCALE!r}: expected an F32 scalar (shape []), found "
                           f"{stored[name + SCALE]['dtype']} of shape {stored[name + SCALE]['shape']}")


def unpack(buf: bytes | memoryview, names: list[str], what: str) -> dict[str, np.ndarray]:
    """The float32 values of tensors ``names`` of a checked buffer (int8 ones times their scale)."""
    arrays = load_weights(buf)
    state = {}
    for k in names:
        v = np.asarray(arrays[k], np.float32)
        if k + SCALE in arrays:
            scale = float(arrays[k + SCALE])
            if not (np.isfinite(scale) and scale > 0):
                raise DcqError(f"{what} tensor {k + SCALE!r}: expected a finite scale > 0, found {scale}")
            v = v * np.float32(scale)
        state[k] = v
    return state
