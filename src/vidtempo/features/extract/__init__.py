"""Stage 1: decode videos, sample frames, run a frozen CNN, store per-frame features (SPEC section 3)."""

from .backbones import FrozenBackbone, backbone_names, build_backbone
from .extractor import ExtractionFailed, FeatureExtractor, extract_features
from .report import ExtractionReport, SplitReport
from .multiscale import DEFAULT_SCALES, multiscale_length, multiscale_sequence, scale_indices
from .settings import ExtractionSettings, RunOptions
from ...sharding import parse_shard
from .shards import merge_shards, shard_path
from .video import VideoDecodeError, decode_clip, load_video_frames, uniform_indices

__all__ = [
    "DEFAULT_SCALES",
    "ExtractionFailed",
    "ExtractionReport",
    "ExtractionSettings",
    "FeatureExtractor",
    "FrozenBackbone",
    "RunOptions",
    "SplitReport",
    "VideoDecodeError",
    "backbone_names",
    "build_backbone",
    "decode_clip",
    "extract_features",
    "load_video_frames",
    "merge_shards",
    "multiscale_length",
    "multiscale_sequence",
    "parse_shard",
    "scale_indices",
    "shard_path",
    "uniform_indices",
]
