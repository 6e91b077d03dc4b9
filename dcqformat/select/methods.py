"""Which samples to keep: random, DQ bins, ADQ rates, GraphCut; per class, reproducible for a seed."""

from __future__ import annotations

import numpy as np
import torch

from .budget import allocate, per_class
from .graphcut import graphcut, unit


def random_select(labels: np.ndarray, keep: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = [rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in per_class(labels, keep).items()]
    return np.sort(np.concatenate(out))


def graphcut_select(features: np.ndarray, labels: np.ndarray, keep: float) -> np.ndarray:
    """GraphCut per class, ``keep`` of each class."""
    out = []
    for c, k in per_class(labels, keep).items():
        members = np.flatnonzero(labels == c)
        out.append(members[graphcut(torch.from_numpy(features[members]), k).numpy()])
    return np.sort(np.concatenate(out))


def dq_bins(features: np.ndarray, labels: np.ndarray, bins: int) -> np.ndarray:
    """DQ's recursive bins: per class, bin b is GraphCut's pick of ``floor(n_c / bins + 0.5)``
    samples from what bins 0..b-1 left (the last bin takes the rest). Returns each sample's bin."""
    bin_of = np.full(len(labels), -1, np.int64)
    for c in np.unique(labels):
        pool = np.flatnonzero(labels == c)
        size = max(1, int(len(pool) / bins + 0.5))
        for b in range(bins):
            if len(pool) == 0:
                break
            take = len(pool) if b == bins - 1 else min(size, len(pool))
            picked = graphcut(torch.from_numpy(features[pool]), take).numpy()
            bin_of[pool[picked]] = b
            pool = np.delete(pool, picked)
    return bin_of


def sample_bins(bin_of: np.ndarray, labels: np.ndarray, keep: float, rates: np.ndarray, seed: int) -> np.ndarray:
    """Per class, the class budget split over its bins by ``rates`` (capped by each bin's
    size), then drawn uniformly inside each bin."""
    rng = np.random.default_rng(seed)
    bins = len(rates)
    out = []
    for c, budget in per_class(labels, keep).items():
        members = [np.flatnonzero((labels == c) & (bin_of == b)) for b in range(bins)]
        quota = allocate(budget, rates, np.array([len(m) for m in members]))
        out += [rng.choice(m, q, replace=False) for m, q in zip(members, quota) if q]
    return np.sort(np.concatenate(out))


def dq_select(bin_of: np.ndarray, labels: np.ndarray, keep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """DQ: the same fraction of every bin. Returns the indices and the bins' rates."""
    sizes = np.bincount(bin_of, minlength=bin_of.max() + 1).astype(np.float64)
    return sample_bins(bin_of, labels, keep, sizes, seed), sizes / sizes.sum()


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    """Mean cosine similarity over the distinct pairs of rows, in O(m d)."""
    u = unit(torch.from_numpy(vectors)).double()
    m = len(u)
    if m < 2:
        return 1.0
    return float((u.sum(0).pow(2).sum() - m) / (m * (m - 1)))


def adq_rates(bin_of: np.ndarray, texture: np.ndarray, views: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """ADQ: representativeness (mean Sobel texture of a bin's images) and diversity (1 / mean
    pairwise cosine of the features of two augmented views of them), each normalised to sum 1,
    averaged into importance I; rate r = alpha * I + (1 - alpha) * |bin| / total."""
    bins = bin_of.max() + 1
    sizes = np.bincount(bin_of, minlength=bins).astype(np.float64)
    rep = np.array([texture[bin_of == b].mean() if sizes[b] else 0.0 for b in range(bins)])
    div = np.array([1.0 / max(mean_pairwise_cosine(views[bin_of == b].reshape(-1, views.shape[-1])), 1e-6)
                    if sizes[b] else 0.0 for b in range(bins)])
    importance = 0.5 * (rep / rep.sum() + div / div.sum())
    rates = alpha * importance + (1 - alpha) * sizes / sizes.sum()
    return {"representativeness": rep, "diversity": div, "importance": importance, "rates": rates}
