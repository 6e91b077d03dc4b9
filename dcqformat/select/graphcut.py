"""Greedy GraphCut selection (submodular), with s = 0.5 + 0.5 cos, without an n x n matrix.

The gain of a candidate x given the chosen set S is ``sum_{i in pool} s(i, x) - 2 sum_{j in S}
s(j, x)`` (GraphCut with lambda = 1, as DQ and AutoPalette use it). With unit feature vectors
the first term is ``0.5 n + 0.5 <sum_i f_i, f_x>``, one matrix-vector product for the whole
pool, and the second grows by one row ``s(j, .)`` per pick. Up to ``DENSE_MAX`` samples the
rows come from a precomputed n x n matrix (at most 8192^2 float32 = 256 MiB, made by one
matrix product: fast); above it each row is computed when picked, so memory is O(n d) (the
features and two length-n vectors), never O(n^2), and time O(k n d) for k picks.
"""

from __future__ import annotations

import torch


def unit(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.float(), dim=1)


DENSE_MAX = 8192


def graphcut(features: torch.Tensor, k: int, dense_max: int = DENSE_MAX) -> torch.Tensor:
    """Indices (k,) into ``features`` (n, d), in the order picked; ties go to the lower index."""
    f = unit(features)
    n = len(f)
    k = min(k, n)
    gain = 0.5 * n + 0.5 * (f @ f.sum(0))
    sims = f @ f.T if n <= dense_max and k > 1 else None
    chosen = torch.empty(k, dtype=torch.long, device=f.device)
    for step in range(k):
        x = int(torch.argmax(gain))
        chosen[step] = x
        gain -= 2 * (0.5 + 0.5 * (sims[x] if sims is not None else f @ f[x]))
        gain[x] = -torch.inf
    return chosen


def dense_graphcut(features: torch.Tensor, k: int) -> torch.Tensor:
    """The same selection from the dense similarity matrix: the reference for the tests."""
    f = unit(features)
    s = 0.5 + 0.5 * f @ f.T
    total = s.sum(0)
    chosen: list[int] = []
    for _ in range(min(k, len(f))):
        gain = total - 2 * (s[chosen].sum(0) if chosen else 0)
        gain[chosen] = -torch.inf
        chosen.append(int(torch.argmax(gain)))
    return torch.tensor(chosen, dtype=torch.long)
