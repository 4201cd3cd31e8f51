"""A video model: a trained ensemble with the extractor its training features were made by. It decodes and
embeds a video as the training videos were, and turns the ensemble's outputs for prepared videos into result
dicts; ``classify.VideoClassifier`` (files, libraries) and ``timeline`` (windows over time) build on it.
"""

from __future__ import annotations

import base64
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..ensemble.ensemble import INFERENCE_PRECISION, Ensemble
from ..ensemble.trust import describe
from ..errors import VidtempoError
from ..features.extract import ExtractionSettings, FeatureExtractor, RunOptions, scale_indices
from ..runtime import autocast
from ..training.data import collate_features

THUMBNAIL_SIZE = 96


@dataclass
class PreparedVideo:
    """A decoded and embedded video, ready for the ensemble."""

    path: Path
    features: np.ndarray  # [T', D] as stored in a feature file
    frame_indices: list[int]  # sampled frames, in the video's decoding order
    frame_times: list[float]  # seconds
    step_frames: np.ndarray  # [T', F]: how much each sampled frame contributes to each step
    timings: dict[str, float] = field(default_factory=dict)
    thumbnails: list[str] | None = None  # data URLs


class VideoPredictor:
    """A trained ensemble with its extractor: ``prepare`` a video file, ``classify_prepared`` prepared videos."""

    def __init__(self, ensemble: Ensemble, extractor: FeatureExtractor | None = None, tta: bool = False, *,
                 max_decode_seconds: float | None = RunOptions.max_decode_seconds,
                 max_frame_pixels: int | None = RunOptions.max_frame_pixels) -> None:
        """Without ``extractor``, one of the checkpoints' extraction settings, decoding under the two limits."""
        self.ensemble = ensemble
        self.tta = tta
        if extractor is None:
            if ensemble.extraction is None:
                raise VidtempoError(
                    "these checkpoints were not trained on features extracted from videos "
                    "(no extraction settings recorded), so they cannot classify video files"
                )
            extractor = FeatureExtractor(ensemble.extraction, device=str(ensemble.device),
                                         max_decode_seconds=max_decode_seconds, max_frame_pixels=max_frame_pixels)
        self.extractor = extractor

    @classmethod
    def from_checkpoints(cls, checkpoints: Any, device: str = "cpu", tta: bool = False,
                         precision: str = INFERENCE_PRECISION, runtime: str = "torch",
                         max_decode_seconds: float | None = RunOptions.max_decode_seconds,
                         max_frame_pixels: int | None = RunOptions.max_frame_pixels) -> "VideoPredictor":
        """``precision`` (auto, fp32, bf16) is the CNN's and the ensemble's with PyTorch; auto is what the
        hardware is fast at. ``runtime`` (torch, onnx, auto; see onnx_model.resolve_runtime): ``onnx`` runs an
        exported folder, or the export of ``checkpoints`` kept beside them, with ONNX Runtime in float32.
        ``max_decode_seconds`` and ``max_frame_pixels`` bound each video's decode (RunOptions)."""
        limits = {"max_decode_seconds": max_decode_seconds, "max_frame_pixels": max_frame_pixels}
        from .onnx_model import OnnxEnsemble, exported_folder, resolve_runtime

        chosen = resolve_runtime(runtime, checkpoints, device)
        if chosen == "torch":
            return cls(Ensemble.from_checkpoints(checkpoints, device=device, precision=precision), tta=tta, **limits)
        if tta:
            raise VidtempoError("the ONNX runtime runs plain predictions: TTA needs --runtime torch")
        ensemble = OnnxEnsemble(exported_folder(checkpoints))
        backbone = ensemble.backbone()  # refuses, saying why, a model exported without one
        return cls(ensemble, FeatureExtractor(ensemble.extraction, device="cpu", backbone=backbone, **limits), tta=tta)

    @property
    def runtime(self) -> str:
        return "torch" if isinstance(self.ensemble, Ensemble) else "onnx"

    @property
    def categories(self) -> list[str]:
        return self.ensemble.class_names

    @property
    def settings(self) -> ExtractionSettings:
        return self.extractor.settings

    def prepare(self, path: str | os.PathLike, thumbnails: bool = False) -> PreparedVideo:
        """Decode and embed one video. Raises a VidtempoError naming the file when it cannot be read."""
        path = Path(path)
        if not path.is_file():
            raise VidtempoError(f"{path}: file not found")
        start = time.perf_counter()
        clip = self.extractor.decode(path)
        decoded = time.perf_counter()
        features = self.embed(clip.frames)
        embedded = time.perf_counter()
        return PreparedVideo(
            path=path,
            features=features,
            frame_indices=list(clip.indices),
            frame_times=[round(i / clip.frame_rate, 3) if clip.frame_rate else 0.0 for i in clip.indices],
            step_frames=step_frame_matrix(len(clip.indices), self.settings.scales),
            timings={"decode_s": decoded - start, "cnn_s": embedded - decoded},
            thumbnails=frame_thumbnails(clip.frames) if thumbnails else None,
        )

    def embed(self, frames: torch.Tensor) -> np.ndarray:
        """The feature sequence of a video's sampled frames, by the CNN in the ensemble's precision."""
        with autocast(self.ensemble.device, self.ensemble.amp_dtype):
            return self.extractor.sequence_features(frames)

    def frame_features(self, frames: torch.Tensor) -> np.ndarray:
        """``[T, D]``: each frame's CNN features, in the ensemble's precision (as ``embed``, before any
        multi-scale pooling)."""
        with autocast(self.ensemble.device, self.ensemble.amp_dtype):
            return self.extractor.frame_features(frames)

    def classify_prepared(self, videos: Sequence[PreparedVideo]) -> list[dict[str, Any]]:
        """All videos (and all their TTA views) go through each member in as few passes as possible."""
        # Padded as for training; inference has no labels, so each gets a placeholder 0.
        batch, _, lengths = collate_features([(torch.from_numpy(v.features), 0, len(v.features)) for v in videos])
        start = time.perf_counter()
        analysis = self.ensemble.analyze(batch, lengths, tta=self.tta)
        ensemble_seconds = (time.perf_counter() - start) / len(videos)
        return [self._result(i, video, analysis, ensemble_seconds) for i, video in enumerate(videos)]

    def _result(
        self, i: int, video: PreparedVideo, analysis: dict[str, Any], ensemble_seconds: float
    ) -> dict[str, Any]:
        """Video ``i`` of the batch ``analysis`` (Ensemble.analyze) as a result dict."""
        names = self.categories
        probs = analysis["probs"][i]
        predicted = int(probs.argmax())
        steps = analysis["attention"][i, : len(video.features)].numpy()
        frame_weights = steps @ video.step_frames
        frame_weights = frame_weights / max(float(frame_weights.sum()), 1e-12)
        timings = {**video.timings, "ensemble_s": ensemble_seconds}
        timings["total_s"] = sum(timings.values())
        return {
            "video": str(video.path),
            "predicted_class": names[predicted],
            "confidence": float(probs[predicted]),
            "probabilities": {name: float(p) for name, p in zip(names, probs)},
            "members": {
                member: {name: float(p) for name, p in zip(names, analysis["member_probs"][m, i])}
                for m, member in enumerate(self.ensemble.names)
            },
            "frames": [
                {"index": idx, "time_s": t, "attention": float(w),
                 **({"thumbnail": video.thumbnails[f]} if video.thumbnails else {})}
                for f, (idx, t, w) in enumerate(zip(video.frame_indices, video.frame_times, frame_weights))
            ],
            "trust": describe(analysis["trust"], i, analysis["uncertain_below"]),
            "tta": self.tta,
            "timings_s": {k: round(v, 4) for k, v in timings.items()},
        }


def step_frame_matrix(num_frames: int, scales: Sequence[float]) -> np.ndarray:
    """``[T', F]``: the share of each sampled frame in each step of the (multi-scale) sequence.

    A multi-scale step averages one frame of each scale that reaches it, so attention on a step is split
    evenly among those frames.
    """
    rows = [scale_indices(num_frames, s) for s in scales]
    matrix = np.zeros((max(len(r) for r in rows), num_frames), dtype=np.float32)
    for indices in rows:
        matrix[np.arange(len(indices)), indices] += 1.0
    return matrix / matrix.sum(axis=1, keepdims=True)


def frame_thumbnails(frames: torch.Tensor) -> list[str]:
    from PIL import Image

    urls = []
    for frame in frames:
        image = Image.fromarray(frame.permute(1, 2, 0).numpy())
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        urls.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    return urls
