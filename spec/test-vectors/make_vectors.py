"""Generate the golden test vectors of spec/FORMAT.md (run once; the files are then frozen).

Usage: python spec/test-vectors/make_vectors.py

This script assembles files from the spec with its own code, independent of DcqWriter, so
the vectors check the library against the spec. It writes valid/*.dcq with their decoded
arrays valid/*.npz (x: list of images as x0, x1, ...; labels; source_index), invalid/*
files, and MANIFEST.json, which names the error every invalid file must raise and when.
Never regenerate committed vectors: add new ones.
"""

from __future__ import annotations

import json
import struct
import zlib
from functools import partial
from pathlib import Path

import ctx_reference as ctx
import ctxg_reference as ctxg
import numpy as np
import zstandard

HERE = Path(__file__).parent
CODECS = {"packed": 0, "zstd": 1, "ctx": 2, "ctxs": 3, "ctxg": 4}
MAGIC = b"\x89DCQ\r\n\x1a\n"
FIELDS = ["palette_id", "label", "height", "width", "source_index", "payload_offset", "payload_length",
          "mask_offset", "flags"]


def pack_bits(values: list[int], bits: int) -> bytes:
    """LSB-first bit stream, written the slow, obvious way."""
    out = bytearray((len(values) * bits + 7) // 8)
    for j, v in enumerate(values):
        for b in range(bits):
            if (v >> b) & 1:
                t = j * bits + b
                out[t // 8] |= 1 << (t % 8)
    return bytes(out)


def recs_section(records: list[dict], codec: int, widths: dict[str, int], extra_fields: int = 0) -> bytes:
    """RECS with the given stored widths (0 = affine, base = record 0, step = record 1 - record 0)."""
    nf = len(FIELDS) + extra_fields
    descs, column = b"", 0
    for name in FIELDS:
        w = widths.get(name, 0)
        if w:
            descs += struct.pack("<BBHIqq", 0, w, column, 0, 0, 0)
            column += w
        else:
            vals = [r[name] for r in records]
            base = vals[0] if vals else 0
            step = vals[1] - vals[0] if len(vals) > 1 else 0
            assert all(v == base + step * i for i, v in enumerate(vals)), name
            descs += struct.pack("<BBHIqq", 1, 0, 0, 0, base, step)
    for _ in range(extra_fields):
        descs += struct.pack("<BBHIqq", 1, 0, 0, 0, 7, 0)
    head = struct.pack("<QIIB7s", len(records), column, nf, codec, bytes(7)) + descs
    head += bytes(-len(head) % 64)
    rows = b""
    for r in records:
        for name in FIELDS:
            w = widths.get(name, 0)
            if w:
                rows += r[name].to_bytes(w, "little", signed=name == "label")
    return head + rows


def dcrc_section(data: bytes, block: int = 4096) -> bytes:
    blocks = [data[i : i + block] for i in range(0, len(data), block)]
    return struct.pack("<IIQ", block, 0, len(blocks)) + b"".join(
        struct.pack("<I", zlib.crc32(b)) for b in blocks)


def assemble(sections: list[tuple[bytes, int, bytes]], major: int = 1, minor: int = 0) -> bytes:
    """Header + 64-aligned sections in the given order + section table at the end."""
    body, table, pos = bytearray(), b"", 64
    for tag, flags, data in sections:
        pad = -pos % 64
        body += bytes(pad)
        pos += pad
        table += struct.pack("<4sIQQII", tag, flags, pos, len(data), zlib.crc32(data), 0)
        body += data
        pos += len(data)
    pad = -pos % 64
    body += bytes(pad)
    pos += pad
    size = pos + len(table)
    head = struct.pack("<8sHHIQQII20s", MAGIC, major, minor, 0, size, pos, len(table) // 32,
                       zlib.crc32(table), bytes(20))
    return head + struct.pack("<I", zlib.crc32(head)) + bytes(body) + table


def canonical_widths(records: list[dict]) -> dict[str, int]:
    """Spec §4 canonical choice: affine when exactly affine, else the narrowest width."""
    widths = {}
    for name in FIELDS:
        vals = [r[name] for r in records]
        if len(vals) < 2 or all(v == vals[0] + (vals[1] - vals[0]) * i for i, v in enumerate(vals)):
            continue
        signed = name == "label"
        for w in (1, 2, 4, 8):
            lo, hi = (-(1 << (8 * w - 1)), 1 << (8 * w - 1)) if signed else (0, 1 << (8 * w))
            if all(lo <= v < hi for v in vals):
                widths[name] = w
                break
    return widths


def build(images, palettes, bits, channels, *, labels=None, codec="packed", patch=None, masks=None,
          widths=None, meta=None, weights=None, zdict=None, extra=(), minor=0, extra_fields=0, block=4096,
          stripe_rows=0):
    """Assemble a file; return (bytes, expected decoded images)."""
    palettes = np.asarray(palettes, np.uint8)
    data, records, mask_bytes, expected = b"", [], b"", []
    zc = None
    if codec == "zstd":
        zd = zstandard.ZstdCompressionDict(zdict) if zdict else None
        zc = zstandard.ZstdCompressor(level=19, dict_data=zd, write_content_size=False, write_checksum=False,
                                      write_dict_id=False)
    model = None
    if codec in ("ctx", "ctxs", "ctxg"):  # §5.3: the model counted on every sample, then each payload coded under it
        plain = []
        for i, (idx, _) in enumerate(images):
            h, w = np.shape(idx)
            dropped = None if masks is None or masks[i] is None else \
                np.asarray(masks[i], bool).reshape(-(-h // patch[0]), -(-w // patch[1])).tolist()
            plain.append(([int(v) for v in np.asarray(idx).reshape(-1)], ctx.kept_pixels(h, w, patch, dropped), h, w))
        model = ctxg.model(plain, bits, stripe_rows) if codec == "ctxg" else ctx.model(plain, bits, stripe_rows)
    for i, (idx, pid) in enumerate(images):
        idx = np.asarray(idx, np.uint8)
        h, w = idx.shape
        pal = palettes[pid]
        img = pal[idx].copy()
        order = [(y, x) for y in range(h) for x in range(w)]
        flags, moff = 0, 0
        if masks is not None and masks[i] is not None:
            ph, pw = patch
            gh, gw = -(-h // ph), -(-w // pw)
            m = np.asarray(masks[i], bool).reshape(gh, gw)
            order = []
            for g in range(gh * gw):
                gy, gx = divmod(g, gw)
                ys = range(gy * ph, min(gy * ph + ph, h))
                xs = range(gx * pw, min(gx * pw + pw, w))
                if m[gy, gx]:
                    for y in ys:
                        for x in xs:
                            img[y, x] = 0
                else:
                    order += [(y, x) for y in ys for x in xs]
            moff = 8 + len(mask_bytes)
            mask_bytes += pack_bits([int(v) for v in m.reshape(-1)], 1)
            flags = 1
        payload = pack_bits([int(idx[y, x]) for y, x in order], bits)
        if zc is not None:
            payload = zc.compress(payload)
        if model is not None and codec == "ctx":
            payload = ctx.encode(*plain[i][:2], h, w, bits, model)
        elif model is not None and codec == "ctxg":  # §5.5
            payload = ctxg.encode(*plain[i][:2], h, w, bits, *model, stripe_rows)
        elif model is not None:  # §5.4: stripes
            payload = ctx.encode_striped(*plain[i][:2], h, w, bits, model, stripe_rows)
        records.append(dict(palette_id=pid, label=(labels[i] if labels else -1), height=h, width=w,
                            source_index=i, payload_offset=len(data), payload_length=len(payload),
                            mask_offset=moff, flags=flags))
        data += payload
        expected.append(img)
    if widths == "canonical":
        widths = canonical_widths(records)
    widths = widths if widths is not None else {"palette_id": 1, "label": 1, "height": 2, "width": 2, "payload_offset": 4,
                        "payload_length": 4, "mask_offset": 4, "flags": 1}
    secs = [(b"DATA", 0, data), (b"RECS", 0, recs_section(records, CODECS[codec], widths, extra_fields))]
    if patch is not None:
        secs.append((b"MASK", 0, struct.pack("<HHI", patch[0], patch[1], 0) + mask_bytes))
    secs.append((b"DCRC", 0, dcrc_section(data, block)))
    secs.append((b"PALT", 0, struct.pack("<IBBH", len(palettes), bits, channels, 0) + palettes.tobytes()))
    if zdict:
        secs.append((b"ZDCT", 0, zdict))
    if model is not None and codec == "ctxg":
        secs.append((b"CTXG", 0, ctxg.model_section(bits, *model, stripe_rows)))
    elif model is not None:
        secs.append((b"CTXM", 0, ctx.model_section(bits, model, stripe_rows)))
    if weights is not None:
        secs.append((b"WGHT", 0, weights))
    secs += list(extra)
    secs.append((b"META", 0, json.dumps(meta or {}, sort_keys=True, separators=(",", ":")).encode()))
    return assemble(secs, minor=minor), expected, records


def safetensors_blob() -> bytes:
    tensor = np.arange(6, dtype="<f4").reshape(2, 3)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                         "__metadata__": {"arch": "tiny"}}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + tensor.tobytes()


def valid_vectors(rng: np.random.Generator) -> dict[str, tuple]:
    def rand(h, w, bits):
        return rng.integers(0, 1 << bits, (h, w))

    v = {}
    gray = np.array([[[0], [255]]])
    v["gray-1bit-sizes"] = build([(rand(8, 8, 1), 0), (rand(5, 3, 1), 0), (rand(1, 1, 1), 0)], gray, 1, 1,
                                 labels=[0, 1, 0], meta={"name": "gray", "classes": ["a", "b"]})
    pal2 = rng.integers(0, 256, (2, 4, 3))
    v["rgb-2bit-shared"] = build([(rand(4, 4, 2), i % 2) for i in range(6)], pal2, 2, 3, labels=list(range(6)),
                                 meta={"name": "shared", "color_space": "sRGB"})
    pal3 = rng.integers(0, 256, (3, 8, 3))
    v["rgb-3bit-odd"] = build([(rand(7, 5, 3), i) for i in range(3)], pal3, 3, 3, labels=[2, 0, 1])
    for bits in (5, 6, 7):
        pal = rng.integers(0, 256, (1, 1 << bits, 3))
        v[f"rgb-{bits}bit"] = build([(rand(3, 7, bits), 0), (rand(2, 2, bits), 0)], pal, bits, 3)
    pal8 = rng.integers(0, 256, (1, 256, 3))
    v["rgb-8bit"] = build([(rand(3, 2, 8), 0)], pal8, 8, 3, labels=[-1])
    pal4 = rng.integers(0, 256, (1, 16, 3))
    v["rgb-4bit-masked"] = build([(rand(6, 5, 4), 0), (rand(4, 4, 4), 0), (rand(3, 3, 4), 0)], pal4, 4, 3,
                                 patch=(2, 2), masks=[[1, 0, 0, 0, 1, 0, 0, 0, 1], None, [1, 1, 1, 1]],
                                 labels=[0, 1, 2])
    zdict = zstandard.train_dictionary(1024, [pack_bits(list(rand(8, 8, 2).reshape(-1)), 2)
                                              for _ in range(200)]).as_bytes()
    v["rgb-2bit-zstd"] = build([(rand(8, 8, 2), i % 2) for i in range(10)], pal2, 2, 3, codec="zstd",
                               zdict=zdict, labels=list(range(10)))
    v["rgb-2bit-zstd-nodict"] = build([(rand(8, 8, 2), 0) for _ in range(3)], pal2, 2, 3, codec="zstd")
    v["rgb-1bit-weights"] = build([(rand(4, 4, 1), 0)], [[[0, 0, 0], [255, 128, 0]]], 1, 3,
                                  weights=safetensors_blob(), meta={"mae": {"arch": "tiny"}})
    v["affine-fields"] = build([(rand(4, 4, 2), 0) for _ in range(4)], pal2, 2, 3,
                               widths={"label": 1}, labels=[3, 1, 4, 1])
    v["minor-1.9-extensions"] = build([(rand(4, 4, 2), 1)], pal2, 2, 3, minor=9, extra_fields=2,
                                      extra=[(b"XTRA", 1, b"future, skippable")])
    v["empty"] = build([], pal2, 2, 3)
    return v


def smooth_map(rng: np.random.Generator, h: int, w: int, bits: int) -> np.ndarray:
    """A map with runs and edges, as quantized photos have."""
    ramp = np.add.outer(np.arange(h) * int(rng.integers(1, 3)), np.arange(w)) // 3
    noise = (rng.random((h, w)) < 0.1) * rng.integers(0, 1 << bits, (h, w))
    return (ramp + noise) % (1 << bits)


def ctx_vectors() -> dict[str, tuple]:
    """Codec ctx (1.1): maps with runs and edges, as quantized photos have (own generator: the
    vectors above stay as they were)."""
    rng = np.random.default_rng(20261124)
    smooth = partial(smooth_map, rng)

    v = {}
    pal2 = rng.integers(0, 256, (2, 4, 3))
    v["ctx-2bit"] = build([(smooth(*s, 2), i % 2) for i, s in enumerate([(8, 8), (8, 8), (8, 8), (5, 7), (1, 1)])],
                          pal2, 2, 3, codec="ctx", labels=[0, 1, 2, 3, 4], minor=1)
    pal1 = rng.integers(0, 256, (1, 2, 3))
    v["ctx-1bit"] = build([(smooth(6, 9, 1), 0), (smooth(2, 2, 1), 0)], pal1, 1, 3, codec="ctx", minor=1)
    pal3 = rng.integers(0, 256, (1, 8, 3))
    v["ctx-3bit"] = build([(smooth(7, 6, 3), 0), (smooth(9, 9, 3), 0), (smooth(1, 5, 3), 0)], pal3, 3, 3,
                          codec="ctx", minor=1)
    gray4 = rng.integers(0, 256, (1, 16, 1))
    v["ctx-4bit-masked-gray"] = build([(smooth(6, 7, 4), 0), (smooth(4, 4, 4), 0), (smooth(5, 5, 4), 0)], gray4, 4,
                                      1, codec="ctx", patch=(2, 3), masks=[[1, 0, 0, 0, 1, 0, 0, 0, 1], None, [1] * 6],
                                      minor=1)
    return v


def ctxs_vectors() -> dict[str, tuple]:
    """Codec ctxs (1.2): maps taller than a stripe, short ones, a masked one whose patches straddle
    stripes (own generator)."""
    rng = np.random.default_rng(20261202)
    smooth = partial(smooth_map, rng)

    v = {}
    pal2 = rng.integers(0, 256, (2, 4, 3))
    v["ctxs-2bit"] = build([(smooth(*s, 2), i % 2) for i, s in enumerate([(9, 8), (8, 8), (3, 7), (1, 1), (7, 5)])],
                           pal2, 2, 3, codec="ctxs", labels=[0, 1, 2, 3, 4], minor=2, stripe_rows=3)
    gray3 = rng.integers(0, 256, (1, 8, 1))
    v["ctxs-3bit-masked-gray"] = build([(smooth(7, 6, 3), 0), (smooth(5, 5, 3), 0)], gray3, 3, 1, codec="ctxs",
                                       patch=(2, 2), masks=[[1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0], None], minor=2,
                                       stripe_rows=3)
    return v


def ctxg_vectors() -> dict[str, tuple]:
    """Codec ctxg (1.3): maps taller than a stripe, widths that are not whole groups, a masked
    gray one, noise that the model never saw (escapes) (own generator)."""
    rng = np.random.default_rng(20261203)
    smooth = partial(smooth_map, rng)

    v = {}
    pal2 = rng.integers(0, 256, (2, 4, 3))
    noise = rng.integers(0, 4, (4, 6))
    v["ctxg-2bit"] = build([(smooth(*s, 2), i % 2) for i, s in enumerate([(9, 8), (8, 8), (3, 7), (1, 1), (7, 5)])]
                           + [(noise, 0)], pal2, 2, 3, codec="ctxg", labels=[0, 1, 2, 3, 4, 5], minor=3,
                           stripe_rows=3)
    gray3 = rng.integers(0, 256, (1, 8, 1))
    v["ctxg-3bit-masked-gray"] = build([(smooth(7, 6, 3), 0), (smooth(5, 5, 3), 0)], gray3, 3, 1, codec="ctxg",
                                       patch=(2, 2), masks=[[1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0], None], minor=3,
                                       stripe_rows=3)
    return v


def invalid_ctxg_vectors(gbase: bytes) -> dict[str, tuple[bytes, str, str, str]]:
    """ctxg: a model whose frequencies do not sum to 2**12; a stripe shorter than the 8-byte state."""
    head, body = model_parts(gbase, b"CTXG")
    keys = struct.unpack_from("<H", head, 4)[0]  # the frequencies follow the key_count model ids
    struct.pack_into("<H", body, keys, struct.unpack_from("<H", body, keys)[0] + 1)

    def short_first_stripe(s: bytearray) -> None:  # sample 0's first stripe: 4 bytes, its state needs 8
        struct.pack_into("<I", s, 0, 4)

    return {
        "ctxg-model-sum": (replace_section(gbase, b"CTXG", head + zlib.compress(bytes(body), 9)), "CorruptFile",
                           "open", "sum to"),
        "ctxg-stripe-short": (patch_section(gbase, b"DATA", short_first_stripe), "CorruptFile", "decode",
                              "ctxg payload"),
    }


def dequantizer_blob(config: dict, tensors: dict[str, np.ndarray]) -> bytes:
    """A dcq-dequant/1 safetensors buffer (§9.3) built by hand: kernels I8 with an F32 scale,
    biases F16, tensors in name order, the header padded to 8 bytes."""
    header: dict = {"__metadata__": {"dcq-dequant": json.dumps({"config": config, "format": "dcq-dequant/1"},
                                                               sort_keys=True)}}
    data = b""
    for name in sorted(tensors):
        raw = tensors[name].tobytes()
        dtype = {np.dtype("int8"): "I8", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16"}[tensors[name].dtype]
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def dequantize_reference(img: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """§9.3 in plain NumPy: (H, W, C) uint8 -> uint8; each layer a 3x3 zero-padded convolution
    (float64 here: outputs may differ from float32 by one level only next to a half)."""
    x = img.astype(np.float64).transpose(2, 0, 1) / 255
    h, w = img.shape[:2]
    a = x
    for k, (weight, bias) in enumerate(layers):
        padded = np.pad(a, ((0, 0), (1, 1), (1, 1)))
        out = np.zeros((weight.shape[0], h, w))
        for dy in range(3):
            for dx in range(3):
                out += np.einsum("oi,ihw->ohw", weight[:, :, dy, dx], padded[:, dy : dy + h, dx : dx + w])
        a = out + bias[:, None, None]
        if k < len(layers) - 1:
            a = np.maximum(a, 0)
    y = np.clip(x + a, 0, 1)
    return np.floor(y * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def deqw_vectors() -> dict[str, tuple]:
    """The learned dequantizer (1.2 addendum, §9.3): a file with a DEQW section (SKIPPABLE): its
    lookup decode is the usual one; the npz also holds each image dequantized by the reference
    (y0, y1, ...). Own generator."""
    rng = np.random.default_rng(20261203)
    config = {"channels": 3, "depth": 3, "width": 4}
    shapes = [(4, 3), (4, 4), (3, 4)]
    tensors, layers = {}, []
    for k, (o, i) in enumerate(shapes):
        q = rng.integers(-127, 128, (o, i, 3, 3)).astype(np.int8)
        scale = np.float32(0.02 / (k + 1))
        bias = (rng.standard_normal(o) * 0.05).astype("<f2")
        tensors[f"net.{2 * k}.weight"] = q
        tensors[f"net.{2 * k}.weight.scale"] = np.array(scale, "<f4")
        tensors[f"net.{2 * k}.bias"] = bias
        layers.append((q.astype(np.float64) * float(scale), bias.astype(np.float64)))
    blob = dequantizer_blob(config, tensors)
    pal = rng.integers(0, 256, (2, 4, 3))
    file, expected, records = build([(smooth_map(rng, 9, 7, 2), 0), (smooth_map(rng, 5, 6, 2), 1)], pal, 2, 3,
                                    labels=[0, 1], extra=[(b"DEQW", 1, blob)],
                                    meta={"dequantizer": {"config": config}})
    dequantized = [dequantize_reference(img, layers) for img in expected]
    return {"deqw-2bit": (file, expected, records, dequantized)}


def pcor_section(count: int, step: int, deltas: list[list[int]]) -> bytes:
    """§3.1: count, step, 3 reserved bytes; then each sample's K * C deltas as 4-bit two's
    complement, two per byte, the first in the low nibble."""
    body = b""
    for row in deltas:
        nib = [d & 15 for d in row]
        body += bytes(nib[j] | nib[j + 1] << 4 for j in range(0, len(nib), 2))
    return struct.pack("<IB3s", count, step, bytes(3)) + body


def pcor_vectors() -> dict[str, tuple]:
    """Palette corrections (1.4, §3.1): each sample decodes with PALT[palette_id] + step * delta,
    clipped to 0..255. Own generator."""
    rng = np.random.default_rng(20261204)
    out = {}
    for name, bits, channels, codec, step, patch in (("pcor-2bit", 2, 3, "packed", 6, None),
                                                     ("pcor-1bit-gray-ctxg-masked", 1, 1, "ctxg", 40, (2, 2))):
        k = 1 << bits
        pal = rng.integers(0, 256, (2, k, channels))
        pal[0, 0] = 250  # corrections that clip at both ends
        pal[1, 0] = 3
        images = [(smooth_map(rng, int(rng.integers(3, 9)), int(rng.integers(3, 9)), bits), i % 2) for i in range(4)]
        masks = None
        if patch is not None:
            masks = [None if i % 2 else (rng.random(-(-idx.shape[0] // 2) * -(-idx.shape[1] // 2)) < 0.3)
                     .astype(int).tolist() for i, (idx, _) in enumerate(images)]
        deltas = [[int(d) for d in rng.integers(-8, 8, k * channels)] for _ in images]
        file, _, records = build(images, pal, bits, channels, codec=codec, labels=list(range(4)), patch=patch,
                                 masks=masks, minor=4, extra=[(b"PCOR", 0, pcor_section(len(images), step, deltas))],
                                 stripe_rows=4 if codec == "ctxg" else 0)
        expected = []
        for i, (idx, pid) in enumerate(images):
            own = [[min(255, max(0, int(pal[pid][e][c]) + step * deltas[i][e * channels + c]))
                    for c in range(channels)] for e in range(k)]
            img = np.array([[own[int(v)] for v in row] for row in np.asarray(idx)], np.uint8)
            if masks is not None and masks[i] is not None:
                gw = -(-idx.shape[1] // patch[1])
                for y in range(idx.shape[0]):
                    for x in range(idx.shape[1]):
                        if masks[i][(y // patch[0]) * gw + x // patch[1]]:
                            img[y, x] = 0
            expected.append(img)
        out[name] = (file, expected, records)
    return out


def canonical_vectors(rng: np.random.Generator) -> dict[str, tuple]:
    """Files exactly as DcqWriter must write them; their inputs are saved beside them."""
    out = {}
    pal = rng.integers(0, 256, (3, 4, 3)).astype(np.uint8)
    imgs = [(rng.integers(0, 4, (8, 8)), int(rng.integers(0, 3))) for _ in range(12)]
    labels = [int(x) for x in rng.integers(0, 10, 12)]
    meta = {"name": "canonical", "classes": [str(c) for c in range(10)], "color_space": "sRGB"}
    out["canonical-2bit"] = (imgs, pal, 2, 3, labels, None, None, meta)
    pal3 = rng.integers(0, 256, (5, 8, 1)).astype(np.uint8)
    imgs3, masks = [], []
    for k in range(5):
        h, w = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        imgs3.append((rng.integers(0, 8, (h, w)), k))
        gh, gw = -(-h // 3), -(-w // 3)
        masks.append((rng.random(gh * gw) < 0.4).astype(int).tolist() if k % 2 == 0 else None)
    out["canonical-masked-3bit-gray"] = (imgs3, pal3, 3, 1, [1, -1, 300, 2, 0], (3, 3), masks,
                                         {"name": "masked", "classes": []})
    return out


def patch_section(blob: bytes, tag: bytes, edit, fix_crc: bool = True) -> bytes:
    """Apply ``edit(bytearray)`` to one section and recompute every checksum (when fix_crc)."""
    b = bytearray(blob)
    size, table_off, count = struct.unpack_from("<QQI", b, 16)
    for k in range(count):
        at = table_off + 32 * k
        t, flags, off, length, crc, _ = struct.unpack_from("<4sIQQII", b, at)
        if t == tag:
            sec = bytearray(b[off : off + length])
            edit(sec)
            assert len(sec) == length
            b[off : off + length] = sec
            if fix_crc:
                struct.pack_into("<I", b, at + 24, zlib.crc32(sec))
                if tag == b"DATA":  # keep DCRC consistent too
                    for k2 in range(count):
                        at2 = table_off + 32 * k2
                        t2, _, off2, len2, _, _ = struct.unpack_from("<4sIQQII", b, at2)
                        if t2 == b"DCRC":
                            new = dcrc_section(bytes(sec), struct.unpack_from("<I", b, off2)[0])
                            b[off2 : off2 + len2] = new
                            struct.pack_into("<I", b, at2 + 24, zlib.crc32(new))
    if fix_crc:
        struct.pack_into("<I", b, 36, zlib.crc32(bytes(b[table_off : table_off + 32 * count])))
        struct.pack_into("<I", b, 60, zlib.crc32(bytes(b[:60])))
    return bytes(b)


def rehead(blob: bytes, offset: int, fmt: str, value) -> bytes:  # type: ignore[no-untyped-def]
    b = bytearray(blob)
    struct.pack_into(fmt, b, offset, value)
    struct.pack_into("<I", b, 60, zlib.crc32(bytes(b[:60])))
    return bytes(b)


def invalid_ctxs_vectors(sbase: bytes) -> dict[str, tuple[bytes, str, str, str]]:
    """ctxs: a stripe table that does not fit its payload; a CTXM without a stripe height."""
    def longer_first_stripe(s: bytearray) -> None:  # sample 0's first stripe length beyond its payload
        struct.pack_into("<I", s, 0, struct.unpack_from("<I", s, 0)[0] + 4096)

    return {
        "ctxs-stripe-table": (patch_section(sbase, b"DATA", longer_first_stripe), "CorruptFile", "decode",
                              "stripe table"),
        "ctxs-no-stripe-rows": (patch_section(sbase, b"CTXM", lambda s: s.__setitem__(slice(2, 4), b"\0\0")),
                                "CorruptFile", "open", "stripe height"),
    }


def model_parts(blob: bytes, tag: bytes) -> tuple[bytes, bytearray]:
    """A model section's (CTXM, CTXG) 8-byte header and its inflated body."""
    size, table_off, count = struct.unpack_from("<QQI", blob, 16)
    at = next(table_off + 32 * k for k in range(count) if blob[table_off + 32 * k : table_off + 32 * k + 4] == tag)
    off, length = struct.unpack_from("<QQ", blob, at + 8)
    return bytes(blob[off : off + 8]), bytearray(zlib.decompress(bytes(blob[off + 8 : off + length])))


def invalid_ctx_vectors(cbase: bytes) -> dict[str, tuple[bytes, str, str, str]]:
    head, table = model_parts(cbase, b"CTXM")
    struct.pack_into("<H", table, 0, struct.unpack_from("<H", table, 0)[0] + 1)
    bad_model = head + zlib.compress(bytes(table), 9)
    return {
        "ctx-payload-state": (patch_section(cbase, b"DATA", lambda s: s.__setitem__(0, s[0] ^ 0x55)),
                              "CorruptFile", "decode", "ctx payload"),
        "ctx-model-bits": (patch_section(cbase, b"CTXM", lambda s: s.__setitem__(0, 3)), "CorruptFile", "open",
                           "bits differ"),
        "ctx-model-sum": (replace_section(cbase, b"CTXM", bad_model), "CorruptFile", "open", "sum to"),
        "ctx-model-missing": (rename_section(cbase, b"CTXM", b"ctxm", skippable=True), "CorruptFile", "open",
                              "needs a CTXM"),
    }


def replace_section(blob: bytes, tag: bytes, new: bytes) -> bytes:
    """Rebuild a file with one section's bytes replaced (sections re-laid out, checksums right)."""
    size, table_off, count = struct.unpack_from("<QQI", blob, 16)
    secs = []
    for k in range(count):
        t, flags, off, length, _, _ = struct.unpack_from("<4sIQQII", blob, table_off + 32 * k)
        secs.append((t, flags, new if t == tag else blob[off : off + length]))
    major, minor = struct.unpack_from("<HH", blob, 8)
    return assemble(secs, major, minor)


def rename_section(blob: bytes, tag: bytes, new_tag: bytes, skippable: bool) -> bytes:
    b = bytearray(blob)
    size, table_off, count = struct.unpack_from("<QQI", b, 16)
    at = next(table_off + 32 * k for k in range(count) if b[table_off + 32 * k : table_off + 32 * k + 4] == tag)
    b[at : at + 4] = new_tag
    struct.pack_into("<I", b, at + 4, int(skippable))
    struct.pack_into("<I", b, 36, zlib.crc32(bytes(b[table_off : table_off + 32 * count])))
    struct.pack_into("<I", b, 60, zlib.crc32(bytes(b[:60])))
    return bytes(b)


def invalid_vectors(base: bytes, zbase: bytes) -> dict[str, tuple[bytes, str, str, str]]:
    """name -> (bytes, error class, when ('open' or 'decode'), message fragment)."""
    def flip(at):
        b = bytearray(base)
        b[at] ^= 0x40
        return bytes(b)

    # Row layout of the default widths: palette_id @0, label @1, height @2, width @4,
    # payload_offset @6, payload_length @10, mask_offset @14, flags @18; rows start at RECS+256.
    data_off = 64
    recs_off = struct.unpack_from("<Q", base, struct.unpack_from("<Q", base, 24)[0] + 32 + 8)[0]
    v = {
        "empty-file": (b"", "NotADcqFile", "open", "not a dcq file"),
        "png-file": (b"\x89PNG\r\n\x1a\n" + bytes(100), "NotADcqFile", "open", "not a dcq file"),
        "text-mode-crlf": (base.replace(b"\r\n", b"\n", 1), "CorruptFile", "open", "text-mode"),
        "seven-bit": (bytes([base[0] & 0x7F]) + base[1:], "CorruptFile", "open", "high bit"),
        "truncated-magic": (base[:5], "TruncatedFile", "open", "magic"),
        "truncated-header": (base[:40], "TruncatedFile", "open", "header"),
        "truncated-data": (base[:100], "TruncatedFile", "open", "shorter"),
        "truncated-table": (base[:-5], "TruncatedFile", "open", "shorter"),
        "trailing-bytes": (base + b"\0", "CorruptFile", "open", "after the end"),
        "version-2.0": (rehead(base, 8, "<H", 2), "UnsupportedVersion", "open", "version 2.0"),
        "header-crc": (flip(20), "ChecksumMismatch", "open", "checksum"),
        "table-crc": (flip(len(base) - 3), "ChecksumMismatch", "open", "checksum"),
        "recs-crc": (flip(recs_off + 3), "ChecksumMismatch", "open", "RECS"),
        "data-block-crc": (flip(data_off + 1), "ChecksumMismatch", "decode", "DATA block 0"),
        "bad-palette-id": (patch_section(base, b"RECS", lambda s: s.__setitem__(256, 9)), "CorruptFile",
                           "open", "palette_id"),
        "payload-past-data": (patch_section(base, b"RECS", lambda s: s.__setitem__(slice(262, 266),
                              (10**6).to_bytes(4, "little"))), "CorruptFile", "open", "payload end"),
        "payload-length": (patch_section(base, b"RECS", lambda s: s.__setitem__(266, 3)), "CorruptFile", "open",
                           "payload_length"),
        "meta-not-json": (patch_section(base, b"META", lambda s: s.__setitem__(0, ord("x"))), "CorruptFile",
                          "open", "JSON"),
        "meta-nan": (patch_section(base, b"META", lambda s: s.__setitem__(slice(s.index(b'"shared"'),
                     s.index(b'"shared"') + 8), b"Infinity")), "CorruptFile", "open", "not JSON (RFC 8259)"),
        "bits-9": (patch_section(base, b"PALT", lambda s: s.__setitem__(4, 9)), "CorruptFile", "open",
                   "palette header"),
        "zstd-bad-frame": (patch_section(zbase, b"DATA", lambda s: s.__setitem__(slice(0, 4), b"\xff" * 4)),
                           "CorruptFile", "decode", "zstd"),
    }
    # A required section this reader does not know, with consistent checksums.
    b = bytearray(base)
    size, table_off, count = struct.unpack_from("<QQI", b, 16)
    meta_at = [table_off + 32 * k for k in range(count) if b[table_off + 32 * k : table_off + 32 * k + 4] == b"META"]
    b[meta_at[0] : meta_at[0] + 4] = b"NEWS"
    struct.pack_into("<I", b, 36, zlib.crc32(bytes(b[table_off:])))
    struct.pack_into("<I", b, 60, zlib.crc32(bytes(b[:60])))
    v["unknown-required-section"] = (bytes(b), "UnsupportedVersion", "open", "NEWS")
    return v


def main() -> None:
    rng = np.random.default_rng(20261123)
    (HERE / "valid").mkdir(exist_ok=True)
    (HERE / "invalid").mkdir(exist_ok=True)
    manifest = {"valid": {}, "invalid": {}}
    valid = valid_vectors(rng)
    valid.update(ctx_vectors())
    valid.update(ctxs_vectors())
    valid.update(ctxg_vectors())
    valid.update(deqw_vectors())
    valid.update(pcor_vectors())
    for name, (blob, expected, records, *more) in valid.items():
        (HERE / "valid" / f"{name}.dcq").write_bytes(blob)
        arrays = {f"x{i}": img for i, img in enumerate(expected)}
        arrays.update({f"y{i}": img for i, img in enumerate(more[0] if more else [])})
        arrays["labels"] = np.array([r["label"] for r in records], np.int64)
        arrays["source_index"] = np.array([r["source_index"] for r in records], np.int64)
        np.savez(HERE / "valid" / f"{name}.npz", **arrays)
        manifest["valid"][name] = {"samples": len(expected), "bytes": len(blob)}
    for name, (imgs, pal, bits, ch, labels, patch, masks, meta) in canonical_vectors(rng).items():
        blob, expected, records = build(imgs, pal, bits, ch, labels=labels, patch=patch, masks=masks, meta=meta,
                                        widths="canonical", block=65536)
        (HERE / "valid" / f"{name}.dcq").write_bytes(blob)
        arrays = {f"x{i}": img for i, img in enumerate(expected)}
        arrays.update({f"i{i}": np.asarray(idx, np.uint8) for i, (idx, _) in enumerate(imgs)})
        arrays.update({f"m{i}": np.asarray(m, bool) for i, m in enumerate(masks or []) if m is not None})
        arrays.update(labels=np.array(labels, np.int64), source_index=np.arange(len(imgs)),
                      palette_ids=np.array([p for _, p in imgs]), palettes=pal,
                      meta=np.array(json.dumps(meta)))
        np.savez(HERE / "valid" / f"{name}.npz", **arrays)
        manifest["valid"][name] = {"samples": len(imgs), "bytes": len(blob), "canonical": True, "bits": bits,
                                   "patch": list(patch) if patch else None}
    base = valid["rgb-2bit-shared"][0]
    invalid = invalid_vectors(base, valid["rgb-2bit-zstd"][0])
    invalid.update(invalid_ctx_vectors(valid["ctx-2bit"][0]))
    invalid.update(invalid_ctxs_vectors(valid["ctxs-2bit"][0]))
    invalid.update(invalid_ctxg_vectors(valid["ctxg-2bit"][0]))
    deqw = valid["deqw-2bit"][0]
    invalid["deqw-not-safetensors"] = (replace_section(deqw, b"DEQW", b"\x05" + bytes(15)), "CorruptFile", "open",
                                       "(DEQW at byte 576): safetensors header is not JSON")
    pcor = valid["pcor-2bit"][0]
    invalid["pcor-length"] = (replace_section(pcor, b"PCOR", pcor_section(4, 6, [[0] * 12] * 4) + b"\0"),
                              "CorruptFile", "open", "length does not match the correction header")
    invalid["pcor-count"] = (patch_section(pcor, b"PCOR", lambda s: s.__setitem__(slice(0, 4), b"\3\0\0\0")),
                             "CorruptFile", "open", "one correction per sample")
    for name, (blob, err, when, fragment) in invalid.items():
        (HERE / "invalid" / f"{name}.dcq").write_bytes(blob)
        manifest["invalid"][name] = {"error": err, "when": when, "message": fragment}
    (HERE / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
