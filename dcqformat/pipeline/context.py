"""The conversion context: what every stage of one conversion shares, in one typed object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .checkpoint import Checkpoints
from .distributed import Group
from .imaging import ImageCache
from .summary import ConvertConfig, ConvertSummary


@dataclass
class Conversion:
    """Built by :func:`dcqformat.convert`, handed to every stage.

    ``cache`` holds the decoded images (a selection stage replaces it by the kept ones),
    ``summary`` collects counts and timings for the user, ``meta`` what goes into the file.
    The attention model is built once, by the first stage that needs it
    (:func:`dcqformat.quantize.attention.shared_model`), and kept in ``model``.
    """

    cache: ImageCache
    classes: list[str]
    cfg: ConvertConfig
    device: torch.device
    summary: ConvertSummary
    meta: dict[str, Any]
    progress: bool
    samples_per_file: int | None = None  # write a dataset directory of part files
    checkpoints: Checkpoints = field(default_factory=lambda: Checkpoints(None, "", False, False))
    group: Group = field(default_factory=Group)  # the processes converting together (dcqformat.pipeline.distributed)
    shared_positions: np.ndarray | None = None  # over several ranks: the global position of each cached image
    shared_total: int | None = None  # over several ranks: the images of all of them
    model: torch.nn.Module | None = field(default=None, repr=False)  # the attention model, once built

    @property
    def positions(self) -> np.ndarray:
        """The position of each cached image in the whole dataset (its rank's share, in order)."""
        return self.shared_positions if self.shared_positions is not None else np.arange(len(self.cache))

    @property
    def total(self) -> int:
        """Images in the whole dataset, over every rank (no collective: known at construction)."""
        return self.shared_total if self.shared_total is not None else len(self.cache)
