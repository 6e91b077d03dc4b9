"""Codec ``ctx`` (spec §5.3, id 2): each payload is the sample's index map coded with rANS under
the file's context model (section ``CTXM``), which the writer counts on its first samples.

The kernels are in :mod:`dcqformat.codecs.rans`; this module builds, serialises and checks the model.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .. import _layout as L
from ..decode import bitpack
from ..errors import CorruptFile
from . import rans
from .base import Sample, Shapes

# CTXM: bits, prob_bits, reserved u16, context_count u32; then a zlib stream of
# context_count * 2**bits u16 frequencies (each context's row sums to 2**prob_bits).
CTXM_HEADER = struct.Struct("<BBHI")


def normalise(counts: np.ndarray) -> np.ndarray:
    """(C, K) symbol counts -> (C, K) frequencies, each >= 1 (a symbol the model has not seen can
    still be coded), each row summing to ``PROB_SCALE``: the encoder's choice, not the spec's."""
    counts = np.asarray(counts, np.int64)
    c, k = counts.shape
    spare = rans.PROB_SCALE - k
    total = counts.sum(axis=1, keepdims=True)
    freqs = 1 + np.where(total > 0, counts * spare // np.maximum(total, 1), spare // k)
    short = rans.PROB_SCALE - freqs.sum(axis=1)
    freqs[np.arange(c), np.argmax(np.where(total > 0, counts, 0), axis=1)] += short
    return freqs


def cumulative(freqs: np.ndarray) -> np.ndarray:
    """(C, K) frequencies -> (C, K + 1) int32 cumulative table, as the kernels take it."""
    cum = np.zeros((freqs.shape[0], freqs.shape[1] + 1), np.int32)
    np.cumsum(freqs, axis=1, out=cum[:, 1:])
    return cum


def pixels(sample: Sample, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """A sample's flat index map (dropped pixels 0) and its kept-pixel mask, from its stream."""
    n = sample.height * sample.width
    work = np.zeros(n, np.uint8)
    kept = np.ones(n, bool)
    if sample.dropped is None or sample.patch is None:
        work[:] = bitpack.unpack_indices(np.frombuffer(sample.stream, np.uint8), bits, n)
    else:
        order = bitpack.kept_pixel_order(sample.height, sample.width, *sample.patch, sample.dropped)
        work[order] = bitpack.unpack_indices(np.frombuffer(sample.stream, np.uint8), bits, order.size)
        kept[:] = False
        kept[order] = True
    return work, kept


