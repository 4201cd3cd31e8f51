"""Stage 5, inference: video files in, classes out.

``predictor`` decodes and embeds a video as the training videos were and turns the ensemble's outputs into
results; ``classify`` (``VideoClassifier``) classifies files and whole libraries; ``timeline`` labels a video's
stretches over time; ``library`` lists a library's videos and writes its prediction rows.
"""

from .classify import VideoClassifier
from .predictor import PreparedVideo, VideoPredictor

__all__ = ["PreparedVideo", "VideoClassifier", "VideoPredictor"]
