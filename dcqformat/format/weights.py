"""The WGHT section: model weights as a safetensors buffer (never pickle).

:func:`validate_safetensors` checks the structure strictly (the rules of the safetensors
format: JSON header of ``name -> {dtype, shape, data_offsets}`` with integer shapes and
offsets, ``__metadata__`` a string-to-string map, tensors covering the data exactly).
:func:`load_weights` then reads the tensors with NumPy from the checked header: every
safetensors dtype is read, the ones NumPy lacks (BF16, F8_E4M3, F8_E5M2) as float32.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np

from .. import _json as strict_json
from ..errors import CorruptFile, UnsupportedVersion
from .files import open_regular

MAX_HEADER = 100 << 20
MAX_TENSOR_DIMS = 64
# safetensors dtype -> (bytes per value, NumPy dtype the raw values are read as)
_DTYPES: dict[str, tuple[int, str]] = {
    "F64": (8, "<f8"), "F32": (4, "<f4"), "F16": (2, "<f2"), "BF16": (2, "<u2"),
    "F8_E4M3": (1, "u1"), "F8_E5M2": (1, "u1"),
    "I64": (8, "<i8"), "I32": (4, "<i4"), "I16": (2, "<i2"), "I8": (1, "i1"),
    "U64": (8, "<u8"), "U32": (4, "<u4"), "U16": (2, "<u2"), "U8": (1, "u1"), "BOOL": (1, "?"),
}


def _e4m3_table() -> np.ndarray:
    """float32 value of every F8_E4M3 byte (OCP 'E4M3FN': bias 7, no infinities, S.1111.111 NaN)."""
    b = np.arange(256)
    sign = np.where(b & 0x80, -1.0, 1.0)
    exp, man = (b >> 3) & 0xF, b & 7
    value = np.where(exp == 0, man / 8 * 2.0**-6, (1 + man / 8) * 2.0 ** (exp - 7))
    value = np.where((exp == 15) & (man == 7), np.nan, value)
    return (sign * value).astype(np.float32)


_E4M3 = _e4m3_table()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_safetensors(buf: bytes | memoryview | np.ndarray, file_offset: int = 0,
                         length: int | None = None, section: str = "WGHT") -> dict[str, Any]:
    """Check a safetensors buffer's structure without loading it; return its JSON header.
    ``length``: the whole buffer's length when ``buf`` holds only its start (at least the header).

    Follows the safetensors rules: u64 little-endian header length, a JSON object of
    ``name -> {dtype, shape, data_offsets}`` (plus optional ``__metadata__``, strings only), then
    a byte buffer that the tensors cover exactly, without overlaps or holes.
    """

    def corrupt(msg: str, expected: object = None, found: object = None) -> CorruptFile:
        return CorruptFile(msg, section=section, offset=file_offset, expected=expected, found=found)

    total = len(buf) if length is None else length
    if len(buf) < 8:
        raise corrupt("too short for a safetensors header", ">= 8 bytes", total)
    (n,) = struct.unpack_from("<Q", memoryview(buf), 0)
    if n > MAX_HEADER or 8 + n > min(total, len(buf)):
        raise corrupt("safetensors header length out of range", f"<= {min(MAX_HEADER, total - 8)}", n)
    try:
        header = strict_json.loads(bytes(buf[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise corrupt(f"safetensors header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise corrupt("safetensors header is not an object")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise corrupt("safetensors __metadata__ is not a map of strings", "strings",
                      next((type(v).__name__ for v in meta.values() if not isinstance(v, str)), type(meta).__name__)
                      if isinstance(meta, dict) else type(meta).__name__)
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not isinstance(info.get("dtype"), str):
            raise corrupt(f"tensor {name!r}: entry is not {{dtype, shape, data_offsets}}")
        if info["dtype"] not in _DTYPES:
            raise UnsupportedVersion(f"tensor {name!r} has dtype {info['dtype']!r}, unknown to this reader "
                                     f"(it reads {', '.join(_DTYPES)})")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or len(shape) > MAX_TENSOR_DIMS or not all(_is_int(s) and s >= 0
                                                                                    for s in shape):
            raise corrupt(f"tensor {name!r}: shape is not a list of integers >= 0", "[int, ...]", shape)
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(x) and x >= 0 for x in offsets):
            raise corrupt(f"tensor {name!r}: data_offsets is not two integers >= 0", "[begin, end]", offsets)
        begin, end = offsets
        if end - begin != _DTYPES[info["dtype"]][0] * int(np.prod(shape, dtype=object)):
            raise corrupt(f"tensor {name!r} size does not match its shape", end - begin, shape)
        spans.append((begin, end))
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            raise corrupt("tensor data has a hole or an overlap", pos, begin)
        pos = end
    if pos != total - 8 - n:
        raise corrupt("tensor data does not fill the buffer", total - 8 - n, pos)
    return header


def read_safetensors(path: str | os.PathLike[str]) -> bytes:
    """A safetensors file's bytes, read whole only once its header is checked against the file's
    size (a regular file; header length bounded by ``MAX_HEADER``; tensors filling the rest)."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        n = struct.unpack_from("<Q", head, 0)[0] if len(head) == 8 else 0
        if len(head) == 8 and n <= min(MAX_HEADER, size - 8):
            head += f.read(n)
        validate_safetensors(head, length=size, section=f"safetensors file {os.fspath(path)}")
        return head + f.read()


def load_weights(buf: bytes | memoryview | np.ndarray) -> dict[str, np.ndarray]:
    """Tensors of a safetensors buffer as NumPy arrays (checked first; BF16 and F8 as float32)."""
    header = validate_safetensors(buf)
    data = np.frombuffer(buf, dtype=np.uint8)[8 + struct.unpack_from("<Q", memoryview(buf), 0)[0] :]
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end].view(_DTYPES[info["dtype"]][1]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F8_E5M2":  # the high byte of an IEEE half
            raw = (raw.astype(np.uint16) << 8).view(np.float16).astype(np.float32)
        elif info["dtype"] == "F8_E4M3":
            raw = _E4M3[raw]
        out[name] = np.array(raw)  # a copy: writable, not tied to the file's memory map
    return out
