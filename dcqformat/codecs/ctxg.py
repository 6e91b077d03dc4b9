"""Codec ``ctxg`` (spec §5.5, id 4): 1-4-bit index maps coded a group of pixels (a byte of the
bit-packed stream) per rANS symbol, in independent horizontal stripes as ``ctxs``.

A group's *context* is the list of its neighbours' values: for 1 and 2 bits, the pixel left of
the group (L), the one above that (UL), the group above (U0..U(G-1)) and the pixel above-right
(UR); for 3 and 4 bits, L, U0 and U1. The context's raw bits are its *key*, and the file's model
(section ``CTXG``, counted on the first samples) maps every key to one of up to 255 frequency
tables. Palette indices are names, not numbers, so the group is *relabelled* before it is coded:
context values get labels 0, 1, ... in order of first appearance, values not in the context the
next labels in increasing order. A flat region is then one symbol whatever its colour, and keys
of the same shape can share a table: the writer clusters the keys into tables by their counts.
A symbol a table has no frequency for is coded as the escape.

The kernels are in :mod:`dcqformat.codecs.grans`; this module builds the relabelling tables,
serialises and checks the model, and prepares the encoder's symbols.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np

from .. import _layout as L
from ..errors import CorruptFile
from . import grans, rans
from .base import Sample
from .ctx import STRIPE_ROWS, Batch, StripedDecoder, inflate, pixels, stripes

# CTXG: bits, prob_bits, stripe_rows, key_count, model_count; then a zlib stream of key_count u8
# model ids and model_count * (2**(G*bits) + 1) u16 frequencies (the escape last).
CTXG_HEADER = struct.Struct("<BBHHH")
MAX_BITS = 4  # 5-8-bit groups are single pixels: their relabelling tables would outgrow the data
MAX_MODELS = 128  # the writer's choice (the format allows 255)
OWN_MODEL = 256  # groups a key needs in the warm-up to seed a model (the writer's choice)
RARE = 5  # symbols seen this often or less in the warm-up go by the escape (the writer's choice)


def group_pixels(bits: int) -> int:
    """G, the pixels of a group (one byte of stream for 1, 2 and 4 bits)."""
    return 8 // bits


def alphabet(bits: int) -> int:
    """Symbols of a group, the escape not counted: 2**(G*bits)."""
    return 1 << (group_pixels(bits) * bits)


def key_count(bits: int) -> int:
    """Context keys: 2**(bits * neighbours) (2,048, 16,384, 512, 4,096 for 1..4 bits)."""
    return 1 << (bits * neighbours(bits))


def neighbours(bits: int) -> int:
    """Context pixels: L, UL, U0..U(G-1), UR for 1-2 bits; L, U0, U1 for 3-4."""
    return group_pixels(bits) + 3 if bits <= 2 else 3


@dataclass(frozen=True)
class Tables:
    """The relabelling of every context key (the neighbours' values, ``bits`` bits each, L first)."""

    pattern: np.ndarray  # key -> its context's labels, numbered (the writer's first guess at tables)
    patterns: int
    labels: np.ndarray  # (key, value) -> label
    keyrow: np.ndarray  # key -> row of ``groupout`` (one per distinct label -> value map)
    groupout: np.ndarray  # (row, symbol) -> group byte


@cache
def tables(bits: int) -> Tables:
    k, n, per = 1 << bits, neighbours(bits), group_pixels(bits)
    keys = np.arange(k**n, dtype=np.int64)
    digits = (keys[:, None] >> (bits * np.arange(n))) & (k - 1)
    lab = np.full((keys.size, k), -1, np.int64)
    nxt = np.zeros(keys.size, np.int64)
    rows = np.arange(keys.size)
    rgs = np.zeros_like(digits)
    for j in range(n):  # context values, in order of first appearance
        v = digits[:, j]
        new = lab[rows, v] < 0
        lab[rows[new], v[new]] = nxt[new]
        nxt += new
        rgs[:, j] = lab[rows, v]
    for value in range(k):  # the rest, in increasing order
        new = lab[:, value] < 0
        lab[new, value] = nxt[new]
        nxt += new
    _, pattern = np.unique((rgs * (k ** np.arange(n))).sum(axis=1), return_inverse=True)
    perm = np.argsort(lab, axis=1)  # (key, label) -> value
    maps, keyrow = np.unique(perm, axis=0, return_inverse=True)
    syms = np.arange(alphabet(bits))
    sym_labels = (syms[:, None] >> (bits * np.arange(per))) & (k - 1)  # (symbol, pixel) -> label
    groupout = (maps[:, sym_labels] << (bits * np.arange(per))).sum(axis=2)
    return Tables(pattern.astype(np.int32), int(pattern.max()) + 1, lab.astype(np.uint8),
                  keyrow.reshape(-1).astype(np.int32), groupout.astype(np.uint8))


def group_map(work: np.ndarray, bits: int) -> np.ndarray:
    """(h, w) index map -> (h, ng) group bytes, the last group of a row padded with its last pixel."""
    per = group_pixels(bits)
    h, w = work.shape
    ng = -(-w // per)
    padded = np.empty((h, ng * per), np.int64)
    padded[:, :w] = work
    padded[:, w:] = work[:, -1:]
    return (padded.reshape(h, ng, per) << (bits * np.arange(per))).sum(axis=2)


def contexts(gm: np.ndarray, bits: int) -> np.ndarray:
    """The context key of every group of a stripe's group map (the row above the stripe is zeros)."""
    per = group_pixels(bits)
    low, top = (1 << bits) - 1, bits * (per - 1)
    above = np.zeros_like(gm)
    above[1:] = gm[:-1]
    left = np.empty_like(gm)
    left[:, 1:] = gm[:, :-1] >> top
    left[:, 0] = above[:, 0] & low
    if bits > 2:
        return left | (above << bits)
    ul = np.empty_like(gm)
    ul[:, 1:] = above[:, :-1] >> top
    ul[:, 0] = left[:, 0]
    ur = np.empty_like(gm)
    ur[:, :-1] = above[:, 1:] & low
    ur[:, -1] = above[:, -1] >> top
    return left | (ul << bits) | (above << (2 * bits)) | (ur << (2 * bits + 8))


def symbols(gm: np.ndarray, keys: np.ndarray, bits: int) -> np.ndarray:
    """Each group's symbol: its pixels' labels under its context."""
    per = group_pixels(bits)
    lab = tables(bits).labels
    sym = np.zeros_like(gm)
    for j in range(per):
        sym |= lab[keys, (gm >> (bits * j)) & ((1 << bits) - 1)].astype(np.int64) << (bits * j)
    return sym


def quantise(counts: np.ndarray) -> np.ndarray:
    """Counts -> frequencies summing to ``PROB_SCALE``, each counted symbol >= 1, the rest 0, so
    that the coded size under them is least (greedy, a step at a time): the encoder's choice. No
    symbol gets all of them (the encoder's bound 2**51 * f must fit 63 bits)."""
    c = np.asarray(counts, np.float64).copy()
    if (c > 0).sum() < 2:  # one symbol would take all 2**12 slots, which the 64-bit encoder cannot code
        c[0 if c[0] == 0 else 1] = 1e-3
    seen = c > 0
    f = np.where(seen, np.maximum(1, np.floor(c * grans.PROB_SCALE / c.sum())), 0)
    while f.sum() < grans.PROB_SCALE:
        f[np.argmax(np.where(seen, c * np.log2((f + 1) / np.maximum(f, 1)), -1))] += 1
    while f.sum() > grans.PROB_SCALE:
        big = f > 1
        loss = np.full(f.shape, np.inf)
        loss[big] = c[big] * np.log2(f[big] / (f[big] - 1))
        f[np.argmin(loss)] -= 1
    return f.astype(np.int64)


def cluster(counts: np.ndarray, models: int, start: np.ndarray | None = None, rounds: int = 3) -> np.ndarray:
    """Rows of ``counts`` (contexts x symbols) -> ``models`` groups: from ``start`` (a first
    assignment) or with the ``models`` most frequent rows as seeds, each row goes to the group
    whose pooled counts code it in the fewest bits, and the groups are recounted, ``rounds``
    times (Lloyd's iterations under cross-entropy): the encoder's choice."""
    order = np.argsort(-counts.sum(axis=1), kind="stable")
    if start is None:
        model_of = np.zeros(len(counts), np.int64)
        model_of[order[:models]] = np.arange(models)
        pick = np.zeros(len(counts), bool)
        pick[order[:models]] = True
    else:
        model_of, pick = np.asarray(start, np.int64), np.ones(len(counts), bool)
    for _ in range(rounds):
        pooled = np.zeros((models, counts.shape[1]))
        np.add.at(pooled, model_of[pick], counts[pick])
        logp = np.log2((pooled + 0.02) / (pooled + 0.02).sum(axis=1, keepdims=True))
        model_of = np.argmin(-counts @ logp.T, axis=1)
        pick = np.ones(len(counts), bool)
    return model_of


def coded_bits(counts: np.ndarray, model_of: np.ndarray, models: int) -> float:
    """Bits of ``counts`` coded under the pooled counts of their groups (ideal, no escapes)."""
    pooled = np.zeros((models, counts.shape[1]))
    np.add.at(pooled, model_of, counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.where(pooled > 0, np.log2(pooled / np.maximum(pooled.sum(axis=1, keepdims=True), 1)), 0)
    return float(-(pooled * logp).sum())


def decode_tables(model_of: np.ndarray, freqs: np.ndarray, bits: int) -> tuple[np.ndarray, ...]:
    """A file's model (key -> model id, frequencies) -> the kernels' tables: ``keyinfo`` (key ->
    model << MODEL_SHIFT | offset of
    the key's row of ``groupout``), ``slots`` (model << PROB_BITS | slot -> symbol), ``ranges``
    (model * RANGE_STRIDE + symbol -> frequency << PROB_BITS | cumulative frequency, the escape
    after the last symbol), ``esc_start`` (model -> its first escape slot) and ``groupout``
    ((row, symbol) -> group byte, flat)."""
    t = tables(bits)
    m, a = freqs.shape
    cum = np.zeros((m, a + 1), np.int64)
    np.cumsum(freqs, axis=1, out=cum[:, 1:])
    slots = np.concatenate([np.repeat(np.arange(a) & 255, freqs[i]) for i in range(m)]).astype(np.uint8)
    ranges = np.zeros((m, grans.RANGE_STRIDE), np.uint32)
    ranges[:, :a] = (freqs << grans.PROB_BITS) | cum[:, :-1]
    keyinfo = (model_of << grans.MODEL_SHIFT) | (t.keyrow.astype(np.int64) * (a - 1))
    return (keyinfo.astype(np.uint32), slots, ranges.reshape(-1), cum[:, a - 1].copy(), t.groupout.reshape(-1))


class _Encoder:
    def __init__(self, bits: int, warmup: int, stripe_rows: int = STRIPE_ROWS) -> None:
        if bits > MAX_BITS:
            raise ValueError(f"codec ctxg codes 1..{MAX_BITS}-bit maps, not {bits}: use packed or zstd")
        self.bits, self.warmup, self.stripe_rows = bits, warmup, stripe_rows
        self.model_of: np.ndarray | None = None
        self.freqs: np.ndarray | None = None
        self.cum: np.ndarray | None = None

    def _prepared(self, sample: Sample) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each stripe's (symbols, keys), in raster order; dropped pixels take their left
        neighbour's value (as ``ctx``, spec §5.3) and are coded."""
        work, kept = pixels(sample, self.bits)
        h, w = sample.height, sample.width
        if not kept.all():
            rans.contexts(work, kept, h, w, self.bits, np.empty(work.size, np.int64))
        gm = group_map(work.reshape(h, w), self.bits)
        out = []
        for y0, rows in stripes(h, self.stripe_rows):
            part = gm[y0 : y0 + rows]
            keys = contexts(part, self.bits)
            out.append((symbols(part, keys, self.bits).reshape(-1), keys.reshape(-1)))
        return out

    def start(self, first: list[Sample]) -> None:
        t, a = tables(self.bits), alphabet(self.bits)
        counts = np.zeros((t.pattern.size, a), np.int64)
        for sample in first:
            for sym, keys in self._prepared(sample):
                np.add.at(counts, (keys, sym), 1)
        models = max(1, min(MAX_MODELS, int((counts.sum(axis=1) >= OWN_MODEL).sum())))
        # two first guesses, the better kept: the most frequent keys, or keys of one pattern together
        by_pattern = np.zeros((t.patterns, a), np.int64)
        np.add.at(by_pattern, t.pattern, counts)
        guesses = [cluster(counts, models),
                   cluster(counts, models, cluster(by_pattern, min(models, t.patterns))[t.pattern])]
        model_of = min(guesses, key=lambda m: coded_bits(counts, m, models))
        pooled = np.zeros((models, a + 1), np.int64)
        np.add.at(pooled[:, :a], model_of, counts)
        rare = pooled[:, :a] <= RARE  # symbols this rare go by the escape
        pooled[:, a] = np.maximum(1, np.where(rare, pooled[:, :a], 0).sum(axis=1))
        pooled[:, :a][rare] = 0
        self.use_model(model_of, np.stack([quantise(c) for c in pooled]))

    def use_model(self, model_of: np.ndarray, freqs: np.ndarray) -> None:
        """Code with this model (key -> model id, (models, symbols + 1) frequencies)."""
        self.model_of, self.freqs = np.asarray(model_of, np.int64), np.asarray(freqs, np.int64)
        self.cum = np.zeros((len(self.freqs), self.freqs.shape[1] + 1), np.int64)
        np.cumsum(self.freqs, axis=1, out=self.cum[:, 1:])

    def encode(self, sample: Sample) -> bytes:
        assert self.model_of is not None and self.freqs is not None and self.cum is not None, "start() first"
        payloads = []
        for sym, keys in self._prepared(sample):
            models = self.model_of[keys]
            escaped = self.freqs[models, sym] == 0
            # a group adds at most 20 bits to the state (12 for its symbol, 8 for an escape's plain
            # bits) and a word takes 32 out: fewer words than groups, plus the state's two and slack
            buf = np.empty(sym.size + 8, np.uint32)
            start = grans.encode(sym, models, escaped, self.cum, self.bits, buf)
            payloads.append(buf[start:].astype("<u4").tobytes())
        table = b"".join(struct.pack("<I", len(p)) for p in payloads[:-1])
        return table + b"".join(payloads)

    def sections(self) -> dict[bytes, bytes]:
        assert self.model_of is not None and self.freqs is not None, "start() first"
        body = self.model_of.astype(np.uint8).tobytes() + self.freqs.astype("<u2").tobytes()
        head = CTXG_HEADER.pack(self.bits, grans.PROB_BITS, self.stripe_rows, self.model_of.size, self.freqs.shape[0])
        return {L.TAG_CTXG: head + zlib.compress(body, 9)}


class _Decoder(StripedDecoder):
    name = "ctxg"
    state_bytes = grans.STATE_BYTES
    messages = grans.MESSAGES

    def __init__(self, model_of: np.ndarray, freqs: np.ndarray, bits: int, stripe_rows: int) -> None:
        self.bits, self.stripe_rows = bits, stripe_rows
        self.tables = decode_tables(model_of, freqs, bits)

    def run(self, data: np.ndarray, b: Batch) -> None:
        per = group_pixels(self.bits)
        direct = (b.mask_offsets < 0) & (8 % self.bits == 0) & (b.widths % per == 0)  # rows of whole bytes
        group_sizes = np.where(direct, 0, b.heights * ((b.widths + per - 1) // per))
        group_offsets = np.zeros(b.heights.size, np.int64)
        np.cumsum(group_sizes[:-1], out=group_offsets[1:])
        groups = np.zeros(int(group_sizes.sum()) + 1, np.uint8)
        grans.decode_batch(data, b.jobs, b.heights, b.widths, b.mask_data, b.mask_offsets, b.patch[0], b.patch[1],
                           self.bits, self.tables, direct, groups, group_offsets, b.out, b.out_offsets, b.status)


def parse_model(buf: np.ndarray, offset: int, bits: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A CTXG section's key -> model map, (models, symbols + 1) frequencies and stripe
    height, checked (spec §5.5)."""
    def corrupt(what: str, expected: object, found: object) -> CorruptFile:
        return CorruptFile(what, section="CTXG", offset=offset, expected=expected, found=found)

    raw = buf.tobytes()
    if len(raw) < CTXG_HEADER.size:
        raise corrupt("too short for its header", f">= {CTXG_HEADER.size} bytes", len(raw))
    model_bits, prob_bits, stripe_rows, keys, models = CTXG_HEADER.unpack_from(raw, 0)
    if model_bits != bits or bits > MAX_BITS:
        raise corrupt("bits differ from PALT's or exceed the codec's", f"{bits} (<= {MAX_BITS})", model_bits)
    if prob_bits != grans.PROB_BITS:
        raise corrupt("unsupported probability precision", grans.PROB_BITS, prob_bits)
    if stripe_rows == 0:
        raise corrupt("codec ctxg needs a stripe height", "stripe_rows 1..65535", 0)
    if keys != key_count(bits):
        raise corrupt("wrong key count", key_count(bits), keys)
    if not 1 <= models <= 255:
        raise corrupt("model count out of range", "1..255", models)
    a = alphabet(bits) + 1
    body = inflate(raw[CTXG_HEADER.size :], keys + models * a * 2, "model", corrupt)
    model_of = np.frombuffer(body, np.uint8, keys).astype(np.int64)
    if (model_of >= models).any():
        p = int(np.argmax(model_of >= models))
        raise corrupt(f"key {p}: model id out of range", f"< {models}", int(model_of[p]))
    freqs = np.frombuffer(body, "<u2", models * a, keys).reshape(models, a).astype(np.int64)
    sums = freqs.sum(axis=1)
    if (sums != grans.PROB_SCALE).any():
        m = int(np.argmax(sums != grans.PROB_SCALE))
        raise corrupt(f"model {m}: frequencies do not sum to 2**{grans.PROB_BITS}", grans.PROB_SCALE, int(sums[m]))
    return model_of, freqs, stripe_rows


@dataclass(frozen=True)
class Ctxg:
    id: int = 4
    name: str = "ctxg"
    max_bits: int = MAX_BITS

    def encoder(self, bits: int, level: int, dictionary: bytes | None, dict_size: int, dict_samples: int) -> _Encoder:
        return _Encoder(bits, dict_samples)

    def decoder(self, sections: dict[bytes, tuple[int, np.ndarray]], bits: int) -> _Decoder:
        if L.TAG_CTXG not in sections:
            raise CorruptFile("codec ctxg needs a CTXG section", section="CTXG", expected="present", found="absent")
        offset, buf = sections[L.TAG_CTXG]
        model_of, freqs, stripe_rows = parse_model(buf, offset, bits)
        return _Decoder(model_of, freqs, bits, stripe_rows)


CODEC = Ctxg()
