"""k-means with k-means++ seeding, batched, deterministic for a generator, on any device."""

from __future__ import annotations

import torch


def _nearest(x: torch.Tensor, centres: torch.Tensor, chunk: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor]:
    idx, dist = [], []
    for s in range(0, len(x), chunk):
        d = torch.cdist(x[s : s + chunk], centres).pow(2)
        m = d.min(1)
        idx.append(m.indices)
        dist.append(m.values)
    return torch.cat(idx), torch.cat(dist)


def kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeds: each next centre drawn with probability proportional to D^2."""
    n = len(x)
    first = int(torch.randint(n, (1,), generator=generator).item())
    centres = [x[first]]
    d2 = (x - x[first]).pow(2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than centres
            centres.append(x[int(torch.randint(n, (1,), generator=generator).item())])
            continue
        probs = (d2 / total).cpu().double()
        pick = int(torch.multinomial(probs, 1, generator=generator).item())
        centres.append(x[pick])
        d2 = torch.minimum(d2, (x - x[pick]).pow(2).sum(1))
    return torch.stack(centres)


def kmeans(x: torch.Tensor, k: int, *, iters: int = 25, seed: int = 0,
           init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the rows of ``x`` (N, D) into ``k``; return ``(centres (k, D), assignment (N,))``.

    Empty clusters are re-seeded at the points farthest from their centres.
    """
    g = torch.Generator().manual_seed(seed)
    x = x.float()
    k = max(1, min(k, len(x)))
    centres = init.clone().float() if init is not None else kmeans_pp(x, k, g)
    assign = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for _ in range(iters):
        assign, dist = _nearest(x, centres)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        new = sums / counts.clamp(min=1)[:, None]
        if empty.any():
            far = dist.argsort(descending=True)[: int(empty.sum())]
            new[empty] = x[far]
        if torch.allclose(new, centres):
            centres = new
            break
        centres = new
    assign, _ = _nearest(x, centres)
    return centres, assign
