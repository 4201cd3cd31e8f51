"""Stage 3, the ensemble: trained members combined, and how well they do.

``ensemble`` loads members from checkpoints and averages their softmax (optionally over the TTA views of
``tta``), with the trust score of ``trust`` and the temperature of ``calibration``; ``folds`` are the
cross-fitting folds; ``fit`` assembles trained members into an ensemble (weights, views, calibration, fitted
on held-out data); ``evaluation``, ``metrics`` and ``report`` score a feature split and draw its report.
Knows nothing of how members are trained.
"""

from .._imports import old_module_names
from .ensemble import Ensemble, EnsembleSettings

__all__ = ["Ensemble", "EnsembleSettings"]

__getattr__ = old_module_names(__name__)
