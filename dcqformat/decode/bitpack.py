"""Plain NumPy reference implementations of the .dcq codec.

These are the readable twins of the Numba kernels in :mod:`dcqformat.decode.kernels`; the tests
check that both agree. They are also what the writer uses to pack indices.

Bit order (spec/FORMAT.md, "Bit packing"): the pixels of a payload form one bit stream,
pixel ``j`` occupying bits ``j*bits .. j*bits+bits-1``; stream bit ``t`` is bit ``t % 8``
(least significant first) of byte ``t // 8``. The last byte is padded with zero bits.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

N = TypeVar("N", int, np.ndarray)


def packed_size(n_pixels: N, bits: int) -> N:
    """Bytes taken by ``n_pixels`` indices of ``bits`` bits, padded to a whole byte (ints or arrays)."""
    return (n_pixels * bits + 7) // 8


def pack_indices(indices: np.ndarray, bits: int) -> np.ndarray:
    """Pack palette indices (any shape, values < 2**bits) into the LSB-first bit stream."""
    flat = np.ascontiguousarray(indices, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return flat.copy()
    planes = (flat[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_indices(buf: np.ndarray, bits: int, n_pixels: int) -> np.ndarray:
    """Inverse of :func:`pack_indices`: ``n_pixels`` uint8 indices from a bit stream."""
    stream = np.unpackbits(np.asarray(buf, dtype=np.uint8), bitorder="little")
    planes = stream[: n_pixels * bits].reshape(n_pixels, bits).astype(np.uint8)
    return (planes << np.arange(bits, dtype=np.uint8)).sum(axis=1, dtype=np.uint8)


def gather(indices: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Look indices up in a ``(K, C)`` palette: ``(H, W)`` -> ``(H, W, C)`` uint8."""
    return palette[indices]


def grid_shape(height: N, width: N, patch_h: int, patch_w: int) -> tuple[N, N]:
    """Patch grid of an image: edge patches are clipped to the image (ints or arrays)."""
    return -(-height // patch_h), -(-width // patch_w)


def mask_nbytes(height: N, width: N, patch_h: int, patch_w: int) -> N:
    """Bytes of one drop mask: one bit per patch, padded to a whole byte (ints or arrays)."""
    gh, gw = grid_shape(height, width, patch_h, patch_w)
    return (gh * gw + 7) // 8


def pack_mask(dropped: np.ndarray) -> np.ndarray:
    """Pack a ``(gh, gw)`` boolean drop mask (True = dropped), patch order row-major, LSB first."""
    return np.packbits(np.asarray(dropped, dtype=bool).reshape(-1), bitorder="little")


def unpack_mask(buf: np.ndarray, gh: int, gw: int) -> np.ndarray:
    """Inverse of :func:`pack_mask`."""
    bits = np.unpackbits(np.asarray(buf, dtype=np.uint8), bitorder="little")
    return bits[: gh * gw].reshape(gh, gw).astype(bool)


def kept_pixel_order(
    height: int, width: int, patch_h: int, patch_w: int, dropped: np.ndarray
) -> np.ndarray:
    """Flat (row-major) pixel positions of the kept pixels, in payload order.

    Kept patches come in row-major grid order; inside a patch, its in-bounds pixels come
    in row-major order.
    """
    order = []
    ys, xs = np.nonzero(~np.asarray(dropped, dtype=bool))
    for gy, gx in zip(ys.tolist(), xs.tolist()):
        y0, x0 = gy * patch_h, gx * patch_w
        rows = np.arange(y0, min(y0 + patch_h, height))
        cols = np.arange(x0, min(x0 + patch_w, width))
        order.append((rows[:, None] * width + cols[None, :]).reshape(-1))
    if not order:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(order).astype(np.int64)


def dropped_pixels(dropped: np.ndarray, patch_h: int, patch_w: int, height: int, width: int) -> np.ndarray:
    """(..., H, W) bool: True where a pixel lies in a dropped patch of the (..., gh, gw) mask(s)."""
    return np.repeat(np.repeat(np.asarray(dropped, bool), patch_h, -2), patch_w, -1)[..., :height, :width]


def index_map(stream: np.ndarray, bits: int, height: int, width: int,
              mask: tuple[int, int, np.ndarray] | None = None) -> np.ndarray:
    """The (H, W) uint8 palette indices of a sample's stream; dropped pixels read 0.

    ``mask`` is ``(patch_h, patch_w, dropped)`` for a masked sample.
    """
    if mask is None:
        return unpack_indices(stream, bits, height * width).reshape(height, width)
    order = kept_pixel_order(height, width, *mask)
    out = np.zeros(height * width, dtype=np.uint8)
    out[order] = unpack_indices(stream, bits, order.size)
    return out.reshape(height, width)


def decode_image(
    payload: np.ndarray,
    palette: np.ndarray,
    bits: int,
    height: int,
    width: int,
    mask: tuple[int, int, np.ndarray] | None = None,
) -> np.ndarray:
    """Reference decode of one sample's bit stream to ``(H, W, C)`` uint8.

    ``mask`` is ``(patch_h, patch_w, dropped)``; dropped pixels decode to 0 in every channel.
    """
    image = gather(index_map(payload, bits, height, width, mask), palette)
    if mask is not None:
        image[dropped_pixels(mask[2], mask[0], mask[1], height, width)] = 0
    return image
