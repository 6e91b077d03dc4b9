"""The learned dequantizer (spec §9.3): a small convolutional network, trained at conversion time
on (palette image, original image) pairs and stored in the file's DEQW section, that the loaders
run on decoded batches (``dequantize="learned"``) to restore what the palette lost.

- :mod:`.model`: the network and its config; :mod:`.store`: to and from safetensors bytes;
  :mod:`.train`: fitting it, sizing it to the data, and the held-out check that keeps it.
"""

from .model import DequantConfig, Dequantizer
from .store import dequantizer_from_bytes, dequantizer_to_bytes

__all__ = ["DequantConfig", "Dequantizer", "dequantizer_from_bytes", "dequantizer_to_bytes"]
