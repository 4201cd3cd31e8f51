"""Stage 1: decode videos, sample frames, run a frozen CNN, store per-frame features (SPEC section 3)."""

from ..._imports import lazy_exports

# Imported on first use: extraction brings PyAV, torch and the backbones.
_LAZY = {
    "FrozenBackbone": ".backbones",
    "backbone_names": ".backbones",
    "build_backbone": ".backbones",
    "DecoderPool": ".decoder_pool",
    "ExtractionFailed": ".extractor",
    "FeatureExtractor": ".extractor",
    "extract_features": ".extractor",
    "ExtractionReport": ".report",
    "SplitReport": ".report",
    "DEFAULT_SCALES": ".multiscale",
    "multiscale_length": ".multiscale",
    "multiscale_sequence": ".multiscale",
    "scale_indices": ".multiscale",
    "ExtractionSettings": ".settings",
    "RunOptions": ".settings",
    "parse_shard": "..sharding",
    "merge_shards": ".shards",
    "shard_path": ".shards",
    "VideoDecodeError": ".video",
    "decode_clip": ".video",
    "load_video_frames": ".video",
    "uniform_indices": ".video",
}
__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "DEFAULT_SCALES",
    "DecoderPool",
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
