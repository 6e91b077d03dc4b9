"""The ``.dcqi`` WebDataset member (spec/WEBDATASET.md): one sample, self-contained but for its
palettes, which live in a sidecar .dcq file. Encoded from a reader, parsed into
:class:`DcqiSample`, and turned into a :class:`dcqformat.decode.Streams` for decoding."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from . import _layout as L
from . import bitpack
from .decode import Streams, concat
from .errors import ChecksumMismatch, CorruptFile, UnsupportedVersion
from .reader import DcqReader

DCQI_MAGIC = b"DCQI"
DCQI = struct.Struct("<4sBBBBIHHQHHI")  # magic, version, bits, channels, flags, palette, h, w, src, ph, pw, crc
DCQI_VERSION = 1


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


def encode_dcqi(reader: DcqReader, i: int) -> bytes:
    """The ``.dcqi`` member of sample ``i`` (its stream is stored unpacked from zstd)."""
    h, w = (int(v) for v in reader.shapes[i])
    mask = reader.mask(i)
    flags = 1 if mask is not None else 0
    ph, pw = reader.patch_size if mask is not None and reader.patch_size is not None else (0, 0)
    body = (bitpack.pack_mask(mask).tobytes() if mask is not None else b"") + reader.payload(i).tobytes()
    head = DCQI.pack(DCQI_MAGIC, DCQI_VERSION, reader.bits, reader.channels, flags,
                     int(reader.palette_ids[i]), h, w, int(reader.source_indices[i]), ph, pw, 0)
    return head[:-4] + zlib.crc32(head[:-4] + body).to_bytes(4, "little") + body


def parse_dcqi(data: bytes) -> DcqiSample:
    """Parse and check a ``.dcqi`` member; raise a :class:`DcqError` naming what is wrong."""
    if len(data) < DCQI.size or data[:4] != DCQI_MAGIC:
        raise CorruptFile("not a .dcqi member", section="dcqi", offset=0, expected=DCQI_MAGIC, found=data[:4])
    magic, version, bits, channels, flags, pid, h, w, src, ph, pw, crc = DCQI.unpack_from(data)
    if version != DCQI_VERSION:
        raise UnsupportedVersion(f".dcqi version {version}, this reader supports {DCQI_VERSION}")
    computed = zlib.crc32(data[: DCQI.size - 4] + data[DCQI.size :])
    if computed != crc:
        raise ChecksumMismatch("dcqi", DCQI.size - 4, crc, computed)
    bad_patch = flags and (ph < 1 or pw < 1)
    if bits not in L.BITS or channels not in L.CHANNELS or h < 1 or w < 1 or flags & ~1 or bad_patch:
        raise CorruptFile("bad .dcqi header", section="dcqi", offset=4,
                          found=f"bits {bits}, channels {channels}, {h}x{w}, flags {flags}, patch {ph}x{pw}")
    pos, dropped, patch = DCQI.size, None, None
    pixels = h * w
    if flags:
        patch = (ph, pw)
        gh, gw = bitpack.grid_shape(h, w, ph, pw)
        nbytes = bitpack.mask_nbytes(h, w, ph, pw)
        dropped = bitpack.unpack_mask(np.frombuffer(data, np.uint8, nbytes, pos), gh, gw)
        pos += nbytes
        pixels = bitpack.kept_pixel_order(h, w, ph, pw, dropped).size
    stream = np.frombuffer(data, np.uint8, offset=pos)
    if stream.size != bitpack.packed_size(pixels, bits):
        raise CorruptFile("payload size", section="dcqi", offset=pos,
                          expected=bitpack.packed_size(pixels, bits), found=stream.size)
    return DcqiSample(bits, channels, pid, h, w, src, patch, dropped, stream)


def streams_of(samples: list[DcqiSample], bits: int, patch: tuple[int, int] | None) -> Streams:
    """The :class:`~dcqformat.decode.Streams` of parsed members (of ``bits`` bits; masked ones of
    the sidecar's ``patch``)."""
    return concat([(s.stream, s.height, s.width, s.palette_id, s.dropped) for s in samples], bits, patch)
