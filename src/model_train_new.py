"""Compatibility module: the seed system's import path, ``from model_train_new import ...``."""

from vidtempo import (  # noqa: F401
    Ensemble,
    EnhancedTemporalModelTrainer,
    FocalLoss,
    ModelConfig,
    SuperEnhancedTemporalModel,
    TrainingConfig,
    collate_features,
)
from vidtempo import FeatureDataset  # noqa: F401
