"""The HDF5 feature store: the one place that defines its file names, layout and checks.

One file per split, ``{split}_features{suffix}.h5``, holding

- ``features``   float32 ``[N, T_max, D]``, zero-padded after each video's frames
- ``labels``     int64 ``[N]``
- ``num_frames`` int32 ``[N]``, each in ``1..T_max``
- attributes ``num_videos``, ``max_frames``, ``feature_dim``, ``category_mapping`` (JSON, name -> index),
  ``multi_scale``

and, written by vidtempo but never required, ``video_ids`` and the extraction settings as attributes.
Files with only the seed system's fields load unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

from .errors import FeatureStoreError

SPLITS = ("train", "val", "test")
MULTISCALE_SUFFIX = "_multiscale"
REQUIRED_DATASETS = ("features", "labels", "num_frames")
REQUIRED_ATTRS = ("num_videos", "max_frames", "feature_dim", "category_mapping", "multi_scale")
# Attributes vidtempo adds to describe how the features were made; carried into checkpoints so that
# a new video can be extracted the same way.
EXTRACTION_ATTRS = ("backbone", "image_size", "frames_per_video", "scales", "vidtempo_version")
# Rows checked for finite values at a time, so validating a large file needs bounded memory.
_VALIDATION_ROWS = 256


def split_filename(split: str, suffix: str = "") -> str:
    return f"{split}_features{suffix}.h5"


def split_path(features_dir: str | os.PathLike, split: str, suffix: str = "") -> Path:
    return Path(features_dir) / split_filename(split, suffix)


def detect_suffix(features_dir: str | os.PathLike) -> str:
    """The suffix whose train file exists: ``_multiscale`` first, then none."""
    for suffix in (MULTISCALE_SUFFIX, ""):
        if split_path(features_dir, "train", suffix).is_file():
            return suffix
    raise FeatureStoreError(
        f"{features_dir}: no {split_filename('train', MULTISCALE_SUFFIX)} or {split_filename('train')} found"
    )


def parse_category_mapping(raw: Any, where: str) -> dict[str, int]:
    """Parse and check a category mapping: JSON object name -> index, indices exactly 0..C-1."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    try:
        mapping = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (ValueError, TypeError) as exc:
        raise FeatureStoreError(f"{where}: category_mapping is not valid JSON ({exc})") from None
    if not isinstance(mapping, dict) or not mapping:
        raise FeatureStoreError(f"{where}: category_mapping must be a non-empty JSON object name -> index")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in mapping.values()):
        raise FeatureStoreError(f"{where}: category_mapping indices must be integers")
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise FeatureStoreError(f"{where}: category_mapping indices must be 0..{len(mapping) - 1} without gaps")
    return {str(k): int(v) for k, v in sorted(mapping.items(), key=lambda kv: kv[1])}


