"""The conversion context: what every stage of one conversion shares, in one typed object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..distributed import Group
from ..imaging import ImageCache
from .attention import attention_model
from .checkpoint import Checkpoints, rng_state, set_rng_state
from .config import ConvertConfig, ConvertSummary, Stage
from .model import load_model, save_model


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
    checkpoints: Checkpoints = field(default_factory=lambda: Checkpoints(None, "", False, False))
    group: Group = field(default_factory=Group)  # the processes converting together (dcqformat.distributed)
    shared_positions: np.ndarray | None = None  # over several ranks: the global position of each cached image
    shared_total: int | None = None  # over several ranks: the images of all of them
    _model: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def positions(self) -> np.ndarray:
        """The position of each cached image in the whole dataset (its rank's share, in order)."""
        return self.shared_positions if self.shared_positions is not None else np.arange(len(self.cache))

    @property
    def total(self) -> int:
        """Images in the whole dataset, over every rank (no collective: known at construction)."""
        return self.shared_total if self.shared_total is not None else len(self.cache)

    def attention_model(self, rng: np.random.Generator | None = None) -> torch.nn.Module:
        """The attention model: trained (or loaded) on first use, drawing its training sample
        from ``rng`` (default: a generator seeded with the config's seed)."""
        if self._model is None:
            rng = rng if rng is not None else np.random.default_rng(self.cfg.seed)
            ck = self.checkpoints
            with Stage(self.summary, "attention model"):
                if ck.has("model"):  # a resumed conversion: the model of the killed run
                    _, info = ck.load("model")
                    self._model, report = load_model(str(ck.path("model.safetensors")), self.device), info["report"]
                    set_rng_state(rng, info["rng"])
                else:
                    self._model, report = attention_model(self.cache, self.classes, self.cfg, self.device, rng,
                                                          self.progress, self.group, self.positions, self.total)
                    model = self._model
                    if hasattr(model, "classes"):  # trained here (a TorchScript checkpoint is the user's file)
                        ck.save("model", {}, {"report": report, "rng": rng_state(rng)},
                                lambda path: save_model(model, str(path("model.safetensors"))))  # type: ignore[arg-type]
            self.summary.model = report
            # Timings stay in the summary: a file's bytes depend on the data, the config and the seed only.
            self.meta["quantizer"]["attention_model"] = {k: v for k, v in report.items() if k != "seconds"}
        return self._model
