"""The masked autoencoder that fills dropped patches (needs torch)."""

from .model import MAE, MAEConfig, random_drop
from .store import load_mae, mae_from_bytes, mae_to_bytes
from .train import MAEReport, train_mae

__all__ = ["MAE", "MAEConfig", "MAEReport", "load_mae", "mae_from_bytes", "mae_to_bytes", "random_drop", "train_mae"]
