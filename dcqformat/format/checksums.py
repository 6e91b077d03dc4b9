"""Section DCRC (spec §6): a CRC-32 per block of DATA, both directions.

:class:`BlockCrcWriter` computes the whole-section CRC and the block CRCs as DATA streams out;
:class:`BlockChecks` parses the section and verifies blocks lazily, each once per open file.
"""

from __future__ import annotations

import tempfile
import zlib

import numpy as np

from .. import _layout as L
from ..decode import kernels
from ..errors import ChecksumMismatch, CorruptFile


class BlockCrcWriter:
    """CRC-32 of the whole DATA section and of each of its blocks, computed as bytes stream in."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.total = 0
        self.crc = 0
        self.block_crc = 0
        self.in_block = 0
        self.blocks = tempfile.TemporaryFile()
        self.nblocks = 0

    def update(self, data: bytes) -> None:
        self.total += len(data)
        self.crc = zlib.crc32(data, self.crc)
        view = memoryview(data)
        while view:
            take = min(len(view), self.block_size - self.in_block)
            self.block_crc = zlib.crc32(view[:take], self.block_crc)
            self.in_block += take
            view = view[take:]
            if self.in_block == self.block_size:
                self._flush()

    def _flush(self) -> None:
        self.blocks.write(self.block_crc.to_bytes(4, "little"))
        self.nblocks += 1
        self.block_crc = 0
        self.in_block = 0

    def section(self) -> bytes:
        """The DCRC section's bytes (call once, at the end)."""
        if self.in_block:
            self._flush()
        self.blocks.seek(0)
        body = self.blocks.read()
        self.blocks.close()
        return L.DCRC_HEADER.pack(self.block_size, 0, self.nblocks) + body


class BlockChecks:
    """The DCRC section of an open file, verifying DATA (``data``, at file offset ``data_offset``)."""

    def __init__(self, buf: np.ndarray, file_offset: int, data: np.ndarray, data_offset: int) -> None:
        if buf.size < L.DCRC_HEADER.size:
            raise CorruptFile("too short for its header", section="DCRC", offset=file_offset,
                              expected=f">= {L.DCRC_HEADER.size} bytes", found=buf.size)
        block, _, count = L.DCRC_HEADER.unpack_from(buf, 0)
        want = -(-data.size // block) if block else -1
        if block & (block - 1) or not L.MIN_BLOCK <= block <= L.MAX_BLOCK or count != want \
                or buf.size != L.DCRC_HEADER.size + 4 * count:
            raise CorruptFile("bad block checksum table", section="DCRC", offset=file_offset,
                              expected=f"power-of-two block size, {want} blocks",
                              found=f"block size {block}, {count} blocks, {buf.size} bytes")
        self.data, self.data_offset = data, data_offset
        self.block_size = int(block)
        self.shift = self.block_size.bit_length() - 1
        self.crcs = buf[L.DCRC_HEADER.size :].view("<u4")
        self.verified = np.zeros(count, dtype=np.bool_)
        self.unverified = int(count)

    def check(self, starts: np.ndarray, ends: np.ndarray) -> None:
        """Verify every block that the byte ranges ``[starts, ends)`` of DATA touch."""
        if not self.unverified or kernels.blocks_verified(self.verified, starts, ends, self.shift):
            return
        for s, e in zip(starts.tolist(), ends.tolist()):
            for blk in range(s >> self.shift, ((e - 1) >> self.shift) + 1 if e > s else 0):
                if not self.verified[blk]:
                    self.verify_block(blk)

    def verify_block(self, blk: int) -> None:
        lo = blk << self.shift
        computed = zlib.crc32(memoryview(self.data[lo : lo + self.block_size]))
        stored = int(self.crcs[blk])
        if computed != stored:
            raise ChecksumMismatch("DATA", self.data_offset + lo, stored, computed, block=blk,
                                   span=(lo, min(lo + self.block_size, self.data.size)))
        self.verified[blk] = True
        self.unverified -= 1

    def verify_all(self) -> None:
        for blk in range(len(self.verified)):
            self.verify_block(blk)
