"""What an extraction computes (stored with the features) and how it runs (never stored)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from ...errors import VidtempoError
from ..._version import __version__
from ...config import DEFAULT_DEVICE
from ..store import EXTRACTION_ATTRS, MULTISCALE_SUFFIX, attr_value
from .backbone_table import BACKBONE_SPECS, DEFAULT_BACKBONE
from .multiscale import DEFAULT_SCALES

# Frames larger than this (8K UHD) are refused before any is decoded, as Pillow refuses decompression bombs:
# a 1.6 MB PNG-in-MOV of 16000 x 16000 decodes to 768 MB a frame.
MAX_FRAME_PIXELS = 7680 * 4320

# EfficientNet and ResNet halve the image five times; below this there is nothing left to pool.
MIN_IMAGE_SIZE = 32
# How the sampled frames are found in a video (see video.py). New extractions use ``auto``; features and
# checkpoints that record no sampling were made by ``exact``, the only mode of earlier versions.
SAMPLING_MODES = ("exact", "keyframe", "auto")
DEFAULT_SAMPLING = "auto"
UNRECORDED_SAMPLING = "exact"


@dataclass(frozen=True)
class ExtractionSettings:
    """The settings that determine the features; a new video must be extracted with the same ones."""

    backbone: str = DEFAULT_BACKBONE
    image_size: int = 256
    frames_per_video: int = 64
    multi_scale: bool = True
    scales: tuple[float, ...] = DEFAULT_SCALES
    # An offline weights file (torchvision backbones, or another copy of efficientnet_lite0's).
    weights: str | None = None
    sampling: str = DEFAULT_SAMPLING

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONE_SPECS:
            raise VidtempoError(f"unknown backbone '{self.backbone}' (choose from {', '.join(BACKBONE_SPECS)})")
        if int(self.image_size) < MIN_IMAGE_SIZE:
            raise VidtempoError(f"--image-size must be at least {MIN_IMAGE_SIZE}, got {self.image_size}")
        if int(self.frames_per_video) < 1:
            raise VidtempoError(f"--frames must be at least 1, got {self.frames_per_video}")
        if self.sampling not in SAMPLING_MODES:
            raise VidtempoError(f"--sampling must be one of {', '.join(SAMPLING_MODES)}, got {self.sampling!r}")
        scales = tuple(float(s) for s in self.scales) if self.multi_scale else (1.0,)
        if not scales or any(s <= 0 for s in scales):
            raise VidtempoError(f"scales must be positive, got {list(self.scales)}")
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "frames_per_video", int(self.frames_per_video))

    @property
    def suffix(self) -> str:
        return MULTISCALE_SUFFIX if self.multi_scale else ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON, checkpoints); ``from_dict`` turns it back into these settings unchanged."""
        return {**asdict(self), "scales": list(self.scales)}

    def file_attrs(self) -> dict[str, Any]:
        """The extra attributes written into each feature file (store.EXTRACTION_ATTRS)."""
        values = {**self.to_dict(), "vidtempo_version": __version__}
        return {key: values[key] for key in EXTRACTION_ATTRS if key in values}

    def identity(self) -> dict[str, Any]:
        """Everything that changes the numbers, for deciding whether saved progress can be reused."""
        weights = None
        if self.weights is not None:
            stat = os.stat(self.weights) if os.path.exists(self.weights) else None
            weights = [os.path.abspath(self.weights), stat.st_size if stat else None, stat.st_mtime_ns if stat else None]
        return {**self.to_dict(), "weights": weights}

    def matches_attrs(self, attrs: Mapping[str, Any]) -> list[str]:
        """Names of the settings an existing file's attributes disagree with (empty: same, or unknown)."""
        mine = self.to_dict()
        differing = []
        attrs = {"sampling": UNRECORDED_SAMPLING, **attrs} if "backbone" in attrs else attrs
        for key in ("backbone", "image_size", "frames_per_video", "scales", "multi_scale", "sampling"):
            if key not in attrs:
                continue
            theirs = attr_value(attrs[key])
            if key == "scales":
                theirs = [float(s) for s in _as_list(theirs)]
            if theirs != mine[key]:
                differing.append(f"{key}={theirs!r} (now {mine[key]!r})")
        return differing

    def differences(self, other: "ExtractionSettings") -> list[str]:
        """``name mine vs theirs`` for each setting that differs from ``other``'s."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{key} {mine[key]!r} vs {theirs[key]!r}" for key in mine if mine[key] != theirs[key]]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ExtractionSettings":
        """Settings from ``to_dict``'s output, a feature file's attributes, or a checkpoint's copy of them
        (``feature_settings``); keys that do not change the features (``vidtempo_version``) are ignored."""
        values = {key: attr_value(value) for key, value in values.items()}
        if "backbone" not in values:
            raise VidtempoError(
                "the features carry no extraction settings (made by the seed system?): name the backbone, "
                "image size and frames explicitly"
            )
        kwargs: dict[str, Any] = {"backbone": str(values["backbone"])}
        for key in ("image_size", "frames_per_video"):
            if key in values:
                kwargs[key] = int(values[key])
        scales = [float(s) for s in _as_list(values["scales"])] if "scales" in values else None
        multi_scale = bool(values["multi_scale"]) if "multi_scale" in values else (scales is not None and scales != [1.0])
        kwargs["multi_scale"] = multi_scale
        if multi_scale and scales:
            kwargs["scales"] = tuple(scales)
        if values.get("weights"):
            kwargs["weights"] = str(values["weights"])
        kwargs["sampling"] = str(values.get("sampling", UNRECORDED_SAMPLING))
        return cls(**kwargs)


@dataclass(frozen=True)
class RunOptions:
    """How an extraction runs; none of these change the features beyond float rounding."""

    batch_size: int = 32
    workers: int | None = None  # decoder processes; None picks from the CPU count
    device: str = DEFAULT_DEVICE
    overwrite: bool = False
    strict: bool = False
    quiet: bool = False
    # A video still decoding after this long fails (an error row, the run goes on); None: no limit. A decoder
    # that does not stop itself is killed from outside (decoder_pool).
    max_decode_seconds: float | None = 600.0
    # Frames over this many pixels are refused before decoding; None: no limit.
    max_frame_pixels: int | None = MAX_FRAME_PIXELS

    def __post_init__(self) -> None:
        if self.max_decode_seconds is not None and not self.max_decode_seconds > 0:
            raise VidtempoError(f"--max-decode-seconds must be positive, got {self.max_decode_seconds}")
        if self.max_frame_pixels is not None and self.max_frame_pixels < 1:
            raise VidtempoError(f"--max-frame-pixels must be positive, got {self.max_frame_pixels}")
        if self.batch_size < 1:
            raise VidtempoError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise VidtempoError(f"--workers must be 0 or more, got {self.workers}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise VidtempoError(f"--device must be cpu, cuda or auto, got '{self.device}'")


def _as_list(value: Any) -> list:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = [v for v in value.strip("[]").split(",") if v.strip()]
    if isinstance(value, (int, float)):
        return [value]
    return list(value)
