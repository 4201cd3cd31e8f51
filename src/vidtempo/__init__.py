"""vidtempo: sort videos by content type with temporal models over per-frame CNN features."""

from ._version import __version__
from .config import ModelConfig, TrainingConfig
from .data import FeatureDataset, collate_features
from .ensemble import Ensemble
from .errors import VidtempoError
from .loss import FocalLoss
from .model import SuperEnhancedTemporalModel, TemporalModel
from .trainer import EnhancedTemporalModelTrainer

__all__ = [
    "EnhancedTemporalModelTrainer",
    "SuperEnhancedTemporalModel",
    "TemporalModel",
    "FocalLoss",
    "collate_features",
    "FeatureDataset",
    "Ensemble",
    "ModelConfig",
    "TrainingConfig",
    "VidtempoError",
    "__version__",
]
