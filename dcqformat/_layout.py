"""Every byte-level constant of the .dcq format, in one place.

spec/FORMAT.md documents exactly these values; a change here is a change to the spec.
All multi-byte integers are little-endian (``<``), whatever the host.
"""

from __future__ import annotations

import struct

MAGIC = b"\x89DCQ\r\n\x1a\n"
VERSION_MAJOR = 1
VERSION_MINOR = 4  # the newest minor version this code reads and writes
# The version a writer puts in a file of each codec: the oldest that has it.
MINOR_OF_CODEC = {0: 0, 1: 0, 2: 1, 3: 2, 4: 3}
MINOR_OF_PCOR = 4  # a file with per-sample palette corrections

ALIGN = 64  # every section starts at a multiple of this

# File header: magic, major, minor, flags, file_size, table_offset, section_count,
# table_crc, 20 reserved bytes, header_crc (CRC-32 of bytes 0..59).
HEADER = struct.Struct("<8sHHIQQII20sI")
HEADER_SIZE = HEADER.size  # 64
HEADER_CRC_SPAN = 60

# Section table entry: tag, flags, offset, length, crc32, reserved.
SECTION = struct.Struct("<4sIQQII")
SECTION_SIZE = SECTION.size  # 32
SECTION_FLAG_SKIPPABLE = 1

TAG_DATA = b"DATA"
TAG_RECS = b"RECS"
TAG_MASK = b"MASK"
TAG_DCRC = b"DCRC"
TAG_PALT = b"PALT"
TAG_ZDCT = b"ZDCT"
TAG_WGHT = b"WGHT"
TAG_META = b"META"
TAG_CTXM = b"CTXM"
TAG_DEQW = b"DEQW"
TAG_CTXG = b"CTXG"
TAG_PCOR = b"PCOR"
REQUIRED_TAGS = (TAG_DATA, TAG_RECS, TAG_DCRC, TAG_PALT, TAG_META)
KNOWN_TAGS = REQUIRED_TAGS + (TAG_MASK, TAG_PCOR, TAG_ZDCT, TAG_CTXM, TAG_CTXG, TAG_WGHT, TAG_DEQW)
CODEC_TAGS = (TAG_CTXM, TAG_ZDCT, TAG_CTXG)  # the sections a codec writes of its own (its model)
MODEL_TAGS = (TAG_WGHT, TAG_DEQW)  # safetensors sections: the MAE, the learned dequantizer
SKIPPABLE_TAGS = (TAG_DEQW,)  # written with the SKIPPABLE bit: a reader without it decodes as before
# Order in which a writer lays sections out (canonical files).
WRITE_ORDER = (TAG_DATA, TAG_RECS, TAG_MASK, TAG_DCRC, TAG_PALT, TAG_PCOR, TAG_ZDCT, TAG_CTXM, TAG_CTXG, TAG_WGHT,
               TAG_DEQW, TAG_META)

# PALT: palette_count, bits, channels, reserved; then P * 2**bits * channels uint8.
PALT_HEADER = struct.Struct("<IBBH")
# PCOR: sample_count, step, 3 reserved; then per sample K * C signed 4-bit deltas, two per byte
# (low nibble first): sample i's palette is PALT[palette_id] + step * delta, clipped to 0..255.
PCOR_HEADER = struct.Struct("<IB3s")
PCOR_MAX_BITS = 4  # corrections are for palettes of 1..4 bits
PCOR_DELTAS = range(-8, 8)
# RECS: sample_count, row_stride, field_count, codec, 7 reserved; then descriptors, then rows.
RECS_HEADER = struct.Struct("<QIIB7s")
FIELD = struct.Struct("<BBHIqq")  # mode, width, column, reserved, base, step
RECS_ROWS_ALIGN = 64  # rows start at a multiple of this inside RECS
# MASK: patch_h, patch_w, reserved; then mask bitmaps.
MASK_HEADER = struct.Struct("<HHI")
# DCRC: block_size, reserved, block_count; then block_count * uint32 CRC-32.
DCRC_HEADER = struct.Struct("<IIQ")

FIELDS = (
    "palette_id",
    "label",
    "height",
    "width",
    "source_index",
    "payload_offset",
    "payload_length",
    "mask_offset",
    "flags",
)
SIGNED_FIELDS = frozenset({"label"})
UNSIGNED64_FIELDS = frozenset({"source_index"})  # read as uint64: any u64 value is valid
MODE_STORED = 0
MODE_AFFINE = 1
STORED_WIDTHS = (1, 2, 4, 8)

RECORD_FLAG_MASKED = 1
RECORD_FLAGS_KNOWN = RECORD_FLAG_MASKED

CODEC_PACKED = 0
CODEC_ZSTD = 1
CODEC_CTX = 2
CODEC_CTXS = 3
CODEC_CTXG = 4
CODECS = {"packed": CODEC_PACKED, "zstd": CODEC_ZSTD, "ctx": CODEC_CTX, "ctxs": CODEC_CTXS, "ctxg": CODEC_CTXG}
CODEC_NAMES = {v: k for k, v in CODECS.items()}

# Format limits.
MIN_BITS = 1
MAX_BITS = 8
BITS = range(MIN_BITS, MAX_BITS + 1)  # the one definition of a valid bit depth: ``bits in BITS``
MAX_SIDE = 65535
CHANNELS = (1, 3)
MIN_BLOCK = 4096
MAX_BLOCK = 1 << 30

# Implementation limits: a reader refuses larger values before allocating anything.
MAX_SECTIONS = 64
MAX_META_BYTES = 16 << 20
MAX_PIXELS = 1 << 28
MAX_PALETTES = 1 << 24
