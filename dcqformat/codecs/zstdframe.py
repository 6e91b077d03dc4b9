"""Checks of zstd payload frames before anything is decompressed (spec §5.2).

The zstandard library trusts a frame's declared content size over ``max_output_size`` and
accepts bytes after the first frame, so the reader walks each frame's header and block headers
first (RFC 8878 §3.1): exactly one frame filling the payload, its declared content size (when
present) equal to the size the record implies. Decompression then writes into a buffer of that
size, and no frame can make the reader allocate more.

:func:`frame_status` is the Numba kernel; :func:`frame_status_reference` is its plain-Python
twin, used by the tests only.
"""

from __future__ import annotations

import numpy as np

from ..decode.kernels import _helper, _kernel

OK = 0
NOT_A_FRAME = 1  # too short, or not the zstd magic (skippable frames included)
RESERVED_BITS = 2  # a reserved header bit or block type
FRAME_TRUNCATED = 3  # the blocks run past the payload
TRAILING_BYTES = 4  # bytes after the frame (a second frame, or junk)
WRONG_CONTENT_SIZE = 5  # the declared content size is not the expected size

MESSAGES = {
    NOT_A_FRAME: "is not a zstd frame",
    RESERVED_BITS: "has a reserved bit or block type set",
    FRAME_TRUNCATED: "ends inside its blocks",
    TRAILING_BYTES: "has bytes after its one frame",
    WRONG_CONTENT_SIZE: "declares a content size other than the record's",
}
_FCS_BYTES = (0, 2, 4, 8)
_DICT_BYTES = (0, 1, 2, 4)


@_helper
def _status(buf, off, length, expected):
    """The status of the frame ``buf[off : off + length]`` that should decode to ``expected`` bytes."""
    if length < 6:
        return NOT_A_FRAME
    if buf[off] != 0x28 or buf[off + 1] != 0xB5 or buf[off + 2] != 0x2F or buf[off + 3] != 0xFD:
        return NOT_A_FRAME
    fhd = buf[off + 4]
    if fhd & 0x08:
        return RESERVED_BITS
    single = (fhd >> 5) & 1
    fcs_flag = fhd >> 6
    fcs_bytes = 1 if fcs_flag == 0 and single else (0, 2, 4, 8)[fcs_flag]
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    if pos + fcs_bytes > length:
        return FRAME_TRUNCATED
    if fcs_bytes:
        size = np.int64(0)
        for k in range(fcs_bytes):
            size |= np.int64(buf[off + pos + k]) << np.int64(8 * k)
        if fcs_bytes == 2:
            size += 256
        if fcs_bytes == 8 and size < 0:  # above 2**63: certainly not the expected size
            return WRONG_CONTENT_SIZE
        if size != expected:
            return WRONG_CONTENT_SIZE
    pos += fcs_bytes
    while True:
        if pos + 3 > length:
            return FRAME_TRUNCATED
        head = np.int64(buf[off + pos]) | (np.int64(buf[off + pos + 1]) << 8) | (np.int64(buf[off + pos + 2]) << 16)
        pos += 3
        kind = (head >> 1) & 3
        if kind == 3:
            return RESERVED_BITS
        pos += 1 if kind == 1 else int(head >> 3)
        if pos > length:
            return FRAME_TRUNCATED
        if head & 1:
            break
    if (fhd >> 2) & 1:
        pos += 4
        if pos > length:
            return FRAME_TRUNCATED
    return OK if pos == length else TRAILING_BYTES


@_kernel()
def frame_status(data, offsets, lengths, expected):
    """Status of every frame ``data[offsets[s] : offsets[s] + lengths[s]]`` (uint8 codes above)."""
    out = np.zeros(offsets.shape[0], dtype=np.uint8)
    for s in range(offsets.shape[0]):
        out[s] = _status(data, offsets[s], lengths[s], expected[s])
    return out


def frame_status_reference(frame: bytes, expected: int) -> int:
    """Plain-Python twin of one :func:`frame_status` entry (tests only)."""
    if len(frame) < 6 or frame[:4] != b"\x28\xb5\x2f\xfd":
        return NOT_A_FRAME
    fhd = frame[4]
    if fhd & 0x08:
        return RESERVED_BITS
    single = bool(fhd & 0x20)
    fcs_bytes = 1 if (fhd >> 6) == 0 and single else _FCS_BYTES[fhd >> 6]
    pos = 5 + (0 if single else 1) + _DICT_BYTES[fhd & 3]
    if pos + fcs_bytes > len(frame):
        return FRAME_TRUNCATED
    if fcs_bytes:
        size = int.from_bytes(frame[pos : pos + fcs_bytes], "little") + (256 if fcs_bytes == 2 else 0)
        if size != expected:
            return WRONG_CONTENT_SIZE
    pos += fcs_bytes
    last = False
    while not last:
        if pos + 3 > len(frame):
            return FRAME_TRUNCATED
        head = int.from_bytes(frame[pos : pos + 3], "little")
        pos += 3
        last, kind = bool(head & 1), (head >> 1) & 3
        if kind == 3:
            return RESERVED_BITS
        pos += 1 if kind == 1 else head >> 3
        if pos > len(frame):
            return FRAME_TRUNCATED
    pos += 4 if fhd & 0x04 else 0
    if pos > len(frame):
        return FRAME_TRUNCATED
    return OK if pos == len(frame) else TRAILING_BYTES
