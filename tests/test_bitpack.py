"""The NumPy reference codec: bit order, round trips, masks."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from dcqformat.decode import bitpack


def test_bit_order_is_lsb_first():
    # pixels 1, 2, 3, 0 at 2 bits: 01 | 10<<2 | 11<<4 | 00<<6 = 0b00111001
    assert bitpack.pack_indices(np.array([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    # 3-bit pixels cross bytes: 5, 6, 7 -> bits 101 011 111 (LSB first) -> 0xF5, 0x01
    assert bitpack.pack_indices(np.array([5, 6, 7]), 3).tolist() == [0b11110101, 0b00000001]
    assert bitpack.pack_indices(np.array([200]), 8).tolist() == [200]


@given(bits=st.integers(1, 8), n=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_roundtrip(bits, n, seed):
    idx = np.random.default_rng(seed).integers(0, 1 << bits, n).astype(np.uint8)
    packed = bitpack.pack_indices(idx, bits)
    assert packed.size == bitpack.packed_size(n, bits)
    np.testing.assert_array_equal(bitpack.unpack_indices(packed, bits, n), idx)
    if n * bits % 8:  # padding bits are zero
        assert packed[-1] >> (n * bits % 8) == 0


@given(h=st.integers(1, 20), w=st.integers(1, 20), ph=st.integers(1, 6), pw=st.integers(1, 6),
       seed=st.integers(0, 2**32 - 1))
def test_mask_geometry(h, w, ph, pw, seed):
    gh, gw = bitpack.grid_shape(h, w, ph, pw)
    dropped = np.random.default_rng(seed).random((gh, gw)) < 0.5
    packed = bitpack.pack_mask(dropped)
    assert packed.size == bitpack.mask_nbytes(h, w, ph, pw)
    np.testing.assert_array_equal(bitpack.unpack_mask(packed, gh, gw), dropped)
    order = bitpack.kept_pixel_order(h, w, ph, pw, dropped)
    pixel_dropped = np.repeat(np.repeat(dropped, ph, 0), pw, 1)[:h, :w].reshape(-1)
    assert len(set(order.tolist())) == order.size  # each kept pixel once
    np.testing.assert_array_equal(np.sort(order), np.flatnonzero(~pixel_dropped))
