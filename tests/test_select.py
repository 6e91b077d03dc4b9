"""Sample selection: GraphCut without an n x n matrix, budgets, DQ bins, ADQ rates, `dcq convert --keep`."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dcqformat
from dcqformat.cli import sample_data
from dcqformat.conversion import ConvertConfig, convert
from dcqformat.select import (
    adq_rates,
    allocate,
    dense_graphcut,
    dq_bins,
    dq_select,
    graphcut,
    graphcut_select,
    mean_pairwise_cosine,
    per_class,
    random_select,
    sample_bins,
)


def blobs(n_per=40, classes=3, d=8, seed=0):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n_per * classes, d)).astype(np.float32)
    labels = np.repeat(np.arange(classes), n_per)
    return feats, labels


def test_graphcut_equals_the_dense_reference_and_never_repeats():
    feats, _ = blobs(n_per=60, classes=1, d=5)
    picks = graphcut(torch.from_numpy(feats), 30)
    assert torch.equal(picks, dense_graphcut(torch.from_numpy(feats), 30))
    assert torch.equal(picks, graphcut(torch.from_numpy(feats), 30, dense_max=0))  # the O(n d) path
    assert len(set(picks.tolist())) == 30
    assert len(graphcut(torch.from_numpy(feats), 100)) == 60  # k beyond n: everything, once


def test_graphcut_prefers_representative_then_diverse_points():
    # a dense cluster and a few outliers: the first pick is in the cluster (representative)
    rng = np.random.default_rng(1)
    dense = rng.normal([5, 0, 0], 0.1, size=(50, 3))
    outliers = rng.normal([-5, 0, 0], 0.1, size=(5, 3)) @ np.diag([1, 1, 1])
    feats = torch.from_numpy(np.concatenate([dense, outliers]).astype(np.float32))
    picks = graphcut(feats, 3).tolist()
    assert picks[0] < 50


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 200), st.lists(st.floats(0, 5), min_size=1, max_size=8), st.data())
def test_allocate_respects_budget_and_caps(budget, rates, data):
    caps = np.array(data.draw(st.lists(st.integers(0, 50), min_size=len(rates), max_size=len(rates))))
    q = allocate(budget, np.array(rates), caps)
    assert (q >= 0).all() and (q <= caps).all() and q.sum() == min(budget, caps.sum())


def test_allocate_is_proportional_when_nothing_is_capped():
    assert allocate(10, np.array([1.0, 1.0, 2.0, 1.0]), np.array([100] * 4)).tolist() == [2, 2, 4, 2]
    assert allocate(10, np.array([1.0, 9.0]), np.array([100, 3])).tolist() == [7, 3]  # the excess moves


@pytest.mark.parametrize("method", ["random", "dq", "graphcut", "adq"])
def test_methods_keep_per_class_budgets_without_duplicates_reproducibly(method):
    feats, labels = blobs(n_per=50, classes=3)
    budgets = per_class(labels, 0.3)

    def run(seed):
        if method == "random":
            return random_select(labels, 0.3, seed)
        if method == "graphcut":
            return graphcut_select(feats, labels, 0.3)
        bin_of = dq_bins(feats, labels, 5)
        if method == "dq":
            return dq_select(bin_of, labels, 0.3, seed)[0]
        rng = np.random.default_rng(0)
        scores = adq_rates(bin_of, rng.random(len(labels)), rng.normal(size=(len(labels), 2, 4)), 0.65)
        return sample_bins(bin_of, labels, 0.3, scores["rates"], seed)

    a = run(7)
    assert len(np.unique(a)) == len(a) and np.all(np.diff(a) > 0)
    assert {int(c): int((labels[a] == c).sum()) for c in np.unique(labels)} == budgets
    assert np.array_equal(a, run(7))


def test_dq_bins_are_class_balanced_and_cover_everything():
    feats, labels = blobs(n_per=47, classes=2)
    bin_of = dq_bins(feats, labels, 10)
    assert (bin_of >= 0).all()
    for c in (0, 1):
        sizes = np.bincount(bin_of[labels == c], minlength=10)
        assert sizes[:9].tolist() == [5] * 9 and sizes[9] == 2
    chosen, rates = dq_select(bin_of, labels, 0.2, 0)
    assert np.allclose(rates, np.bincount(bin_of) / len(bin_of))


def test_views_are_crops_and_flips():
    from dcqformat.select.features import random_resized_crop

    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(64, 3, 1, 1)
    y = random_resized_crop(x, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    flipped = torch.tensor([torch.allclose(v, x[0].flip(2), atol=1e-4) for v in y])
    same = torch.tensor([torch.allclose(v, x[0], atol=1e-4) for v in y])
    assert (flipped | same).all() and 10 < int(flipped.sum()) < 54  # the whole image, flipped half the time


def test_adq_rates_follow_texture_and_diversity():
    bin_of = np.repeat(np.arange(3), 20)
    texture = np.repeat([0.1, 0.1, 0.4], 20)
    rng = np.random.default_rng(0)
    views = rng.normal(size=(60, 2, 16))
    views[:20] = 1.0  # bin 0: all views identical, no diversity
    scores = adq_rates(bin_of, texture, views, alpha=0.65)
    r = scores["rates"]
    assert abs(r.sum() - 1) < 1e-9 and r[2] > r[1] > r[0]
    assert abs(mean_pairwise_cosine(np.ones((4, 3))) - 1) < 1e-6


def test_graphcut_memory_stays_linear():
    """100,000 vectors: the O(n d) path; a dense matrix would need 40 GB."""
    feats = torch.randn(100_000, 16, generator=torch.Generator().manual_seed(0))
    assert len(set(graphcut(feats, 50).tolist())) == 50


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    d = tmp_path_factory.mktemp("sel")
    photos = sample_data.load_photo_crops(60)
    np.savez(d / "x.npz", x=photos.images, y=photos.labels % 3)
    return d / "x.npz"


@pytest.mark.parametrize("method", ["dq", "adq", "graphcut"])
def test_convert_keep_with_every_quantizer_and_dropping(npz, tmp_path, method):
    fast = {"model_epochs": 1, "model_images": 60, "refine_steps": 1, "refine_images": 2, "clusters": 3,
            "mae_epochs": 1, "mae_images": 16}
    quantizer = {"dq": "dcq", "adq": "mediancut", "graphcut": "kmeans"}[method]
    drop = 0.25 if method != "graphcut" else 0  # dropping with a shared palette and with a per-image one
    cfg = ConvertConfig(method=quantizer, keep=0.5, select=method, bins=4, drop_patches=drop, **fast)
    s = convert(str(npz), tmp_path / "k.dcq", cfg, progress=False)
    r = dcqformat.open(tmp_path / "k.dcq", verify=True)
    labels = np.load(npz)["y"]
    assert s.written == len(r) == sum(per_class(labels, 0.5).values())
    assert s.raw_bytes_in == np.load(npz)["x"].size and s.raw_bytes == s.raw_bytes_in * len(r) // len(labels)
    assert "x smaller than raw, all images read" in s.table(cfg)
    src = r.source_indices
    assert len(set(src.tolist())) == len(src) and np.array_equal(labels[src], r.labels)
    sel = r.meta["selection"]
    assert sel["method"] == method and sel["kept"] == len(r) and sum(sel["per_class"].values()) == len(r)


def test_cli_keep_and_info(npz, tmp_path):
    out = tmp_path / "c.dcq"
    r = subprocess.run([sys.executable, "-m", "dcqformat", "convert", str(npz), str(out), "--method", "mediancut",
                        "--keep", "0.3", "--select", "random", "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = subprocess.run([sys.executable, "-m", "dcqformat", "info", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert "selection: random, keep 0.3 (18 of 60)" in info.stdout, info.stdout
