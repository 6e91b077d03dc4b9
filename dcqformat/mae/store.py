"""MAE weights as a safetensors buffer (float16 tensors; ``__metadata__`` holds one key,
``"dcq-mae"``: JSON ``{"format": "dcq-mae/1", "config": {...}}``): what goes
into a .dcq file's WGHT section, or a ``.safetensors`` checkpoint. Nothing is unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save

from ..errors import DcqError
from ..reader import open as open_dcq
from ..weights import load_weights, validate_safetensors
from .model import MAE, MAEConfig

FORMAT = "dcq-mae/1"


def mae_to_bytes(model: MAE) -> bytes:
    tensors = {k: v.detach().cpu().to(torch.float16).numpy() for k, v in model.state_dict().items()}
    # One metadata key: safetensors writes several in a random order, and the bytes must not vary.
    info = json.dumps({"format": FORMAT, "config": model.config.to_dict()}, sort_keys=True)
    return save(tensors, metadata={"dcq-mae": info})


def mae_from_bytes(buf: bytes | memoryview, device: torch.device | str = "cpu") -> MAE:
    """An MAE from a safetensors buffer written by :func:`mae_to_bytes`."""
    header = validate_safetensors(buf)
    try:
        info = json.loads(header.get("__metadata__", {}).get("dcq-mae", "{}"))
    except (ValueError, RecursionError):
        info = {}
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else None
        raise DcqError(f"weights are not a dcqformat MAE: expected format {FORMAT!r}, found {found!r}")
    try:
        config = MAEConfig.from_dict(info["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise DcqError(f"MAE config in the weights' metadata is unusable ({exc})") from None
    with torch.device("meta"):  # shapes only: nothing is allocated before they match the stored tensors
        expected = {k: tuple(v.shape) for k, v in MAE(config).state_dict().items()}
    stored = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    if stored != expected:
        name = next(k for k in sorted(set(stored) | set(expected)) if stored.get(k) != expected.get(k))
        raise DcqError(f"MAE weights do not match their config: tensor {name!r} expected shape "
                       f"{expected.get(name, 'absent')}, found {stored.get(name, 'absent')}")
    model = MAE(config)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in load_weights(buf).items()})
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
    return mae_from_bytes(path.read_bytes(), device)
