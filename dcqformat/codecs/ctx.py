"""Codecs ``ctx`` (spec §5.3, id 2) and ``ctxs`` (§5.4, id 3): each payload is the sample's index
map coded with rANS under the file's context model (section ``CTXM``), which the writer counts on
its first samples. ``ctxs`` codes each image as independent horizontal stripes, so that a crop
decodes only the stripes it touches and the stripes of one image decode in parallel lanes.

The kernels are in :mod:`dcqformat.codecs.rans`; this module builds, serialises and checks the model.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import _layout as L
from ..decode import bitpack
from ..errors import CorruptFile
from . import rans
from .base import Sample, Shapes

# CTXM: bits, prob_bits, stripe_rows u16 (ctxs; reserved 0 with ctx), context_count u32; then a
# zlib stream of context_count * 2**bits u16 frequencies (each context's row sums to 2**prob_bits).
CTXM_HEADER = struct.Struct("<BBHI")
STRIPE_ROWS = 64  # the writer's stripe height for ctxs (spec §5.4: what it costs in bytes)


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


def stripes(height: int, stripe_rows: int) -> list[tuple[int, int]]:
    """The (first row, rows) of each stripe of an image ``height`` rows high (spec §5.3)."""
    rows = height if stripe_rows == 0 else min(stripe_rows, height)
    return [(y, min(rows, height - y)) for y in range(0, height, rows)]


class _Encoder:
    def __init__(self, bits: int, warmup: int, stripe_rows: int = 0) -> None:
        if bits > rans.MAX_BITS:
            raise ValueError(f"codecs ctx and ctxs code 1..{rans.MAX_BITS}-bit maps, not {bits}: use packed or zstd")
        if not 0 <= stripe_rows <= L.MAX_SIDE:
            raise ValueError(f"stripe_rows must be 0 (whole images, ctx) to {L.MAX_SIDE}, got {stripe_rows}")
        self.bits, self.warmup, self.stripe_rows = bits, warmup, stripe_rows
        self.cum: np.ndarray | None = None
        self.freqs: np.ndarray | None = None

    def _prepared(self, sample: Sample) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each stripe's pixels, kept mask and contexts: a stripe is coded as an image of its own."""
        work, kept = pixels(sample, self.bits)
        w = sample.width
        out = []
        for y0, rows in stripes(sample.height, self.stripe_rows):
            part, keep = work[y0 * w : (y0 + rows) * w], kept[y0 * w : (y0 + rows) * w]
            out.append((part, keep, rans.contexts(part, keep, rows, w, self.bits, np.empty(part.size, np.int64))))
        return out

    def start(self, first: list[Sample]) -> None:
        counts = np.zeros((rans.context_count(self.bits), 1 << self.bits), np.int64)
        for sample in first:
            for stripe in self._prepared(sample):
                rans.count(*stripe, counts)
        self.freqs = normalise(counts)
        self.cum = cumulative(self.freqs)

    def encode(self, sample: Sample) -> bytes:
        assert self.cum is not None, "start() first"
        payloads = []
        for work, kept, ctx in self._prepared(sample):
            buf = np.empty(2 * work.size + 8, np.uint8)
            start = rans.encode(work, kept, ctx, self.cum, buf)
            payloads.append(buf[start:].tobytes())
        table = b"".join(struct.pack("<I", len(p)) for p in payloads[:-1])
        return table + b"".join(payloads)

    def sections(self) -> dict[bytes, bytes]:
        assert self.freqs is not None, "start() first"
        table = zlib.compress(self.freqs.astype("<u2").tobytes(), 9)
        head = CTXM_HEADER.pack(self.bits, rans.PROB_BITS, self.stripe_rows, self.freqs.shape[0])
        return {L.TAG_CTXM: head + table}


