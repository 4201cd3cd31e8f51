"""Stage 2, the model: the temporal classifier over a video's feature sequence and its loss.

``temporal`` holds ``TemporalModel`` (input projection, BiLSTM, masked self-attention, attention pooling,
classifier; the seed's ``SuperEnhancedTemporalModel`` under its own name) and builds a model from a
checkpoint; ``loss`` holds ``FocalLoss``. Knows nothing of training or inference.
"""

from .._imports import old_module_names
from .loss import FocalLoss
from .temporal import SuperEnhancedTemporalModel, TemporalModel, model_from_checkpoint

__all__ = ["FocalLoss", "SuperEnhancedTemporalModel", "TemporalModel", "model_from_checkpoint"]

__getattr__ = old_module_names(__name__)
