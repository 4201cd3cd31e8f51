"""vidtempo: sort videos by content type with temporal models over per-frame CNN features.

The subpackages are the pipeline, each importing only the stages before it: ``features`` (the HDF5 feature
store and extraction) -> ``model`` -> ``ensemble`` -> ``training`` -> ``inference`` -> ``serve``, ``demo`` and
``cli`` on top. The modules beside them (``config``, ``checkpoint``, ``runtime``, ``files``, ``errors``,
``sharding``) are shared by every stage and import none of them.
"""

from . import _deprecated
from ._version import __version__
from .config import ModelConfig, TrainingConfig
from .ensemble import Ensemble
from .errors import VidtempoError
from .model import FocalLoss, SuperEnhancedTemporalModel, TemporalModel
from .training import EnhancedTemporalModelTrainer, FeatureDataset, collate_features

_deprecated.install()

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
