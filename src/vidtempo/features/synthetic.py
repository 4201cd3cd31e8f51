"""A generated feature set whose class lives only in the temporal order of the frames.

Each video is a sequence of segments showing one of two patterns, A or B, plus noise:

- class 0: A then B           - class 1: B then A
- class 2: A, B, A, B         - class 3: B, A, B, A

Every class shows A and B for half the video each, so the mean over frames is the same for all classes
and a model that ignores order scores chance. Segment boundaries jitter and lengths vary, so a model must
learn order, not positions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .store import MULTISCALE_SUFFIX, SPLITS, write_split

CLASS_PATTERNS = ((0, 1), (1, 0), (0, 1, 0, 1), (1, 0, 1, 0))
CLASS_NAMES = ("order_AB", "order_BA", "order_ABAB", "order_BABA")


def make_video(rng: np.random.Generator, pattern: tuple[int, ...], prototypes: np.ndarray, length: int,
               noise: float, flip_prob: float = 0.0) -> np.ndarray:
    num_segments = len(pattern)
    bounds = np.linspace(0, length, num_segments + 1)
    jitter = rng.uniform(-0.15, 0.15, size=num_segments - 1) * length / num_segments
    bounds[1:-1] = np.clip(bounds[1:-1] + jitter, 1, length - 1)
    bounds = np.round(np.sort(bounds)).astype(int)
    frames = np.empty((length, prototypes.shape[1]), dtype=np.float32)
    for seg, proto in enumerate(pattern):
        frames[bounds[seg] : bounds[seg + 1]] = prototypes[proto]
    if flip_prob:
        # Frames that show the other pattern blur the order, so some videos become truly ambiguous.
        flipped = rng.random(length) < flip_prob
        frames[flipped] = prototypes[1] + prototypes[0] - frames[flipped]
    return frames + noise * rng.standard_normal(frames.shape).astype(np.float32)


def make_split(rng: np.random.Generator, num_videos: int, prototypes: np.ndarray, min_frames: int,
               max_frames: int, noise: float, flip_prob: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dim = prototypes.shape[1]
    features = np.zeros((num_videos, max_frames, dim), dtype=np.float32)
    labels = np.arange(num_videos) % len(CLASS_PATTERNS)
    rng.shuffle(labels)
    lengths = rng.integers(min_frames, max_frames + 1, size=num_videos)
    for i, (label, length) in enumerate(zip(labels, lengths)):
        features[i, :length] = make_video(rng, CLASS_PATTERNS[label], prototypes, int(length), noise, flip_prob)
    return features, labels.astype(np.int64), lengths.astype(np.int32)


def write_synthetic_features(
    output_dir: str | os.PathLike,
    videos_per_split: dict[str, int] | None = None,
    feature_dim: int = 32,
    min_frames: int = 24,
    max_frames: int = 40,
    noise: float = 1.0,
    flip_prob: float = 0.0,
    seed: int = 0,
    suffix: str = MULTISCALE_SUFFIX,
) -> dict[str, Path]:
    """Write ``{split}_features{suffix}.h5`` for train, val and test; returns their paths."""
    videos_per_split = videos_per_split or {"train": 256, "val": 64, "test": 128}
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((2, feature_dim)).astype(np.float32)
    mapping = {name: i for i, name in enumerate(CLASS_NAMES)}
    paths = {}
    for split in SPLITS:
        features, labels, lengths = make_split(rng, videos_per_split[split], prototypes, min_frames, max_frames, noise,
                                             flip_prob)
        paths[split] = write_split(
            Path(output_dir) / f"{split}_features{suffix}.h5", features, labels, lengths, mapping,
            multi_scale=suffix == MULTISCALE_SUFFIX,
            video_ids=[f"synthetic/{split}/{i:05d}" for i in range(len(labels))],
            extra_attrs={"backbone": "synthetic"},
        )
    return paths
