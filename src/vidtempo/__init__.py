"""vidtempo: sort videos by content type with temporal models over per-frame CNN features."""

__version__ = "0.1.0"

from .config import ModelConfig, TrainingConfig  # noqa: E402
from .data import FeatureDataset, collate_features  # noqa: E402
from .ensemble import Ensemble  # noqa: E402
from .errors import VidtempoError  # noqa: E402
from .loss import FocalLoss  # noqa: E402
from .model import SuperEnhancedTemporalModel  # noqa: E402
from .trainer import EnhancedTemporalModelTrainer  # noqa: E402

__all__ = [
    "EnhancedTemporalModelTrainer",
    "SuperEnhancedTemporalModel",
    "FocalLoss",
    "collate_features",
    "FeatureDataset",
    "Ensemble",
    "ModelConfig",
    "TrainingConfig",
    "VidtempoError",
    "__version__",
]
