"""Harmonic refill of dropped patches: the Numba kernel against its plain NumPy twin, and what
it recovers."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dcqformat.decode.inpaint import OMEGA, iterations, smooth_fill
from dcqformat.loaders.reconstruct import Reconstructor


def smooth_fill_twin(images: np.ndarray, hidden: np.ndarray, sweeps: int, omega: float) -> np.ndarray:
    """The spec of :func:`smooth_fill` in NumPy: whole red or black half-sweeps at once."""
    out = images.copy()
    n, c, h, w = images.shape
    yy, xx = np.mgrid[:h, :w]
    count = np.zeros((h, w), np.float32)
    count[1:] += 1
    count[:-1] += 1
    count[:, 1:] += 1
    count[:, :-1] += 1
    om = np.float32(omega)
    for b in range(n):
        hid = hidden[b].astype(bool)
        for ch in range(c):
            img = images[b, ch]
            seen = img[~hid]
            start = np.float32(seen.sum(dtype=np.float64) / seen.size) if seen.size else np.float32(0)
            v = np.where(hid, start, img.astype(np.float32)).astype(np.float32)
            for _ in range(sweeps):
                for colour in range(2):
                    s = np.zeros((h, w), np.float32)
                    s[1:] += v[:-1]
                    s[:-1] += v[1:]
                    s[:, 1:] += v[:, :-1]
                    s[:, :-1] += v[:, 1:]
                    update = hid & ((yy + xx) % 2 == colour) & (count > 0)
                    a = s / np.where(count > 0, count, np.float32(1))
                    v = np.where(update, v + om * (a - v), v).astype(np.float32)
            done = np.clip(np.floor(v + np.float32(0.5)), 0, 255).astype(np.uint8)
            out[b, ch] = np.where(hid, done, img)
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.sampled_from([1, 3]), st.integers(1, 12), st.integers(1, 12), st.integers(0, 12),
       st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_kernel_equals_twin(jit, n, c, h, w, sweeps, ratio, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)
    hidden = rng.random((n, h, w)) < ratio  # all hidden included: the fill is then 0
    want = smooth_fill_twin(images, hidden, sweeps, OMEGA)
    got = smooth_fill(images.copy(), hidden, sweeps, OMEGA)
    assert np.array_equal(got, want)


def test_visible_pixels_unchanged_and_smooth_images_come_back():
    """A linear ramp is harmonic: a hole inside the image comes back to within a level (holes at
    the border flatten towards it: no neighbour outside the image pulls them)."""
    yy, xx = np.mgrid[:32, :32]
    ramp = np.stack([4 * yy + 2 * xx, 255 - 3 * xx, 7 * yy]).clip(0, 255).astype(np.uint8)[None]
    dropped = torch.zeros(1, 8, 8, dtype=torch.bool)
    dropped[0, 2:5, 3:6] = True  # a 12 x 12 px hole
    dropped[0, 0, 0] = dropped[0, 7, 7] = True  # corners
    rec = Reconstructor("smooth", weights=None, patch=(4, 4))
    out = rec.fill(torch.from_numpy(ramp.copy()), dropped).numpy()
    hidden = dropped.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None].expand(-1, 3, -1, -1).numpy()
    assert np.array_equal(out[~hidden], ramp[~hidden])
    inner = np.zeros_like(hidden)
    inner[:, :, 8:20, 12:24] = True
    assert np.abs(out.astype(int) - ramp)[inner].max() <= 1
    assert out[hidden].min() >= ramp.min() and out[hidden].max() <= ramp.max()
    assert iterations(4) == 16 and iterations(16) == 64


@pytest.mark.parametrize("mode", ["smooth", "mean"])
def test_smooth_beats_the_mean_on_photos(mode):
    from dcqformat.cli import sample_data

    photos = sample_data.load_photo_crops(32)
    x = torch.from_numpy(np.stack(photos.images)).permute(0, 3, 1, 2).contiguous()
    g = torch.Generator().manual_seed(0)
    dropped = torch.rand(len(x), 8, 8, generator=g) < 0.25
    hidden = dropped.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None].expand_as(x)
    err = {m: (Reconstructor(m, weights=None, patch=(4, 4)).fill(x.clone(), dropped).float() - x.float())[hidden]
           .pow(2).mean() for m in ("smooth", "mean")}
    assert err["smooth"] < 0.7 * err["mean"], err
