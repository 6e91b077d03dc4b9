"""Debanding on decode: the Numba kernel against its plain NumPy twin, and what it restores."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dcqformat.decode import PaletteSet, concat, decode_debanded, decode_images
from dcqformat.decode.bitpack import pack_indices
from dcqformat.decode.deband import deband_batch, weight_tables


def deband_twin(maps: np.ndarray, table_ids: np.ndarray, palettes: np.ndarray, weights: np.ndarray,
                hidden: np.ndarray | None) -> np.ndarray:
    """The spec of :func:`deband_batch` in NumPy: the nine neighbour offsets in order, each a whole
    plane at once; a neighbour outside the image or hidden adds a weight of +0.0 (exact in float32)."""
    n, h, w = maps.shape
    c = palettes.shape[2]
    out = np.zeros((n, c, h, w), np.uint8)
    for b in range(n):
        pal, wt, a = palettes[table_ids[b]], weights[table_ids[b]], maps[b].astype(np.int64)
        hid = np.zeros((h, w), bool) if hidden is None else hidden[b]
        padded = np.pad(a, 1)
        inside = np.pad(~hid, 1, constant_values=False)
        total = np.zeros((h, w), np.float32)
        acc = np.zeros((c, h, w), np.float32)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                q = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                ok = inside[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                wq = np.where(ok, wt[a, q], np.float32(0)).astype(np.float32)
                total += wq
                acc += wq[None] * pal[q].transpose(2, 0, 1).astype(np.float32)
        v = np.clip(np.floor(acc / np.where(total > 0, total, 1) + np.float32(0.5)), 0, 255).astype(np.uint8)
        out[b] = np.where(hid[None], 0, v)
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.sampled_from([1, 3]), st.integers(1, 4), st.integers(1, 10), st.integers(1, 10),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_kernel_equals_twin(jit, n, c, bits, h, w, masked, seed):
    rng = np.random.default_rng(seed)
    k = 1 << bits
    palettes = rng.integers(0, 256, (3, k, c), dtype=np.uint8)
    palettes[0, 1:] = palettes[0, 0]  # a palette of one colour repeated: every weight 1
    palettes[1, :, :] = palettes[1, :, :] // 16 * 16  # near-equal colours, and duplicates
    maps = rng.integers(0, k, (n, h, w), dtype=np.uint8)
    ids = rng.integers(0, 3, n).astype(np.int64)
    hidden = rng.random((n, h, w)) < 0.3 if masked else None
    weights = weight_tables(palettes)
    want = deband_twin(maps, ids, palettes, weights, hidden)
    out = np.full((n, c, h, w), 7, np.uint8)
    got = deband_batch(maps, ids, palettes, weights, hidden if masked else np.zeros((0, 1, 1), bool), out)
    assert np.array_equal(got, want)


def test_weights_soften_near_colours_and_keep_far_ones():
    pal = np.array([[[0, 0, 0], [10, 10, 10], [20, 20, 20], [250, 250, 250]]], np.uint8)
    wt = weight_tables(pal)[0]
    assert wt.shape == (4, 4) and np.allclose(np.diag(wt), 1)
    assert wt[1, 0] > 0.2 and wt[1, 2] > 0.2  # the nearest colours count
    assert wt[2, 3] < 1e-6 and wt[3, 2] < 1e-6  # a jump across the palette is an edge


def test_a_quantized_ramp_comes_back_closer_and_an_edge_stays():
    """A smooth horizontal ramp in 8 levels: debanding brings it closer to the ramp; a black/white
    edge next to it is left as it was."""
    h, w = 16, 64
    ramp = np.tile(np.linspace(40, 120, w), (h, 1))
    levels = np.linspace(40, 120, 8)
    maps = np.abs(ramp[..., None] - levels).argmin(-1).astype(np.uint8)
    maps[:, :8] = 0
    pal = np.zeros((1, 16, 1), np.uint8)
    pal[0, :8, 0] = levels.round()
    pal[0, 8, 0] = 255
    maps[:, 4:8] = 8  # a white bar: a real edge against level 0 on both sides
    s = concat([(pack_indices(maps.reshape(-1), 4), h, w, 0, None)], 4, None)
    ps = PaletteSet(pal, 4)
    lookup = decode_images(s, ps, np.empty((1, 1, h, w), np.uint8), True)[0, 0].astype(float)
    restored = decode_debanded(s, ps, np.empty((1, 1, h, w), np.uint8))[0, 0].astype(float)
    region = np.s_[:, 10:-1]
    err_lookup = np.abs(lookup[region] - ramp[region]).mean()
    err_restored = np.abs(restored[region] - ramp[region]).mean()
    assert err_restored < 0.95 * err_lookup
    assert np.array_equal(restored[:, 3:9], lookup[:, 3:9])  # the bar and its dark borders: untouched
