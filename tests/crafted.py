"""Hand-made hostile files: the kinds of spec §10/§12 violations a hostile writer can produce
with every checksum right. Each maker returns the bytes of a whole .dcq file.

Used by test_hostile.py (one file of each kind) and fuzz.py (many, with random parameters).
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import zstandard

from dcqformat import _layout as L

GOOD = bytes(range(4))  # the bit stream of a 4x4 2-bit sample: indices 0, 1, 2, 3 at pixels 0, 4, 8, 12


def refresh(blob: bytes) -> bytes:
    """Recompute every CRC of a (possibly mutated) file, as a hostile writer would."""
    b = bytearray(blob)
    if len(b) < 64:
        return blob
    table_offset, count = struct.unpack_from("<QI", b, 24)
    if count > 64 or table_offset + 32 * count > len(b):
        return blob
    for k in range(count):
        at = table_offset + 32 * k
        tag, _, off, length, _, _ = struct.unpack_from("<4sIQQII", b, at)
        if off + length > len(b):
            continue
        if tag == b"DCRC" and length >= 16:
            block = struct.unpack_from("<I", b, off)[0]
            data = [struct.unpack_from("<4sIQQII", b, table_offset + 32 * j) for j in range(count)]
            dat = next((d for d in data if d[0] == b"DATA"), None)
            if dat and block and block & (block - 1) == 0 and dat[2] + dat[3] <= len(b):
                payload = bytes(b[dat[2] : dat[2] + dat[3]])
                crcs = [zlib.crc32(payload[i : i + block]) for i in range(0, len(payload), block)]
                if 16 + 4 * len(crcs) <= length:
                    for j, c in enumerate(crcs):
                        struct.pack_into("<I", b, off + 16 + 4 * j, c)
        struct.pack_into("<I", b, at + 24, zlib.crc32(bytes(b[off : off + length])))
    struct.pack_into("<I", b, 36, zlib.crc32(bytes(b[table_offset : table_offset + 32 * count])))
    struct.pack_into("<I", b, 60, zlib.crc32(bytes(b[:60])))
    return bytes(b)


def refresh_member(blob: bytes) -> bytes:
    """Recompute the CRC of a (possibly mutated) ``.dcqi`` member (spec/WEBDATASET.md §2)."""
    b = bytearray(blob)
    b[28:32] = zlib.crc32(bytes(b[:28]) + bytes(b[32:])).to_bytes(4, "little")
    return bytes(b)


def sections_of(blob: bytes) -> dict[bytes, tuple[int, bytes]]:
    """tag -> (flags, bytes) of every section of a file."""
    table_offset, count = struct.unpack_from("<QI", blob, 24)
    out = {}
    for k in range(count):
        tag, flags, off, length, _, _ = L.SECTION.unpack_from(blob, table_offset + 32 * k)
        out[tag] = (flags, blob[off : off + length])
    return out


def assemble(sections: dict[bytes, tuple[int, bytes]], block: int = 65536) -> bytes:
    """A file of these sections, laid out canonically, with every CRC (and DCRC) computed."""
    sections = dict(sections)
    data = sections[L.TAG_DATA][1]
    crcs = [zlib.crc32(data[i : i + block]) for i in range(0, len(data), block)]
    sections[L.TAG_DCRC] = (0, L.DCRC_HEADER.pack(block, 0, len(crcs)) + b"".join(c.to_bytes(4, "little")
                                                                                 for c in crcs))
    order = [t for t in L.WRITE_ORDER if t in sections] + [t for t in sections if t not in L.WRITE_ORDER]
    body, entries, pos = bytearray(), [], L.HEADER_SIZE
    for tag in order:
        flags, content = sections[tag]
        pad = -pos % L.ALIGN
        body += bytes(pad)
        pos += pad
        entries.append(L.SECTION.pack(tag, flags, pos, len(content), zlib.crc32(content), 0))
        body += content
        pos += len(content)
    pad = -pos % L.ALIGN
    body += bytes(pad)
    pos += pad
    table = b"".join(entries)
    size = pos + len(table)
    head = L.HEADER.pack(L.MAGIC, L.VERSION_MAJOR, L.VERSION_MINOR, 0, size, pos, len(entries),
                         zlib.crc32(table), bytes(20), 0)
    head = head[:60] + zlib.crc32(head[:60]).to_bytes(4, "little")
    return head + bytes(body) + table


def recs(count: int, fields: dict[str, tuple[int, int]] | None = None, codec: int = L.CODEC_PACKED,
         stored: dict[str, tuple[int, list[int]]] | None = None) -> bytes:
    """A RECS section: ``fields`` affine (base, step) by name, ``stored`` (width, values) by name."""
    fields, stored = fields or {}, stored or {}
    stride = sum(w for w, _ in stored.values())
    head = bytearray(L.RECS_HEADER.pack(count, stride, len(L.FIELDS), codec, bytes(7)))
    rows = np.zeros((count if stride else 0, stride), np.uint8)
    column = 0
    for name in L.FIELDS:
        if name in stored:
            width, values = stored[name]
            head += L.FIELD.pack(L.MODE_STORED, width, column, 0, 0, 0)
            rows[:, column : column + width] = np.array(values, dtype=f"<u{width}").view(np.uint8).reshape(count, width)
            column += width
        else:
            base, step = fields.get(name, (0, 0))
            head += L.FIELD.pack(L.MODE_AFFINE, 0, 0, 0, base, step)
    head += bytes(-len(head) % L.RECS_ROWS_ALIGN)
    return bytes(head) + rows.tobytes()


def palt(bits: int = 2, channels: int = 3, count: int = 1) -> bytes:
    k = 1 << bits
    return L.PALT_HEADER.pack(count, bits, channels, 0) + bytes(range(256))[: k * channels] * count


def meta(obj: object) -> bytes:
    return json.dumps(obj).encode()


def base_sections(data: bytes, records: bytes, bits: int = 2, meta_obj: object | None = None,
                  ) -> dict[bytes, tuple[int, bytes]]:
    return {L.TAG_DATA: (0, data), L.TAG_RECS: (0, records), L.TAG_PALT: (0, palt(bits)),
            L.TAG_META: (0, meta(meta_obj if meta_obj is not None else {"name": "crafted"}))}


# -- the kinds -----------------------------------------------------------------------------------
def zstd_file(frames: list[bytes], h: int = 4, w: int = 4, bits: int = 2) -> bytes:
    """A zstd-codec file whose samples (h x w) have these payload frames."""
    offsets = np.cumsum([0] + [len(f) for f in frames[:-1]]).tolist()
    r = recs(len(frames), {"height": (h, 0), "width": (w, 0), "source_index": (0, 1)}, codec=L.CODEC_ZSTD,
             stored={"payload_offset": (8, offsets), "payload_length": (8, [len(f) for f in frames])})
    return assemble(base_sections(b"".join(frames), r, bits))


def frame(content: bytes, content_size: bool = False) -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(3, write_content_size=content_size)
    return zstandard.ZstdCompressor(compression_params=params).compress(content)


def declared_size_frame(declared: int) -> bytes:
    """A frame of :data:`GOOD` whose header claims ``declared`` bytes of content (8-byte FCS)."""
    good = frame(GOOD, content_size=True)
    fhd = good[4]
    single = (fhd >> 5) & 1
    fcs_at = 5 + (0 if single else 1)
    fcs_len = {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[fhd >> 6]
    return good[:4] + bytes([(fhd & 0x3F) | 0xC0]) + good[5:fcs_at] + declared.to_bytes(8, "little") \
        + good[fcs_at + fcs_len :]


def bomb_frame(size: int, content_size: bool) -> bytes:
    """A small frame that decompresses to ``size`` zero bytes."""
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=content_size)
    chunk = bytes(1 << 20)
    co = cctx.compressobj(size=size if content_size else -1)
    parts = [co.compress(chunk) for _ in range(size >> 20)] + [co.compress(bytes(size & ((1 << 20) - 1)))]
    return b"".join(parts) + co.flush()


def huge_count_file(count: int, bits: int = 2) -> bytes:
    """Every field affine, row stride 0: a file of a few hundred bytes claiming ``count`` samples
    that all share one payload byte."""
    r = recs(count, {"height": (2, 0), "width": (2, 0), "source_index": (0, 1), "payload_length": (1, 0)})
    return assemble(base_sections(bytes(64), r, bits))


def masked_file(mask_byte: int, h: int = 4, w: int = 6, patch: tuple[int, int] = (2, 2), bits: int = 2) -> bytes:
    """One masked sample whose one-byte mask is ``mask_byte`` (a 2x3 grid: bits 6 and 7 are padding)."""
    gh, gw = -(-h // patch[0]), -(-w // patch[1])
    dropped = [(mask_byte >> g) & 1 for g in range(gh * gw)]
    kept = sum(min(patch[0], h - (g // gw) * patch[0]) * min(patch[1], w - (g % gw) * patch[1])
               for g in range(gh * gw) if not dropped[g])
    length = (kept * bits + 7) // 8
    r = recs(1, {"height": (h, 0), "width": (w, 0), "payload_length": (length, 0), "mask_offset": (8, 0),
                 "flags": (L.RECORD_FLAG_MASKED, 0)})
    s = base_sections(bytes(max(length, 1)), r, bits)
    s[L.TAG_MASK] = (0, L.MASK_HEADER.pack(patch[0], patch[1], 0) + bytes([mask_byte]))
    return assemble(s)


def plain_file(meta_obj: object | None = None, source_index: int | None = None,
               weights: bytes | None = None, dequantizer: bytes | None = None) -> bytes:
    """Two 2x2 samples at 2 bits, with the given metadata, a stored u64 source index, weights
    (WGHT) and a dequantizer (DEQW)."""
    stored = {} if source_index is None else {"source_index": (8, [source_index, 1])}
    r = recs(2, {"height": (2, 0), "width": (2, 0), "payload_offset": (0, 1), "payload_length": (1, 0),
                 "label": (0, 1)}, stored=stored)
    s = base_sections(bytes([0b11100100, 0b00011011]), r, 2, meta_obj)
    if weights is not None:
        s[L.TAG_WGHT] = (0, weights)
    if dequantizer is not None:
        s[L.TAG_DEQW] = (L.SECTION_FLAG_SKIPPABLE, dequantizer)
    return assemble(s)


def safetensors(header: dict, data: bytes) -> bytes:
    """A safetensors buffer with this exact header (not checked: it may be hostile)."""
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + data


def mae_weights(config: dict, tensors: dict[str, tuple[list[int], bytes]] | None = None,
                key: str = "dcq-mae", fmt: str = "dcq-mae/1") -> bytes:
    """An MAE weights buffer with this config and (by default) one tiny F16 tensor (with ``key``
    and ``fmt``, another model's: ``"dcq-dequant"``, ``"dcq-dequant/1"``)."""
    tensors = tensors or {"embed.weight": ([2, 2], bytes(8))}
    header: dict = {"__metadata__": {key: json.dumps({"format": fmt, "config": config})}}
    pos, data = 0, b""
    for name, (shape, raw) in tensors.items():
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [pos, pos + len(raw)]}
        pos += len(raw)
        data += raw
    return safetensors(header, data)
