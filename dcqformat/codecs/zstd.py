"""Codec ``zstd`` (spec §5.2, id 1): each payload is one Zstandard frame of the bit-packed stream,
compressed with a dictionary (section ZDCT) trained on the file's first streams.

Decoding checks every frame's headers first (:mod:`dcqformat.codecs.zstdframe`: one frame, declared
size right, nothing after it), then decompresses into exactly the size the record implies.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import zstandard

from .. import _layout as L
from ..errors import CorruptFile
from . import zstdframe
from .base import Sample, Shapes


class _Encoder:
    def __init__(self, level: int, dictionary: bytes | None, dict_size: int, dict_samples: int) -> None:
        self.level, self.dictionary, self.dict_size = level, dictionary, dict_size
        self.warmup = dict_samples
        self._compressor: zstandard.ZstdCompressor | None = None

    def start(self, first: list[Sample]) -> None:
        if self.dictionary is None and len(first) >= 8:
            try:
                samples: list[bytes | bytearray | memoryview] = [s.stream for s in first]
                self.dictionary = zstandard.train_dictionary(self.dict_size, samples).as_bytes()
            except zstandard.ZstdError:
                self.dictionary = None  # too little or too uniform data: frames without dictionary
        zd = zstandard.ZstdCompressionDict(self.dictionary) if self.dictionary else None
        self._compressor = zstandard.ZstdCompressor(level=self.level, dict_data=zd, write_checksum=False,
                                                    write_content_size=False, write_dict_id=False)

    def encode(self, sample: Sample) -> bytes:
        assert self._compressor is not None, "start() first"
        return self._compressor.compress(sample.stream)

    def sections(self) -> dict[bytes, bytes]:
        return {L.TAG_ZDCT: self.dictionary} if self.dictionary else {}


class _Decoder:
    needs_sizes = True
    in_place = False

    def __init__(self, dictionary: zstandard.ZstdCompressionDict | None) -> None:
        self._dict = dictionary
        self._local = threading.local()  # a ZstdDecompressor is not thread-safe: one per thread

    def check_lengths(self, first: int, lengths: np.ndarray, sizes: np.ndarray, recs_offset: int) -> None:
        pass  # a frame's length says nothing of its content; frames are checked when decoded

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        """This thread's decompressor (python-zstandard's are not safe to share between threads)."""
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = zstandard.ZstdDecompressor(dict_data=self._dict)
        return dctx

    def decode(self, data: np.ndarray, idx: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
               sizes: np.ndarray, data_offset: int, shapes: Shapes) -> tuple[np.ndarray, np.ndarray]:
        status = zstdframe.frame_status(data, offsets, lengths, sizes)
        if status.any():
            k = int(np.argmax(status != 0))
            raise CorruptFile(f"sample {int(idx[k])}: payload {zstdframe.MESSAGES[int(status[k])]}", section="DATA",
                              offset=data_offset + int(offsets[k]),
                              expected=f"one zstd frame of {int(lengths[k])} bytes decoding to {int(sizes[k])} bytes",
                              found=f"status {int(status[k])}")
        frames: list[bytes | bytearray | memoryview] = [memoryview(data[o : o + ln])
                                                        for o, ln in zip(offsets.tolist(), lengths.tolist())]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        buffer = np.empty(int(starts[-1]) + 1, np.uint8)
        buffer[-1] = 0  # one byte more than the streams, as the decode kernels expect
        parts: list = []
        if sizes.all():  # the batch call cannot take empty outputs (masked samples with every patch dropped)
            try:
                result = self._decompressor().multi_decompress_to_buffer(
                    frames, decompressed_sizes=sizes.astype(np.uint64).tobytes())
                parts = [result[k] for k in range(len(result))]
            except zstandard.ZstdError:
                parts = []
        if [len(p) for p in parts] != sizes.tolist():
            parts = [self._one(i, f, n) for i, f, n in zip(idx.tolist(), frames, sizes.tolist())]  # names the bad one
        for k, part in enumerate(parts):  # one copy, into place
            buffer[starts[k] : starts[k + 1]] = np.frombuffer(part, np.uint8)
        return buffer, starts[:-1]

    def _one(self, i: int, frame: bytes | bytearray | memoryview, size: int) -> bytes:
        try:
            out = self._decompressor().decompress(frame, max_output_size=max(size, 1))
        except zstandard.ZstdError as exc:
            raise CorruptFile(f"sample {i}: zstd frame does not decode ({exc})", section="DATA") from None
        if len(out) != size:
            raise CorruptFile(f"sample {i}: zstd frame has the wrong size", section="DATA",
                              expected=f"{size} bytes", found=f"{len(out)} bytes")
        return out


@dataclass(frozen=True)
class Zstd:
    id: int = 1
    name: str = "zstd"
    max_bits: int = 8

    def encoder(self, bits: int, level: int, dictionary: bytes | None, dict_size: int, dict_samples: int) -> _Encoder:
        return _Encoder(level, dictionary, dict_size, dict_samples)

    def decoder(self, sections: dict[bytes, tuple[int, np.ndarray]], bits: int) -> _Decoder:
        if L.TAG_ZDCT not in sections:
            return _Decoder(None)
        offset, buf = sections[L.TAG_ZDCT]
        try:
            return _Decoder(zstandard.ZstdCompressionDict(buf.tobytes()))
        except zstandard.ZstdError as exc:
            raise CorruptFile(f"bad zstd dictionary ({exc})", section="ZDCT", offset=offset) from None


CODEC = Zstd()