def class_names(mapping: Mapping[str, int]) -> list[str]:
    """Category names ordered by index."""
    return [name for name, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def _attr_value(value: Any) -> Any:
    """HDF5 attribute -> plain Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [_attr_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class FeatureSplit:
    """One split held in memory."""

    features: np.ndarray  # float32 [N, T_max, D]
    labels: np.ndarray  # int64 [N]
    num_frames: np.ndarray  # int64 [N]
    category_mapping: dict[str, int]
    multi_scale: bool = False
    video_ids: list[str] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def num_videos(self) -> int:
        return int(self.features.shape[0])

    @property
    def max_frames(self) -> int:
        return int(self.features.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.category_mapping)

    @property
    def class_names(self) -> list[str]:
        return class_names(self.category_mapping)

    def extraction_settings(self) -> dict[str, Any]:
        """The extraction attributes present in the file (empty for the seed's files)."""
        settings = {k: self.attrs[k] for k in EXTRACTION_ATTRS if k in self.attrs}
        settings["multi_scale"] = self.multi_scale
        return settings


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise FeatureStoreError(f"{path}: file not found")
    if not path.is_file():
        raise FeatureStoreError(f"{path}: not a file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).split("(")[0].strip() or "unreadable"
        raise FeatureStoreError(f"{path}: not a readable HDF5 file ({reason})") from None


def read_split(path: str | os.PathLike) -> FeatureSplit:
    """Load and validate one split file into memory. Raises FeatureStoreError naming the file."""
    path = Path(path)
    with _open(path) as f:
        try:
            return _read_checked(f, path)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            # h5py raises these for truncated or damaged datasets.
            raise FeatureStoreError(f"{path}: damaged feature file ({exc})") from None


def _read_checked(f: h5py.File, path: Path) -> FeatureSplit:
    for name in REQUIRED_DATASETS:
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise FeatureStoreError(f"{path}: missing dataset '{name}'")
    if "category_mapping" not in f.attrs:
        raise FeatureStoreError(f"{path}: missing attribute 'category_mapping'")
    mapping = parse_category_mapping(f.attrs["category_mapping"], str(path))
    feats = f["features"]
    if feats.ndim != 3:
        raise FeatureStoreError(f"{path}: 'features' must be 3-D [videos, frames, dim], got shape {feats.shape}")
    n, t_max, dim = feats.shape
    if n == 0 or t_max == 0 or dim == 0:
        raise FeatureStoreError(f"{path}: 'features' is empty (shape {feats.shape})")
    labels = np.asarray(f["labels"][()]).reshape(-1)
    num_frames = np.asarray(f["num_frames"][()]).reshape(-1)
    if labels.shape[0] != n or num_frames.shape[0] != n:
        raise FeatureStoreError(
            f"{path}: {n} feature rows but {labels.shape[0]} labels and {num_frames.shape[0]} num_frames"
        )
    if not np.issubdtype(labels.dtype, np.integer) or not np.issubdtype(num_frames.dtype, np.integer):
        raise FeatureStoreError(f"{path}: 'labels' and 'num_frames' must be integers")
    bad = np.flatnonzero((labels < 0) | (labels >= len(mapping)))
    if bad.size:
        raise FeatureStoreError(
            f"{path}: label {int(labels[bad[0]])} of video {int(bad[0])} is outside the category mapping "
            f"(0..{len(mapping) - 1})"
        )
    bad = np.flatnonzero((num_frames < 1) | (num_frames > t_max))
    if bad.size:
        raise FeatureStoreError(
            f"{path}: num_frames {int(num_frames[bad[0]])} of video {int(bad[0])} is outside 1..{t_max}"
        )
    if "feature_dim" in f.attrs and int(f.attrs["feature_dim"]) != dim:
        raise FeatureStoreError(f"{path}: attribute feature_dim={int(f.attrs['feature_dim'])} but features have {dim}")
    features = np.empty((n, t_max, dim), dtype=np.float32)
    for start in range(0, n, _VALIDATION_ROWS):
        block = feats[start : start + _VALIDATION_ROWS]
        if not np.isfinite(block).all():
            row = start + int(np.flatnonzero(~np.isfinite(block).reshape(block.shape[0], -1).all(axis=1))[0])
            raise FeatureStoreError(f"{path}: video {row} has NaN or infinite features")
        features[start : start + block.shape[0]] = block
    video_ids = None
    if "video_ids" in f:
        video_ids = [_attr_value(v) for v in f["video_ids"][()]]
    attrs = {k: _attr_value(v) for k, v in f.attrs.items() if k != "category_mapping"}
    return FeatureSplit(
        features=features,
        labels=labels.astype(np.int64),
        num_frames=num_frames.astype(np.int64),
        category_mapping=mapping,
        multi_scale=bool(attrs.get("multi_scale", False)),
        video_ids=video_ids,
        attrs=attrs,
        path=path,
    )


def write_split(
    path: str | os.PathLike,
    features: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    num_frames: Sequence[int] | np.ndarray,
    category_mapping: Mapping[str, int],
    multi_scale: bool,
    video_ids: Iterable[str] | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
    compression: str | None = "gzip",
) -> Path:
    """Write a split file atomically (temporary name, then rename) in the seed's layout plus extras."""
    path = Path(path)
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    num_frames = np.asarray(num_frames, dtype=np.int32)
    n, t_max, dim = features.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            chunks = (1, t_max, dim) if n else None
            f.create_dataset("features", data=features, compression=compression, chunks=chunks)
            f.create_dataset("labels", data=labels)
            f.create_dataset("num_frames", data=num_frames)
            if video_ids is not None:
                f.create_dataset("video_ids", data=list(video_ids), dtype=h5py.string_dtype("utf-8"))
            f.attrs["num_videos"] = n
            f.attrs["max_frames"] = t_max
            f.attrs["feature_dim"] = dim
            f.attrs["category_mapping"] = json.dumps(dict(category_mapping))
            f.attrs["multi_scale"] = bool(multi_scale)
            for key, value in (extra_attrs or {}).items():
                f.attrs[key] = value
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_splits(features_dir: str | os.PathLike, suffix: str, splits: Sequence[str] = SPLITS) -> dict[str, FeatureSplit]:
    """Load several splits and check they agree on category mapping and feature dimension."""
    loaded = {split: read_split(split_path(features_dir, split, suffix)) for split in splits}
    first_name, first = next(iter(loaded.items()))
    for name, split in loaded.items():
        if split.category_mapping != first.category_mapping:
            raise FeatureStoreError(
                f"{split.path}: category_mapping {split.category_mapping} differs from {first_name} split's "
                f"{first.category_mapping}"
            )
        if split.feature_dim != first.feature_dim:
            raise FeatureStoreError(
                f"{split.path}: feature dimension {split.feature_dim} differs from {first_name} split's "
                f"{first.feature_dim}"
            )
    return loaded


def summarize(split: FeatureSplit) -> dict[str, Any]:
    """A plain summary of a validated split, for `vidtempo inspect`."""
    counts = np.bincount(split.labels, minlength=split.num_classes)
    extra = {k: v for k, v in split.attrs.items() if k not in REQUIRED_ATTRS}
    return {
        "file": str(split.path) if split.path else None,
        "num_videos": split.num_videos,
        "max_frames": split.max_frames,
        "feature_dim": split.feature_dim,
        "multi_scale": split.multi_scale,
        "frames_per_video": {
            "min": int(split.num_frames.min()),
            "mean": round(float(split.num_frames.mean()), 2),
            "max": int(split.num_frames.max()),
        },
        "classes": {name: int(counts[idx]) for name, idx in split.category_mapping.items()},
        "has_video_ids": split.video_ids is not None,
        "extra_attributes": extra,
    }