class _Encoder:
    def __init__(self, bits: int, warmup: int) -> None:
        if bits > rans.MAX_BITS:
            raise ValueError(f"codec ctx codes 1..{rans.MAX_BITS}-bit maps, not {bits}: use packed or zstd")
        self.bits, self.warmup = bits, warmup
        self.cum: np.ndarray | None = None
        self.freqs: np.ndarray | None = None

    def _prepared(self, sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        work, kept = pixels(sample, self.bits)
        ctx = rans.contexts(work, kept, sample.height, sample.width, self.bits, np.empty(work.size, np.int64))
        return work, kept, ctx

    def start(self, first: list[Sample]) -> None:
        counts = np.zeros((rans.context_count(self.bits), 1 << self.bits), np.int64)
        for sample in first:
            rans.count(*self._prepared(sample), counts)
        self.freqs = normalise(counts)
        self.cum = cumulative(self.freqs)

    def encode(self, sample: Sample) -> bytes:
        assert self.cum is not None, "start() first"
        work, kept, ctx = self._prepared(sample)
        buf = np.empty(2 * work.size + 8, np.uint8)
        start = rans.encode(work, kept, ctx, self.cum, buf)
        return buf[start:].tobytes()

    def sections(self) -> dict[bytes, bytes]:
        assert self.freqs is not None, "start() first"
        table = zlib.compress(self.freqs.astype("<u2").tobytes(), 9)
        return {L.TAG_CTXM: CTXM_HEADER.pack(self.bits, rans.PROB_BITS, 0, self.freqs.shape[0]) + table}


class _Decoder:
    needs_sizes = True
    in_place = False

    def __init__(self, cum: np.ndarray, bits: int) -> None:
        self.cum, self.bits = cum, bits

    def check_lengths(self, first: int, lengths: np.ndarray, sizes: np.ndarray, recs_offset: int) -> None:
        ok = lengths >= 4
        if not ok.all():
            i = int(np.argmin(ok))
            raise CorruptFile(f"record {first + i}: bad payload_length", section="RECS", offset=recs_offset,
                              expected=">= 4 (the rANS state)", found=int(lengths[i]))

    def decode(self, data: np.ndarray, idx: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
               sizes: np.ndarray, data_offset: int, shapes: Shapes) -> tuple[np.ndarray, np.ndarray]:
        out_offsets = np.zeros(idx.size, np.int64)
        np.cumsum(sizes[:-1], out=out_offsets[1:])
        out = np.zeros(int(sizes.sum()) + 1, np.uint8)
        status = np.zeros(idx.size, np.int64)
        patch = shapes.patch or (1, 1)
        mask_offsets = shapes.mask_offsets if shapes.mask_offsets is not None else np.full(idx.size, -1, np.int64)
        mask_data = shapes.mask_data if shapes.mask_data is not None else np.zeros(1, np.uint8)
        rans.decode_batch(data, offsets, lengths, shapes.heights, shapes.widths, mask_data, mask_offsets,
                          patch[0], patch[1], self.bits, self.cum, out, out_offsets, status)
        if status.any():
            k = int(np.argmax(status != 0))
            size = f"{int(shapes.heights[k])}x{int(shapes.widths[k])}"
            raise CorruptFile(f"sample {int(idx[k])}: ctx payload {rans.MESSAGES[int(status[k])]}", section="DATA",
                              offset=data_offset + int(offsets[k]), found=f"status {int(status[k])}",
                              expected=f"{int(lengths[k])} bytes decoding a {size} map")
        return out, out_offsets


def parse_model(buf: np.ndarray, offset: int, bits: int) -> np.ndarray:
    """The (C, K + 1) cumulative table of a CTXM section, checked (spec §5.3)."""
    def corrupt(what: str, expected: object, found: object) -> CorruptFile:
        return CorruptFile(what, section="CTXM", offset=offset, expected=expected, found=found)

    raw = buf.tobytes()
    if len(raw) < CTXM_HEADER.size:
        raise corrupt("too short for its header", f">= {CTXM_HEADER.size} bytes", len(raw))
    model_bits, prob_bits, _, count = CTXM_HEADER.unpack_from(raw, 0)
    if model_bits != bits or bits > rans.MAX_BITS:
        raise corrupt("bits differ from PALT's or exceed the codec's", f"{bits} (<= {rans.MAX_BITS})", model_bits)
    if prob_bits != rans.PROB_BITS:
        raise corrupt("unsupported probability precision", rans.PROB_BITS, prob_bits)
    if count != rans.context_count(bits):
        raise corrupt("wrong context count", rans.context_count(bits), count)
    want = count * (1 << bits) * 2
    inflater = zlib.decompressobj()
    try:
        table = inflater.decompress(raw[CTXM_HEADER.size :], want)
    except zlib.error as exc:
        raise corrupt(f"frequency table does not inflate ({exc})", "a zlib stream", "bad data") from None
    if len(table) != want or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise corrupt("frequency table of the wrong size", f"a complete zlib stream of {want} bytes",
                      f"{len(table)} bytes{'' if inflater.eof else ', unfinished'}"
                      f"{', trailing data' if inflater.unconsumed_tail or inflater.unused_data else ''}")
    freqs = np.frombuffer(table, "<u2").reshape(count, 1 << bits).astype(np.int64)
    sums = freqs.sum(axis=1)
    if (sums != rans.PROB_SCALE).any():
        c = int(np.argmax(sums != rans.PROB_SCALE))
        raise corrupt(f"context {c}: frequencies do not sum to 2**{rans.PROB_BITS}", rans.PROB_SCALE, int(sums[c]))
    return cumulative(freqs)


@dataclass(frozen=True)
class Ctx:
    id: int = 2
    name: str = "ctx"

    def encoder(self, bits: int, level: int, dictionary: bytes | None, dict_size: int, dict_samples: int) -> _Encoder:
        return _Encoder(bits, dict_samples)

    def decoder(self, sections: dict[bytes, tuple[int, np.ndarray]], bits: int) -> _Decoder:
        if L.TAG_CTXM not in sections:
            raise CorruptFile("codec ctx needs a CTXM section", section="CTXM", expected="present", found="absent")
        offset, buf = sections[L.TAG_CTXM]
        return _Decoder(parse_model(buf, offset, bits), bits)


CODEC = Ctx()
