"""MAE weights as a safetensors buffer (spec §9.1): what goes into a .dcq file's WGHT section, or a
``.safetensors`` checkpoint. Nothing is unpickled.

``__metadata__`` holds one key, ``"dcq-mae"``: JSON ``{"format": "dcq-mae/2", "config": {...}}``.
Every tensor is float16, or (``dcq-mae/2``, the default for matrices) int8 with a float32 scale
``NAME.scale`` of shape ``[]``: value = int8 * scale, the scale max|w| / 127 of that tensor.
``dcq-mae/1`` buffers (float16 only) read as before."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DcqError
from ..format import stored_model
from ..format.reader import open as open_dcq
from ..format.weights import read_safetensors
from .model import MAE, MAEConfig

FORMAT = "dcq-mae/2"
FORMATS = ("dcq-mae/1", "dcq-mae/2")  # what this reader reads
PRECISIONS = stored_model.PRECISIONS


def mae_to_bytes(model: MAE, precision: str = "int8") -> bytes:
    """The model as a safetensors buffer: matrices in int8 with a per-tensor scale (``precision``
    "int8") or everything in float16 ("float16"); vectors are float16 either way."""
    if precision not in PRECISIONS:
        raise ValueError(f"MAE weight precision must be one of {PRECISIONS}, got {precision!r}")
    state = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    return stored_model.pack(state, "dcq-mae", {"format": FORMAT, "config": model.config.to_dict()}, precision)


def mae_from_bytes(buf: bytes | memoryview, device: torch.device | str = "cpu") -> MAE:
    """An MAE from a safetensors buffer written by :func:`mae_to_bytes`."""
    header, info = stored_model.metadata(buf, "dcq-mae", FORMATS, "MAE")
    try:
        config = MAEConfig.from_dict(info["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise DcqError(f"MAE config in the weights' metadata is unusable ({exc})") from None
    with torch.device("meta"):  # shapes only: nothing is allocated before they match the stored tensors
        expected = {k: tuple(v.shape) for k, v in MAE(config).state_dict().items()}
    stored_model.check(header, expected, info["format"] == "dcq-mae/2", "MAE")
    state = {k: torch.from_numpy(v) for k, v in stored_model.unpack(buf, list(expected), "MAE").items()}
    model = MAE(config)
    model.load_state_dict(state)
    return model.to(device).eval()


def load_mae(path: str | Path, device: torch.device | str = "cpu") -> MAE:
    """The MAE of a .dcq file (its WGHT section) or of a .safetensors checkpoint."""
    path = Path(path)
    if path.suffix == ".dcq":
        with open_dcq(path) as r:
            blob = r.weights_blob()
        if blob is None:
            raise DcqError(f"{path}: has no model weights (WGHT section)")
        return mae_from_bytes(blob, device)
    return mae_from_bytes(read_safetensors(path), device)
