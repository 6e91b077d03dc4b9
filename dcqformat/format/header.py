"""Parsing of the fixed file header and the section table (spec/FORMAT.md, "File layout")."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .. import _layout as L
from ..errors import ChecksumMismatch, CorruptFile, NotADcqFile, TruncatedFile, UnsupportedVersion

# What the magic looks like after the transfers it is designed to catch.
_DAMAGED_MAGIC = {
    b"\x89DCQ\n\x1a\n": "a text-mode transfer turned \\r\\n into \\n",
    b"\x89DCQ\r\r\n\x1a\r\n": "a text-mode transfer turned \\n into \\r\\n",
    b"\x09DCQ\r\n\x1a\n": "a 7-bit transfer cleared the high bit",
}


@dataclass(frozen=True)
class Section:
    """One entry of the section table."""

    tag: bytes
    flags: int
    offset: int
    length: int
    crc: int

    @property
    def name(self) -> str:
        return self.tag.decode("ascii", "replace")


@dataclass(frozen=True)
class Header:
    """The fixed header and the section table."""

    major: int
    minor: int
    file_size: int
    table_offset: int
    sections: dict[bytes, Section]
    crc: int  # header_crc: through the table's CRC it covers every section's CRC


def check_magic(head: bytes, size: int) -> None:
    """Raise unless ``head`` (the first bytes of a file of ``size`` bytes) starts with the magic."""
    if head[:8] == L.MAGIC:
        return
    if size < len(L.MAGIC) and head == L.MAGIC[:size] and size > 0:
        raise TruncatedFile("file ends inside the magic", offset=0, expected=f">= {L.HEADER_SIZE} bytes",
                            found=f"{size} bytes")
    for damaged, why in _DAMAGED_MAGIC.items():
        if head.startswith(damaged):
            raise CorruptFile(f"the magic is damaged: {why}", offset=0, expected=L.MAGIC, found=damaged)
    if size == 0:
        raise NotADcqFile(f"not a dcq file: it is empty (0 bytes), expected {L.MAGIC!r} first")
    raise NotADcqFile(f"not a dcq file: starts with {head[:8]!r}, expected {L.MAGIC!r}")


def parse_header(buf: np.ndarray) -> Header:
    """Validate the header and the section table of a whole file held in ``buf``."""
    size = buf.size
    check_magic(buf[:16].tobytes(), size)
    if size < L.HEADER_SIZE:
        raise TruncatedFile("file ends inside the header", offset=size,
                            expected=f">= {L.HEADER_SIZE} bytes", found=f"{size} bytes")
    raw = buf[: L.HEADER_SIZE].tobytes()
    (_, major, minor, _flags, file_size, table_offset, count, table_crc, _, header_crc) = L.HEADER.unpack(raw)
    if major != L.VERSION_MAJOR:
        raise UnsupportedVersion(
            f"file is dcq version {major}.{minor}, this reader supports {L.VERSION_MAJOR}.x"
        )
    computed = zlib.crc32(raw[: L.HEADER_CRC_SPAN])
    if computed != header_crc:
        raise ChecksumMismatch("header", L.HEADER_CRC_SPAN, header_crc, computed)
    if file_size > size:
        raise TruncatedFile("file is shorter than its header says", offset=size,
                            expected=f"{file_size} bytes", found=f"{size} bytes")
    if file_size < size:
        raise CorruptFile("bytes after the end of the file", offset=file_size,
                          expected=f"{file_size} bytes", found=f"{size} bytes")
    if count > L.MAX_SECTIONS or not (table_offset >= L.HEADER_SIZE
                                      and table_offset + count * L.SECTION_SIZE == file_size):
        raise CorruptFile("section table out of place", offset=24,
                          expected=f"table of <= {L.MAX_SECTIONS} entries ending at {file_size}",
                          found=f"{count} entries at {table_offset}")
    table = buf[table_offset:file_size].tobytes()
    computed = zlib.crc32(table)
    if computed != table_crc:
        raise ChecksumMismatch("section table", table_offset, table_crc, computed)
    return Header(major, minor, file_size, table_offset, _parse_table(table, table_offset), header_crc)


def _parse_table(table: bytes, table_offset: int) -> dict[bytes, Section]:
    sections: dict[bytes, Section] = {}
    end_prev = L.HEADER_SIZE
    for k in range(len(table) // L.SECTION_SIZE):
        at = table_offset + k * L.SECTION_SIZE
        tag, flags, offset, length, crc, _ = L.SECTION.unpack_from(table, k * L.SECTION_SIZE)
        name = tag.decode("ascii", "replace")
        if tag in sections:
            raise CorruptFile(f"section {name} appears twice", section="section table", offset=at)
        if offset % L.ALIGN or offset < end_prev or offset + length > table_offset:
            raise CorruptFile(f"section {name} out of place", section="section table", offset=at,
                              expected=f"offset >= {end_prev}, multiple of {L.ALIGN}, end <= {table_offset}",
                              found=f"offset {offset}, length {length}")
        end_prev = offset + length
        if tag not in L.KNOWN_TAGS and not flags & L.SECTION_FLAG_SKIPPABLE:
            raise UnsupportedVersion(f"file needs section {name!r}, unknown to this reader")
        sections[tag] = Section(tag, flags, offset, length, crc)
    for tag in L.REQUIRED_TAGS:
        if tag not in sections:
            raise CorruptFile(f"required section {tag.decode()} is missing", section="section table",
                              offset=table_offset)
    return sections


def check_crc(buf: np.ndarray, section: Section) -> None:
    """Raise :class:`ChecksumMismatch` unless the section's bytes have its stored CRC-32."""
    computed = zlib.crc32(buf[section.offset : section.offset + section.length])
    if computed != section.crc:
        raise ChecksumMismatch(section.name, section.offset, section.crc, computed)


def pack_section(tag: bytes, offset: int, length: int, crc: int, flags: int = 0) -> bytes:
    """One entry of the section table."""
    return L.SECTION.pack(tag, flags, offset, length, crc, 0)


def pack_header(file_size: int, table_offset: int, table: bytes, minor: int = 0) -> bytes:
    """The 64-byte file header of a file whose section table ``table`` ends the file (a file
    carries the oldest minor version that has everything it uses)."""
    head = L.HEADER.pack(L.MAGIC, L.VERSION_MAJOR, minor, 0, file_size, table_offset,
                         len(table) // L.SECTION_SIZE, zlib.crc32(table), bytes(20), 0)
    return head[: L.HEADER_CRC_SPAN] + zlib.crc32(head[: L.HEADER_CRC_SPAN]).to_bytes(4, "little")
