"""Sample selection (needs torch): DQ bins, ADQ rates, GraphCut, random; per class."""

from .budget import allocate, per_class
from .graphcut import dense_graphcut, graphcut
from .methods import adq_rates, dq_bins, dq_select, graphcut_select, mean_pairwise_cosine, random_select, sample_bins
from .run import METHODS, select

__all__ = ["METHODS", "adq_rates", "allocate", "dense_graphcut", "dq_bins", "dq_select", "graphcut",
           "graphcut_select", "mean_pairwise_cosine", "per_class", "random_select", "sample_bins", "select"]
