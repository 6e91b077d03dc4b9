"""The ``.dcqi`` WebDataset member (spec/WEBDATASET.md): one sample, self-contained but for its
palettes, which live in a sidecar .dcq file. Encoded from a reader, parsed into
:class:`DcqiSample`, and turned into a :class:`dcqformat.decode.Streams` for decoding."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .. import _layout as L
from ..decode import Streams, bitpack, concat, kernels
from ..errors import ChecksumMismatch, CorruptFile, UnsupportedVersion
from .reader import DcqReader

DCQI_MAGIC = b"DCQI"
DCQI = struct.Struct("<4sBBBBIHHQHHI")  # magic, version, bits, channels, flags, palette, h, w, src, ph, pw, crc
DCQI_VERSION = 1  # members of packed streams; CODED ones are version 2 (spec/WEBDATASET.md §2)
DCQI_VERSIONS = (1, 2)
MASKED, CODED = 1, 2  # flags


@dataclass
class DcqiSample:
    """One parsed ``.dcqi`` member."""

    bits: int
    channels: int
    palette_id: int
    height: int
    width: int
    source_index: int
    patch: tuple[int, int] | None
    dropped: np.ndarray | None
    stream: np.ndarray
    coded: bool = False  # ``stream`` is the payload under the sidecar's codec, not yet a bit stream


def encode_dcqi(reader: DcqReader, i: int, coded: bool = False) -> bytes:
    """The ``.dcqi`` member of sample ``i``: its bit stream (unpacked from zstd), or with ``coded``
    and an unmasked sample of a codec other than packed, its payload as the file stores it
    (version 2, flag CODED: decoded with the sidecar's codec sections)."""
    h, w = (int(v) for v in reader.shapes[i])
    mask = reader.mask(i)
    coded = coded and mask is None and reader.codec != "packed"
    flags = MASKED if mask is not None else CODED if coded else 0
    ph, pw = reader.patch_size if mask is not None and reader.patch_size is not None else (0, 0)
    stream = reader.raw_payload(i) if coded else reader.payload(i)
    body = (bitpack.pack_mask(mask).tobytes() if mask is not None else b"") + stream.tobytes()
    head = DCQI.pack(DCQI_MAGIC, 2 if coded else DCQI_VERSION, reader.bits, reader.channels, flags,
                     int(reader.palette_ids[i]), h, w, int(reader.source_indices[i]), ph, pw, 0)
    return head[:-4] + zlib.crc32(head[:-4] + body).to_bytes(4, "little") + body


def parse_dcqi(data: bytes, check_crc: bool = True) -> DcqiSample:
    """Parse and check a ``.dcqi`` member; raise a :class:`DcqError` naming what is wrong.

    ``check_crc=False`` skips the member's own CRC, for members inside a checked ``.dcqb``."""
    if len(data) < DCQI.size or data[:4] != DCQI_MAGIC:
        raise CorruptFile("not a .dcqi member", section="dcqi", offset=0, expected=DCQI_MAGIC, found=data[:4])
    magic, version, bits, channels, flags, pid, h, w, src, ph, pw, crc = DCQI.unpack_from(data)
    if version not in DCQI_VERSIONS:
        raise UnsupportedVersion(f".dcqi version {version}, this reader supports {DCQI_VERSIONS}")
    if check_crc:
        computed = zlib.crc32(memoryview(data)[DCQI.size :], zlib.crc32(data[: DCQI.size - 4]))
        if computed != crc:
            raise ChecksumMismatch("dcqi", DCQI.size - 4, crc, computed)
    bad_patch = (ph < 1 or pw < 1) if flags & MASKED else (ph or pw)
    known = MASKED | CODED if version == 2 else MASKED
    bad_flags = flags & ~known or flags == MASKED | CODED  # a CODED member is unmasked
    if bits not in L.BITS or channels not in L.CHANNELS or h < 1 or w < 1 or bad_flags or bad_patch:
        raise CorruptFile("bad .dcqi header", section="dcqi", offset=4,
                          found=f"bits {bits}, channels {channels}, {h}x{w}, flags {flags}, patch {ph}x{pw}")
    if h * w > L.MAX_PIXELS:  # the .dcq reader's limit (spec §4), checked before anything is allocated
        raise CorruptFile("image too large", section="dcqi", offset=12, expected=f"<= {L.MAX_PIXELS} pixels",
                          found=f"{h}x{w}")
    pos, dropped, patch = DCQI.size, None, None
    pixels = h * w
    if flags & MASKED:
        patch = (ph, pw)
        gh, gw = bitpack.grid_shape(h, w, ph, pw)
        nbytes = bitpack.mask_nbytes(h, w, ph, pw)
        if pos + nbytes > len(data):  # the mask is bounded by the member's bytes
            raise CorruptFile("member ends inside its drop mask", section="dcqi", offset=pos,
                              expected=f">= {pos + nbytes} bytes", found=len(data))
        mask = np.frombuffer(data, np.uint8, nbytes, pos)
        kept = int(kernels.kept_pixel_counts(mask, np.zeros(1, np.int64), np.array([h]), np.array([w]), ph, pw)[0])
        if kept < 0:
            raise CorruptFile("mask padding bits are set", section="dcqi", offset=pos + nbytes - 1)
        dropped = bitpack.unpack_mask(mask, gh, gw)
        pos += nbytes
        pixels = kept
    stream = np.frombuffer(data, np.uint8, offset=pos)
    if flags & CODED:  # the sidecar's codec checks the payload when it decodes it
        if not stream.size:
            raise CorruptFile("empty payload", section="dcqi", offset=pos, expected=">= 1 byte", found=0)
        return DcqiSample(bits, channels, pid, h, w, src, None, None, stream, coded=True)
    if stream.size != bitpack.packed_size(pixels, bits):
        raise CorruptFile("payload size", section="dcqi", offset=pos,
                          expected=bitpack.packed_size(pixels, bits), found=stream.size)
    return DcqiSample(bits, channels, pid, h, w, src, patch, dropped, stream)


LABEL_RANGE = (-1, (1 << 31) - 1)  # -1: no label; the i32 of a .dcqb entry


def parse_label(data: bytes | str | int) -> int:
    """A ``.cls`` member's label: ASCII decimal digits with an optional sign (spec/WEBDATASET.md),
    -1 (none) or 0..2**31-1. Python's ``int()`` would also take ``1_0``, spaces inside and other
    digits than ASCII; this does not."""
    if isinstance(data, int) and not isinstance(data, bool):
        value = data
    else:
        raw = data.encode("utf-8", "replace") if isinstance(data, str) else bytes(data)
        text = raw.strip(b" \t\r\n")
        digits = text[1:] if text[:1] in (b"-", b"+") else text
        if not digits or len(digits) > 20 or not all(48 <= c <= 57 for c in digits):
            raise CorruptFile("label is not ASCII decimal digits", section="cls", expected="e.g. 3 or -1",
                              found=raw[:40])
        value = int(text)
    if not LABEL_RANGE[0] <= value <= LABEL_RANGE[1]:
        raise CorruptFile("label out of range", section="cls", expected=f"{LABEL_RANGE[0]}..{LABEL_RANGE[1]}",
                          found=value)
    return value


def streams_of(samples: list[DcqiSample], bits: int, patch: tuple[int, int] | None) -> Streams:
    """The :class:`~dcqformat.decode.Streams` of parsed members (of ``bits`` bits; masked ones of
    the sidecar's ``patch``)."""
    return concat([(s.stream, s.height, s.width, s.palette_id, s.dropped) for s in samples], bits, patch)


# -- .dcqb: a block of samples in one tar member (spec/WEBDATASET.md §2.1) ----------------------
DCQB_MAGIC = b"DCQB"
DCQB = struct.Struct("<4sBBHII")  # magic, version, reserved, reserved, count, crc
DCQB_ENTRY = struct.Struct("<Ii")  # length of the .dcqi that follows, label
DCQB_VERSION = 1
MAX_BLOCK_SAMPLES = 1 << 20


def encode_block(members: list[tuple[bytes, int]]) -> bytes:
    """One ``.dcqb`` member holding ``(dcqi bytes, label)`` of several samples."""
    body = b"".join(DCQB_ENTRY.pack(len(m), label) + m for m, label in members)
    head = DCQB.pack(DCQB_MAGIC, DCQB_VERSION, 0, 0, len(members), 0)
    return head[:-4] + zlib.crc32(head[:-4] + body).to_bytes(4, "little") + body


def parse_block(data: bytes) -> list[tuple[DcqiSample, int]]:
    """The samples and labels of a ``.dcqb`` member, every one checked (block CRC, then each
    ``.dcqi`` as :func:`parse_dcqi` does but its CRC, which the block's covers)."""
    if len(data) < DCQB.size or data[:4] != DCQB_MAGIC:
        raise CorruptFile("not a .dcqb member", section="dcqb", offset=0, expected=DCQB_MAGIC, found=data[:4])
    _, version, _, _, count, crc = DCQB.unpack_from(data)
    if version != DCQB_VERSION:
        raise UnsupportedVersion(f".dcqb version {version}, this reader supports {DCQB_VERSION}")
    computed = zlib.crc32(memoryview(data)[DCQB.size :], zlib.crc32(data[: DCQB.size - 4]))
    if computed != crc:
        raise ChecksumMismatch("dcqb", DCQB.size - 4, crc, computed)
    if count > min(MAX_BLOCK_SAMPLES, (len(data) - DCQB.size) // (DCQB_ENTRY.size + DCQI.size)):
        raise CorruptFile("sample count out of range", section="dcqb", offset=8, found=count)
    out, pos = [], DCQB.size
    for k in range(count):
        if pos + DCQB_ENTRY.size > len(data):
            raise CorruptFile(f"block ends inside sample {k}", section="dcqb", offset=pos)
        length, label = DCQB_ENTRY.unpack_from(data, pos)
        pos += DCQB_ENTRY.size
        if length < DCQI.size or pos + length > len(data):
            raise CorruptFile(f"sample {k} length out of range", section="dcqb", offset=pos - DCQB_ENTRY.size,
                              expected=f"{DCQI.size}..{len(data) - pos}", found=length)
        out.append((parse_dcqi(data[pos : pos + length], check_crc=False), int(label)))
        pos += length
    if pos != len(data):
        raise CorruptFile("bytes after the last sample", section="dcqb", offset=pos, expected=pos, found=len(data))
    return out
