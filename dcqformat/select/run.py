"""Selection over a conversion's image cache: features in batches, then the chosen method."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..pipeline.imaging import ImageCache
from ..pipeline.options import SELECTIONS
from ..pipeline.progress import progress as progress_of
from ..quantize.simple_quant import mediancut
from .features import embeddings, texture, view_features
from .methods import adq_rates, dq_bins, dq_select, graphcut_select, random_select, sample_bins

METHODS = SELECTIONS  # the names live in dcqformat.pipeline.options (no torch there)


def _features(cache: ImageCache, model: torch.nn.Module | None, kind: str, size: int, device: torch.device,
              batch: int, progress: bool, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    labels = np.array(cache.labels)
    parts = []
    for chunk, images in progress_of(cache.batches(batch), f"features ({kind})", total=-(-len(cache) // batch),
                                     unit="batches", enabled=progress):
        if transform is not None:
            images = [transform(im) for im in images]
        assert model is not None, "features need the attention model"
        parts.append(embeddings(model, images, labels[chunk], kind, size, device))
    return np.concatenate(parts).astype(np.float32)


def select(cache: ImageCache, model: torch.nn.Module | None, *, method: str, keep: float, bins: int = 10,
           features: str = "gradient",
           alpha: float = 0.65, bits: int = 2, size: int = 32, device: torch.device | str = "cpu",
           batch: int = 256, seed: int = 0, progress: bool = False) -> tuple[np.ndarray, dict]:
    """Positions in ``cache`` to keep (sorted) and a report for the file's metadata.

    ``graphcut`` is AutoPalette's colour-guided selection: GraphCut on the features of the
    images quantized (MedianCut, ``bits``), as AutoPalette initialises from median-cut images.
    """
    if method not in METHODS:
        raise ValueError(f"select must be one of {METHODS}, got {method!r}")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    device = torch.device(device)
    labels = np.array(cache.labels)
    report: dict = {"method": method, "keep": keep, "samples_in": len(cache)}
    if method == "random":
        chosen = random_select(labels, keep, seed)
    elif method == "graphcut":
        def quantized(im: np.ndarray) -> np.ndarray:
            idx, pal = mediancut(im, bits)
            return pal[idx]

        feats = _features(cache, model, features, size, device, batch, progress, quantized)
        chosen = graphcut_select(feats, labels, keep)
        report.update(features=features, quantized_with=f"mediancut, {bits} bits")
    else:
        feats = _features(cache, model, features, size, device, batch, progress)
        bin_of = dq_bins(feats, labels, bins)
        report.update(features=features, bins=bins, bin_sizes=np.bincount(bin_of, minlength=bins).tolist())
        if method == "dq":
            chosen, rates = dq_select(bin_of, labels, keep, seed)
        else:
            g = torch.Generator().manual_seed(seed)
            tex, views = [], []
            for _, images in progress_of(cache.batches(batch), "adq scores", total=-(-len(cache) // batch),
                                         unit="batches", enabled=progress):
                tex.append(texture(images))
                assert model is not None, "adq needs the attention model"
                views.append(view_features(model, images, size, device, g))
            scores = adq_rates(bin_of, np.concatenate(tex), np.concatenate(views), alpha)
            rates = scores["rates"]
            chosen = sample_bins(bin_of, labels, keep, rates, seed)
            report.update(alpha=alpha, **{k: [round(float(v), 6) for v in vals] for k, vals in scores.items()
                                          if k != "rates"})
        report["bin_rates"] = [round(float(r), 6) for r in rates]
    classes, counts = np.unique(labels[chosen], return_counts=True)
    report["per_class"] = {str(int(c)): int(k) for c, k in zip(classes, counts)}
    report["kept"] = int(len(chosen))
    return chosen, report