@dataclass
class Batch:
    """The samples a striped decoder decodes at once: their output streams (zeroed), geometry and
    stripe jobs (:func:`rans.stripe_jobs`, stripes of one shape side by side so that they pair
    up into lanes), and each one's status."""

    out: np.ndarray
    out_offsets: np.ndarray
    status: np.ndarray
    patch: tuple[int, int]
    mask_data: np.ndarray
    mask_offsets: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    jobs: np.ndarray


class StripedDecoder:
    """What the decoders of ``ctx``, ``ctxs`` and ``ctxg`` share: payload checks, the stripe jobs
    of a batch, the error that names the sample. A subclass decodes a batch in :meth:`run`."""

    needs_sizes = True
    in_place = False
    name = "ctx"
    stripe_rows = 0
    state_bytes = 4  # the shortest payload: the rANS state
    messages = rans.MESSAGES

    def check_lengths(self, first: int, lengths: np.ndarray, sizes: np.ndarray, recs_offset: int) -> None:
        ok = lengths >= self.state_bytes
        if not ok.all():
            i = int(np.argmin(ok))
            raise CorruptFile(f"record {first + i}: bad payload_length", section="RECS", offset=recs_offset,
                              expected=f">= {self.state_bytes} (the rANS state)", found=int(lengths[i]))

    def decode(self, data: np.ndarray, idx: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
               sizes: np.ndarray, data_offset: int, shapes: Shapes) -> tuple[np.ndarray, np.ndarray]:
        out_offsets = np.zeros(idx.size, np.int64)
        np.cumsum(sizes[:-1], out=out_offsets[1:])
        status = np.zeros(idx.size, np.int64)
        mask_offsets = shapes.mask_offsets if shapes.mask_offsets is not None else np.full(idx.size, -1, np.int64)
        hs, ws = np.asarray(shapes.heights, np.int64), np.asarray(shapes.widths, np.int64)
        rows = hs if self.stripe_rows == 0 else np.minimum(self.stripe_rows, hs)
        jobs = np.empty((int(((hs + rows - 1) // rows).sum()), 5), np.int64)
        first, last = (np.zeros_like(hs), hs) if shapes.rows is None else (shapes.rows[:, 0], shapes.rows[:, 1])
        n = rans.stripe_jobs(data, offsets, lengths, hs, ws, mask_offsets, self.stripe_rows, first, last, jobs,
                             status)
        jobs = jobs[:n]
        if n > 2:
            jobs = jobs[np.lexsort((ws[jobs[:, 0]], jobs[:, 4]))]
        batch = Batch(np.zeros(int(sizes.sum()) + 1, np.uint8), out_offsets, status, shapes.patch or (1, 1),
                      shapes.mask_data if shapes.mask_data is not None else np.zeros(1, np.uint8), mask_offsets,
                      hs, ws, jobs)
        if not status.any():
            self.run(data, batch)
        if status.any():
            k = int(np.argmax(status != 0))
            size = f"{int(shapes.heights[k])}x{int(shapes.widths[k])}"
            raise CorruptFile(f"sample {int(idx[k])}: {self.name} payload {self.messages[int(status[k])]}",
                              section="DATA", offset=data_offset + int(offsets[k]), found=f"status {int(status[k])}",
                              expected=f"{int(lengths[k])} bytes decoding a {size} map")
        return batch.out, out_offsets

    def run(self, data: np.ndarray, b: Batch) -> None:
        """Decode the batch's jobs into ``b.out``, setting ``b.status`` where a payload is wrong."""
        raise NotImplementedError


class _Decoder(StripedDecoder):
    def __init__(self, cum: np.ndarray, bits: int, stripe_rows: int = 0) -> None:
        self.cum, self.bits, self.stripe_rows = cum, bits, stripe_rows
        self.name = STRIPED.name if stripe_rows else CODEC.name

    def run(self, data: np.ndarray, b: Batch) -> None:
        map_offsets = np.zeros(b.heights.size, np.int64)
        np.cumsum((b.heights * b.widths)[:-1], out=map_offsets[1:])
        maps = np.zeros(int((b.heights * b.widths).sum()), np.uint8)  # rows a crop does not need stay 0
        rans.decode_batch(data, b.jobs, b.heights, b.widths, b.mask_data, b.mask_offsets, b.patch[0], b.patch[1],
                          self.bits, self.cum, maps, map_offsets, b.out, b.out_offsets, b.status)


def inflate(raw: bytes, want: int, what: str, corrupt: Callable[[str, object, object], CorruptFile]) -> bytes:
    """A section's zlib stream that must inflate to exactly ``want`` bytes and end there; at most
    ``want`` bytes are inflated (a model section's body, spec §5.3, §5.5)."""
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(raw, want)
    except zlib.error as exc:
        raise corrupt(f"{what} does not inflate ({exc})", "a zlib stream", "bad data") from None
    if len(body) != want or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise corrupt(f"{what} of the wrong size", f"a complete zlib stream of {want} bytes",
                      f"{len(body)} bytes{'' if inflater.eof else ', unfinished'}"
                      f"{', trailing data' if inflater.unconsumed_tail or inflater.unused_data else ''}")
    return body


def parse_model(buf: np.ndarray, offset: int, bits: int, striped: bool) -> tuple[np.ndarray, int]:
    """The (C, K + 1) cumulative table of a CTXM section, checked, and its stripe height (spec
    §5.3; codec ``ctxs``, ``striped``: §5.4; ``ctx`` ignores the field: 0)."""
    def corrupt(what: str, expected: object, found: object) -> CorruptFile:
        return CorruptFile(what, section="CTXM", offset=offset, expected=expected, found=found)

    raw = buf.tobytes()
    if len(raw) < CTXM_HEADER.size:
        raise corrupt("too short for its header", f">= {CTXM_HEADER.size} bytes", len(raw))
    model_bits, prob_bits, stripe_rows, count = CTXM_HEADER.unpack_from(raw, 0)
    if model_bits != bits or bits > rans.MAX_BITS:
        raise corrupt("bits differ from PALT's or exceed the codec's", f"{bits} (<= {rans.MAX_BITS})", model_bits)
    if prob_bits != rans.PROB_BITS:
        raise corrupt("unsupported probability precision", rans.PROB_BITS, prob_bits)
    if striped and stripe_rows == 0:
        raise corrupt("codec ctxs needs a stripe height", "stripe_rows 1..65535", 0)
    if count != rans.context_count(bits):
        raise corrupt("wrong context count", rans.context_count(bits), count)
    table = inflate(raw[CTXM_HEADER.size :], count * (1 << bits) * 2, "frequency table", corrupt)
    freqs = np.frombuffer(table, "<u2").reshape(count, 1 << bits).astype(np.int64)
    sums = freqs.sum(axis=1)
    if (sums != rans.PROB_SCALE).any():
        c = int(np.argmax(sums != rans.PROB_SCALE))
        raise corrupt(f"context {c}: frequencies do not sum to 2**{rans.PROB_BITS}", rans.PROB_SCALE, int(sums[c]))
    return cumulative(freqs), stripe_rows if striped else 0


@dataclass(frozen=True)
class Ctx:
    id: int = 2
    name: str = "ctx"
    max_bits: int = rans.MAX_BITS
    striped: bool = False

    def encoder(self, bits: int, level: int, dictionary: bytes | None, dict_size: int, dict_samples: int) -> _Encoder:
        return _Encoder(bits, dict_samples, STRIPE_ROWS if self.striped else 0)

    def decoder(self, sections: dict[bytes, tuple[int, np.ndarray]], bits: int) -> _Decoder:
        if L.TAG_CTXM not in sections:
            raise CorruptFile(f"codec {self.name} needs a CTXM section", section="CTXM", expected="present",
                              found="absent")
        offset, buf = sections[L.TAG_CTXM]
        cum, stripe_rows = parse_model(buf, offset, bits, self.striped)
        return _Decoder(cum, bits, stripe_rows)


CODEC = Ctx()
STRIPED = Ctx(3, "ctxs", striped=True)
