"""The conversion context: what every stage of one conversion shares, in one typed object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..imaging import ImageCache
from .attention import attention_model
from .config import ConvertConfig, ConvertSummary, Stage


@dataclass
class Conversion:
    """Built by :func:`dcqformat.convert`, handed to every stage.

    ``cache`` holds the decoded images (a selection stage replaces it by the kept ones),
    ``summary`` collects counts and timings for the user, ``meta`` what goes into the file.
    The attention model is built once, by the first stage that needs it.
    """

    cache: ImageCache
    classes: list[str]
    cfg: ConvertConfig
    device: torch.device
    summary: ConvertSummary
    meta: dict[str, Any]
    progress: bool
    samples_per_file: int | None = None  # write a dataset directory of part files
    _model: torch.nn.Module | None = field(default=None, repr=False)

    def attention_model(self, rng: np.random.Generator | None = None) -> torch.nn.Module:
        """The attention model: trained (or loaded) on first use, drawing its training sample
        from ``rng`` (default: a generator seeded with the config's seed)."""
        if self._model is None:
            rng = rng if rng is not None else np.random.default_rng(self.cfg.seed)
            with Stage(self.summary, "attention model"):
                self._model, report = attention_model(self.cache, self.classes, self.cfg, self.device, rng,
                                                      self.progress)
            self.summary.model = report
            # Timings stay in the summary: a file's bytes depend on the data, the config and the seed only.
            self.meta["quantizer"]["attention_model"] = {k: v for k, v in report.items() if k != "seconds"}
        return self._model
