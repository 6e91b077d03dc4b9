"""AutoPalette's palette network (issue 15): its losses on hand-made maps, the hard decode
against what is stored, determinism for a seed, and the CLI end to end on small data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from common import gradient_npz

import dcqformat
from dcqformat.quantize.autopalette import (
    PaletteNet,
    hard_palette,
    loss_align,
    loss_balance,
    loss_max,
    soft_quantize,
    train_palette_net,
)


def onehot_map(idx: np.ndarray, k: int, sharp: float = 1.0) -> torch.Tensor:
    """A (1, K, H, W) map putting ``sharp`` of each pixel's mass on ``idx`` and the rest evenly."""
    m = torch.full((1, k, *idx.shape), (1 - sharp) / max(k - 1, 1))
    m.scatter_(1, torch.from_numpy(idx)[None, None].long(), sharp)
    return m


def test_loss_max_prefers_maps_that_use_every_colour():
    one = onehot_map(np.zeros((4, 4), np.int64), 4)
    every = onehot_map(np.arange(16).reshape(4, 4) % 4, 4)
    assert loss_max(one) > loss_max(every)
    assert float(loss_max(every)) == pytest.approx(-1.0)


def test_loss_balance_is_least_for_uniform_usage():
    uniform = onehot_map(np.arange(16).reshape(4, 4) % 4, 4)
    skewed = onehot_map(np.array([[0, 0, 0, 1]] * 4), 4)
    assert float(loss_balance(uniform)) == pytest.approx(-np.log(4), abs=1e-6)
    assert loss_balance(skewed) > loss_balance(uniform)


def test_loss_align_is_zero_for_the_same_partition_under_other_labels():
    idx = np.array([[0, 0, 1, 1], [2, 2, 3, 3]] * 2)
    pick = torch.arange(16)
    relabelled = torch.from_numpy((idx + 1) % 4)[None]
    assert float(loss_align(onehot_map(idx, 4), relabelled, pick)) == pytest.approx(0.0, abs=1e-6)
    other = torch.from_numpy(np.zeros_like(idx))[None]
    assert float(loss_align(onehot_map(idx, 4), other, pick)) > 0.1


def test_soft_quantize_of_a_hard_map_is_the_mean_colours():
    x = torch.rand(1, 3, 4, 4)
    idx = np.arange(16).reshape(4, 4) % 2
    img, colours = soft_quantize(x, onehot_map(idx, 2))
    for k in range(2):
        assert torch.allclose(colours[0, k], x[0, :, torch.from_numpy(idx == k)].mean(1), atol=1e-6)
    assert torch.allclose(img[0, :, 0, 0], colours[0, 0], atol=1e-6)


@pytest.mark.parametrize("rule", ["argmax", "nearest"])
def test_hard_decode_and_mean_colours(rule):
    torch.manual_seed(0)
    net = PaletteNet(4).eval()
    img = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    idx, pal = hard_palette(net, img, torch.device("cpu"), rule)
    with torch.no_grad():
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        m = net(x)
        _, soft = soft_quantize(x, m)
        want = m.argmax(1)[0] if rule == "argmax" else torch.cdist(x.flatten(2)[0].T, soft[0]).argmin(1).reshape(6, 7)
    np.testing.assert_array_equal(idx, want.numpy())
    for k in np.unique(idx):
        np.testing.assert_array_equal(pal[k], np.round(img[idx == k].astype(float).mean(0)).astype(np.uint8))


def test_training_is_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    y = np.arange(40) % 3
    a, ra = train_palette_net(x, y, 3, 2, epochs=2, seed=4, device=torch.device("cpu"), seconds=None, batch=16)
    b, rb = train_palette_net(x, y, 3, 2, epochs=2, seed=4, device=torch.device("cpu"), seconds=None, batch=16)
    assert ra.steps == rb.steps == 4 and ra.final_losses == rb.final_losses
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("method", ["autopalette", "autopalette-shared"])
def test_cli_end_to_end(tmp_path, method):
    gradient_npz(tmp_path / "src.npz", n=40, side=16, step=12, noise=25, classes=list("abcd"), seed=3)
    out = tmp_path / "a.dcq"
    run = subprocess.run([sys.executable, "-m", "dcqformat", "convert", str(tmp_path / "src.npz"), str(out),
                          "--method", method, "--bits", "2", "--epochs", "2", "--clusters", "3", "--codec", "ctx",
                          "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    r = dcqformat.open(out, verify=True)
    assert len(r) == 40 and len(r.palettes) == (3 if method.endswith("shared") else 40)
    net = r.meta["quantizer"]["palette_network"]
    assert set(net["final_losses"]) == {"task", "max", "balance", "align"} and net["steps"] > 0
    info = subprocess.run([sys.executable, "-m", "dcqformat", "info", str(out)], capture_output=True, text=True)
    assert "palette_network" in info.stdout and "final_losses" in info.stdout
    assert json.loads(json.dumps(r.meta))["quantizer"]["name"] == method


def test_ablation_switches_a_loss_off(tmp_path):
    gradient_npz(tmp_path / "src.npz", n=24, side=12, step=12, noise=25, classes=list("ab"), seed=4)
    s = dcqformat.convert(str(tmp_path / "src.npz"), tmp_path / "a.dcq", method="autopalette", bits=1,
                          model_epochs=1, palette_losses="balance,align", progress=False)
    assert s.written == 24
    weights = dcqformat.open(tmp_path / "a.dcq").meta["quantizer"]["palette_network"]["weights"]
    assert weights == {"max": 0.0, "balance": 1.0, "align": 3.0}
    with pytest.raises(ValueError, match="palette_losses"):
        dcqformat.convert(str(tmp_path / "src.npz"), tmp_path / "b.dcq", method="autopalette", palette_losses="typo",
                          progress=False)
