"""The WGHT section: model weights as a safetensors buffer (never pickle)."""

from __future__ import annotations

import json
import struct

import numpy as np

from .errors import CorruptFile

MAX_HEADER = 100 << 20
_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
           "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def validate_safetensors(buf: bytes | memoryview, file_offset: int = 0) -> dict:
    """Check a safetensors buffer's structure without loading it; return its JSON header.

    Follows the safetensors rules: u64 little-endian header length, a JSON object of
    ``name -> {dtype, shape, data_offsets}`` (plus optional ``__metadata__``), then a byte
    buffer that the tensors cover exactly, without overlaps or holes.
    """

    def corrupt(msg: str, expected: object = None, found: object = None) -> CorruptFile:
        return CorruptFile(msg, section="WGHT", offset=file_offset, expected=expected, found=found)

    if len(buf) < 8:
        raise corrupt("too short for a safetensors header", ">= 8 bytes", len(buf))
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > MAX_HEADER or 8 + n > len(buf):
        raise corrupt("safetensors header length out of range", f"<= {min(MAX_HEADER, len(buf) - 8)}", n)
    try:
        header = json.loads(bytes(buf[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise corrupt(f"safetensors header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise corrupt("safetensors header is not an object")
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            size = _DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise corrupt(f"bad safetensors entry {name!r}") from None
        if any(s < 0 for s in shape) or end - begin != size * int(np.prod(shape, dtype=object)):
            raise corrupt(f"tensor {name!r} size does not match its shape", end - begin, shape)
        spans.append((begin, end))
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            raise corrupt("tensor data has a hole or an overlap", pos, begin)
        pos = end
    if pos != len(buf) - 8 - n:
        raise corrupt("tensor data does not fill the buffer", len(buf) - 8 - n, pos)
    return header


def load_weights(buf: bytes | memoryview) -> dict[str, np.ndarray]:
    """Tensors of a safetensors buffer as NumPy arrays."""
    from safetensors.numpy import load

    return load(bytes(buf))
