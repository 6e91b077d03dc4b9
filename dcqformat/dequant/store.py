"""The dequantizer as a safetensors buffer (spec §9.3): what goes into a .dcq file's DEQW section.

``__metadata__`` holds one key, ``"dcq-dequant"``: JSON ``{"config": {...}, "format":
"dcq-dequant/1"}``; convolution kernels in int8 with a float32 scale, biases in float16
(:mod:`dcqformat.format.stored_model`). Nothing is unpickled."""

from __future__ import annotations

import torch

from ..errors import DcqError
from ..format import stored_model
from .model import DequantConfig, Dequantizer

FORMAT = "dcq-dequant/1"
KEY = "dcq-dequant"
WHAT = "dequantizer"


def dequantizer_to_bytes(model: Dequantizer, precision: str = "int8") -> bytes:
    """The model as a safetensors buffer (kernels int8 with a per-tensor scale, or float16)."""
    state = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    return stored_model.pack(state, KEY, {"format": FORMAT, "config": model.config.to_dict()}, precision)


def dequantizer_from_bytes(buf: bytes | memoryview, device: torch.device | str = "cpu") -> Dequantizer:
    """A :class:`Dequantizer` from a buffer written by :func:`dequantizer_to_bytes` (config
    checked, then every tensor's name, dtype and shape, before anything is built)."""
    header, info = stored_model.metadata(buf, KEY, (FORMAT,), WHAT)
    try:
        config = DequantConfig.from_dict(info.get("config"))
    except (ValueError, TypeError) as exc:
        raise DcqError(f"dequantizer config in the weights' metadata is unusable ({exc})") from None
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Dequantizer(config).state_dict().items()}
    stored_model.check(header, expected, True, WHAT)
    state = {k: torch.from_numpy(v) for k, v in stored_model.unpack(buf, list(expected), WHAT).items()}
    model = Dequantizer(config)
    model.load_state_dict(state)
    return model.to(device).eval()
