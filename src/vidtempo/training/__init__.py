"""Stage 4, training: the seed's API (``EnhancedTemporalModelTrainer``) and what it drives.

``data`` (datasets, augmentation, class-balanced loaders) and ``sampling`` feed a ``TrainingRun`` (``run``:
the epoch loop, checkpoints, exact resume); a ``TrainingSession`` (``session``) holds what runs share;
``single`` trains one model, ``members`` the members of an ensemble (collapse retries, resume), and
``trainer`` is the seed's facade over them; ``distributed`` joins a torchrun process group.
"""

from .data import FeatureDataset, collate_features
from .trainer import EnhancedTemporalModelTrainer

__all__ = ["EnhancedTemporalModelTrainer", "FeatureDataset", "collate_features"]
