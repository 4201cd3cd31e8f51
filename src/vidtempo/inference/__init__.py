"""Stage 5, inference: video files in, classes out.

``predictor`` decodes and embeds a video as the training videos were and turns the ensemble's outputs into
results; ``classify`` (``VideoClassifier``) classifies files and whole libraries; ``timeline`` labels a video's
stretches over time; ``library`` lists a library's videos and writes its prediction rows.
"""

from .._imports import lazy_exports

# Imported on first use: classifying brings torch; the timeline's options do not need it.
_LAZY = {"VideoClassifier": ".classify", "PreparedVideo": ".predictor", "VideoPredictor": ".predictor"}
__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = ["PreparedVideo", "VideoClassifier", "VideoPredictor"]
