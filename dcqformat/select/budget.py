"""Splitting a sample budget over groups (classes, bins) by rates, never past a group's size."""

from __future__ import annotations

import numpy as np


def per_class(labels: np.ndarray, keep: float) -> dict[int, int]:
    """``floor(keep * n_c + 0.5)`` samples of every class (at least 1 of a non-empty class)."""
    classes, counts = np.unique(labels, return_counts=True)
    return {int(c): max(1, int(keep * n + 0.5)) for c, n in zip(classes, counts)}


def allocate(budget: int, rates: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Integers q with sum(q) == min(budget, sum(caps)), q <= caps, q about proportional to
    ``rates``: water-filling (a group at its cap gives its excess to the others in proportion
    to their rates), then largest remainders."""
    rates = np.asarray(rates, np.float64).clip(min=0)
    caps = np.asarray(caps, np.int64)
    budget = min(int(budget), int(caps.sum()))
    share = np.zeros(len(caps))
    free = caps > 0
    left = float(budget)
    while left > 1e-9 and free.any():
        r = rates * free
        r = r / r.sum() if r.sum() > 0 else free / free.sum()
        add = np.minimum(left * r, caps - share)
        share += add
        left -= add.sum()
        free &= share < caps - 1e-9
    q = np.floor(share + 1e-9).astype(np.int64)
    for g in np.argsort(-(share - q), kind="stable"):
        if q.sum() >= budget:
            break
        if q[g] < caps[g]:
            q[g] += 1
    return q
