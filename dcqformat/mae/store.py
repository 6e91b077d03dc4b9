"""MAE weights as a safetensors buffer (spec §9.1): what goes into a .dcq file's WGHT section, or a
``.safetensors`` checkpoint. Nothing is unpickled.

``__metadata__`` holds one key, ``"dcq-mae"``: JSON ``{"format": "dcq-mae/2", "config": {...}}``.
Every tensor is float16, or (``dcq-mae/2``, the default for matrices) int8 with a float32 scale
``NAME.scale`` of shape ``[]``: value = int8 * scale, the scale max|w| / 127 of that tensor.
``dcq-mae/1`` buffers (float16 only) read as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save

from .. import _json as strict_json
from ..errors import DcqError
from ..format.reader import open as open_dcq
from ..format.weights import load_weights, read_safetensors, validate_safetensors
from .model import MAE, MAEConfig

FORMAT = "dcq-mae/2"
FORMATS = ("dcq-mae/1", "dcq-mae/2")  # what this reader reads
PRECISIONS = ("int8", "float16")
SCALE = ".scale"


def mae_to_bytes(model: MAE, precision: str = "int8") -> bytes:
    """The model as a safetensors buffer: matrices in int8 with a per-tensor scale (``precision``
    "int8") or everything in float16 ("float16"); vectors are float16 either way."""
    if precision not in PRECISIONS:
        raise ValueError(f"MAE weight precision must be one of {PRECISIONS}, got {precision!r}")
    tensors: dict[str, np.ndarray] = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().float()
        if precision == "int8" and v.ndim >= 2:
            scale = float(v.abs().max()) / 127 or 1.0
            tensors[k] = (v / scale).round().clamp(-127, 127).to(torch.int8).numpy()
            tensors[k + SCALE] = np.array(scale, np.float32)
        else:
            tensors[k] = v.to(torch.float16).numpy()
    # One metadata key: safetensors writes several in a random order, and the bytes must not vary.
    info = json.dumps({"format": FORMAT, "config": model.config.to_dict()}, sort_keys=True)
    return save(tensors, metadata={"dcq-mae": info})


def _stored_tensors(header: dict, expected: dict[str, tuple[int, ...]], fmt: str) -> None:
    """Raise DcqError unless the header's tensors are those ``expected`` (name -> shape) in the
    dtypes of ``fmt``: F16, or (dcq-mae/2) I8 with an F32 ``NAME.scale`` of shape []."""
    stored = {k: v for k, v in header.items() if k != "__metadata__"}
    names = set(expected) | {k + SCALE for k in expected if stored.get(k, {}).get("dtype") == "I8"}
    if set(stored) != names:
        name = sorted(set(stored) ^ names)[0]
        raise DcqError(f"MAE weights do not match their config: tensor {name!r} "
                       f"{'expected' if name in names else 'not expected'}, found {'it' if name in stored else 'none'}")
    for name, shape in expected.items():
        dtype = stored[name]["dtype"]
        allowed = ("F16", "I8") if fmt == "dcq-mae/2" else ("F16",)
        if dtype not in allowed:
            raise DcqError(f"MAE tensor {name!r}: expected dtype {' or '.join(allowed)}, found {dtype}")
        if tuple(stored[name]["shape"]) != shape:
            raise DcqError(f"MAE weights do not match their config: tensor {name!r} expected shape "
                           f"{shape}, found {tuple(stored[name]['shape'])}")
        if dtype == "I8" and (stored[name + SCALE]["dtype"], stored[name + SCALE]["shape"]) != ("F32", []):
            raise DcqError(f"MAE tensor {name + SCALE!r}: expected an F32 scalar (shape []), found "
                           f"{stored[name + SCALE]['dtype']} of shape {stored[name + SCALE]['shape']}")


def mae_from_bytes(buf: bytes | memoryview, device: torch.device | str = "cpu") -> MAE:
    """An MAE from a safetensors buffer written by :func:`mae_to_bytes`."""
    header = validate_safetensors(buf)
    try:
        info = strict_json.loads(header.get("__metadata__", {}).get("dcq-mae", "{}"))
    except (ValueError, RecursionError):
        info = {}
    fmt = info.get("format") if isinstance(info, dict) else None
    if fmt not in FORMATS:
        raise DcqError(f"weights are not a dcqformat MAE: expected format {' or '.join(map(repr, FORMATS))}, "
                       f"found {fmt!r}")
    try:
        config = MAEConfig.from_dict(info["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise DcqError(f"MAE config in the weights' metadata is unusable ({exc})") from None
    with torch.device("meta"):  # shapes only: nothing is allocated before they match the stored tensors
        expected = {k: tuple(v.shape) for k, v in MAE(config).state_dict().items()}
    _stored_tensors(header, expected, fmt)
    arrays = load_weights(buf)
    state = {}
    for k in expected:
        v = np.asarray(arrays[k], np.float32)
        if k + SCALE in arrays:
            scale = float(arrays[k + SCALE])
            if not (np.isfinite(scale) and scale > 0):
                raise DcqError(f"MAE tensor {k + SCALE!r}: expected a finite scale > 0, found {scale}")
            v = v * np.float32(scale)
        state[k] = torch.from_numpy(v)
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
