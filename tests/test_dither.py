"""Floyd-Steinberg dithering (the ``dither`` option): the Numba kernel against a plain twin, what
it is for (local means kept), and conversions that use it."""

from __future__ import annotations

import numpy as np
import pytest
from common import gradient_npz

import dcqformat
from dcqformat.quantize.dither import dither


def error_diffusion_twin(image: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """The textbook loop (tests only)."""
    work = image.astype(np.float32)
    pal = palette.astype(np.float32)
    h, w, _ = image.shape
    out = np.zeros((h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            v = np.clip(work[y, x], 0, 255)
            best = int(np.argmin(((v[None, :] - pal) ** 2).sum(1)))
            out[y, x] = best
            err = v - pal[best]
            for dy, dx, wt in ((0, 1, 7), (1, -1, 3), (1, 0, 5), (1, 1, 1)):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    work[y + dy, x + dx] += err * np.float32(wt / 16)
    return out


def test_kernel_matches_the_twin(jit):
    rng = np.random.default_rng(0)
    for c in (1, 3):
        images = rng.integers(0, 256, (3, 7, 9, c)).astype(np.uint8)
        pals = rng.integers(0, 256, (3, 4, c)).astype(np.uint8)
        got = dither(images, pals)
        for b in range(3):
            np.testing.assert_array_equal(got[b], error_diffusion_twin(images[b], pals[b]))


def test_dithering_keeps_local_means():
    ramp = np.repeat(np.linspace(0, 255, 64)[None, :, None], 32, 0).repeat(3, 2).astype(np.uint8)
    pal = np.array([[0, 0, 0], [85, 85, 85], [170, 170, 170], [255, 255, 255]], np.uint8)
    plain = np.argmin(((ramp[..., None, :].astype(int) - pal.astype(int)) ** 2).sum(-1), -1)

    def block_error(idx: np.ndarray) -> float:
        img = pal[idx].astype(float)
        blocks = lambda a: a.reshape(4, 8, 8, 8, 3).mean((1, 3))  # noqa: E731
        return float(np.abs(blocks(img) - blocks(ramp.astype(float))).mean())

    assert block_error(dither(ramp[None], pal[None])[0]) < 0.5 * block_error(plain)


def test_dithered_conversions(tmp_path):
    gradient_npz(tmp_path / "src.npz", n=16, side=16, step=12, noise=5, classes=list("ab"), seed=4)
    for method in ("mediancut", "kmeans"):
        plain = dcqformat.convert(str(tmp_path / "src.npz"), tmp_path / f"{method}.dcq", method=method, bits=2,
                                  progress=False)
        dithered = dcqformat.convert(str(tmp_path / "src.npz"), tmp_path / f"{method}-d.dcq", method=method,
                                     bits=2, dither=True, progress=False, codec="ctx")
        assert plain.written == dithered.written == 16
        a, b = dcqformat.open(tmp_path / f"{method}.dcq"), dcqformat.open(tmp_path / f"{method}-d.dcq")
        assert not np.array_equal(a.indices(0), b.indices(0))
        assert dcqformat.open(tmp_path / f"{method}-d.dcq").metadata.raw["quantizer"]["config"]["dither"] is True
    s = dcqformat.convert(str(tmp_path / "src.npz"), tmp_path / "dcq-d.dcq", method="dcq", bits=2, dither=True,
                          clusters=2, model_epochs=1, progress=False)
    assert s.written == 16 and dcqformat.open(tmp_path / "dcq-d.dcq", verify=True).metadata.raw["quantizer"]


def test_byte_budget_picks_bits_and_codec_that_fit(tmp_path):
    """--bytes-per-image: the most bits whose estimate fits, the fastest codec at those bits; the
    file comes out near the estimate; an impossible budget is refused before any training."""
    from dcqformat import DcqError
    from dcqformat.conversion.budget import Estimate, choose

    found = [Estimate(2, "packed", 80), Estimate(2, "ctx", 40), Estimate(3, "packed", 110), Estimate(3, "zstd", 90),
             Estimate(3, "ctx", 60), Estimate(4, "ctx", 95)]
    assert choose(found, 100) == Estimate(4, "ctx", 95)
    assert choose(found, 92) == Estimate(3, "zstd", 90)
    assert choose(found, 70) == Estimate(3, "ctx", 60)
    with pytest.raises(DcqError, match="no setting fits 10 bytes"):
        choose(found, 10)
    gradient_npz(tmp_path / "src.npz", n=48, side=24, step=12, noise=5, classes=list("ab"), seed=5)
    for budget in (150.0, 400.0):
        s = dcqformat.convert(str(tmp_path / "src.npz"), tmp_path / f"b{budget}.dcq", method="mediancut",
                              bytes_per_image=budget, progress=False)
        assert s.config is not None and f"{budget:g} B/image: {s.config.bits} bits" in s.budget
        assert s.file_bytes / s.written <= budget * 1.15
        r = dcqformat.open(tmp_path / f"b{budget}.dcq")
        assert (r.bits, r.codec) == (s.config.bits, s.config.codec)
    with pytest.raises(DcqError, match="no setting fits"):
        dcqformat.convert(str(tmp_path / "src.npz"), tmp_path / "none.dcq", method="mediancut", bytes_per_image=3,
                          progress=False)
    assert not (tmp_path / "none.dcq").exists()
