"""vidtempo: sort videos by content type with temporal models over per-frame CNN features.

The subpackages are the pipeline, each importing only the stages before it: ``features`` (the HDF5 feature
store and extraction) -> ``model`` -> ``ensemble`` -> ``training`` -> ``inference`` -> ``serve``, ``demo`` and
``cli`` on top. The modules beside them (``config``, ``checkpoint``, ``runtime``, ``files``, ``errors``,
``progress``) are shared by every stage and import none of them.
"""

from . import _imports
from ._version import __version__

_imports.install()

# The public API, imported on first use (``vidtempo --help`` and ``import vidtempo`` load no torch).
_LAZY = {
    "ModelConfig": ".config",
    "TrainingConfig": ".config",
    "VidtempoError": ".errors",
    "Ensemble": ".ensemble",
    "FocalLoss": ".model",
    "SuperEnhancedTemporalModel": ".model",
    "TemporalModel": ".model",
    "EnhancedTemporalModelTrainer": ".training",
    "FeatureDataset": ".training",
    "collate_features": ".training",
}
__getattr__ = _imports.lazy_exports(__name__, _LAZY)

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


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
