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
from ..ensemble.early_exit import ExitRule
from ..features.extract import ExtractionSettings, FeatureExtractor, RunOptions, scale_indices
from ..features.extract.multiscale import multiscale_steps, step_sources
from ..features.frame_order import prefix_steps
from ..runtime import autocast
from ..training.data import collate_features

THUMBNAIL_SIZE = 96
# How many of a video's sampled frames classification embeds: "auto" stops early where the model's early-exit
# rule says the answer is settled; "all" embeds the whole sample.
FRAME_CHOICES = ("auto", "all")


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
    frames_sampled: int | None = None  # the frames of the full sample; more than frame_indices after an early exit


@dataclass
class Embedded:
    """What the CNN made of a video's sampled frames: the steps the model reads (all of them, or the steps of
    the stage whose answer was final), and which of the sampled frames they needed."""

    features: np.ndarray  # [T_read, D], in time order
    steps: np.ndarray  # [T_read]: which steps of the full sequence
    frames: list[int]  # positions among the sampled frames that were embedded, sorted
    sampled: int  # frames in the full sample


class VideoPredictor:
    """A trained ensemble with its extractor: ``prepare`` a video file, ``classify_prepared`` prepared videos."""

    def __init__(self, ensemble: Ensemble, extractor: FeatureExtractor | None = None, tta: bool = False, *,
                 max_decode_seconds: float | None = RunOptions.max_decode_seconds,
                 max_frame_pixels: int | None = RunOptions.max_frame_pixels, frames: str = "auto") -> None:
        """Without ``extractor``, one of the checkpoints' extraction settings, decoding under the two limits.
        ``frames``: "auto" embeds a video in stages and stops once the answer is settled, where the model
        carries an early-exit rule (ensemble/early_exit.py) and TTA is off; "all" embeds every sampled frame."""
        if frames not in FRAME_CHOICES:
            raise VidtempoError(f"--frames must be one of {', '.join(FRAME_CHOICES)}, got {frames!r}")
        self.ensemble = ensemble
        self.tta = tta
        self.frames = frames
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
                         max_frame_pixels: int | None = RunOptions.max_frame_pixels,
                         frames: str = "auto") -> "VideoPredictor":
        """``precision`` (auto, fp32, bf16) is the CNN's and the ensemble's with PyTorch; auto is what the
        hardware is fast at. ``runtime`` (torch, onnx, auto; see onnx_model.resolve_runtime): ``onnx`` runs an
        exported folder, or the export of ``checkpoints`` kept beside them, with ONNX Runtime in float32.
        ``max_decode_seconds`` and ``max_frame_pixels`` bound each video's decode (RunOptions)."""
        limits = {"max_decode_seconds": max_decode_seconds, "max_frame_pixels": max_frame_pixels}
        from .onnx_model import OnnxEnsemble, exported_folder, resolve_runtime

        chosen = resolve_runtime(runtime, checkpoints, device)
        if chosen == "torch":
            return cls(Ensemble.from_checkpoints(checkpoints, device=device, precision=precision), tta=tta,
                       frames=frames, **limits)
        if tta:
            raise VidtempoError("the ONNX runtime runs plain predictions: TTA needs --runtime torch")
        ensemble = OnnxEnsemble(exported_folder(checkpoints))
        backbone = ensemble.backbone()  # refuses, saying why, a model exported without one
        return cls(ensemble, FeatureExtractor(ensemble.extraction, device="cpu", backbone=backbone, **limits), tta=tta,
                   frames=frames)

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
        embedded = self.embed_video(clip.frames)
        indices = [clip.indices[f] for f in embedded.frames]
        return PreparedVideo(
            path=path,
            features=embedded.features,
            frame_indices=indices,
            frame_times=[round(i / clip.frame_rate, 3) if clip.frame_rate else 0.0 for i in indices],
            step_frames=self.step_frames(embedded),
            timings={"decode_s": decoded - start, "cnn_s": time.perf_counter() - decoded},
            thumbnails=frame_thumbnails(clip.frames[embedded.frames]) if thumbnails else None,
            frames_sampled=embedded.sampled,
        )

    @property
    def exit_rule(self) -> ExitRule | None:
        """The rule that ends a video's stages early, when this predictor uses one (see ``__init__``)."""
        rule = self.ensemble.early_exit
        if self.frames != "auto" or self.tta or not rule:
            return None
        return ExitRule.from_dict(rule)

    def embed_video(self, frames: torch.Tensor) -> Embedded:
        """The features the model reads for a video's sampled frames: all of them, or, with an early-exit rule,
        stage by stage (the first steps of the coarse-to-fine order, features/frame_order.py), each stage
        embedding only the frames it adds, until the ensemble's calibrated confidence reaches the stage's
        threshold. The last stage is the whole sample, with the features ``embed`` gives."""
        count = int(frames.shape[0])
        rule = self.exit_rule
        if rule is None:
            features = self.embed(frames)
            return Embedded(features, np.arange(len(features)), list(range(count)), count)
        scales = tuple(self.settings.scales) if self.settings.multi_scale else (1.0,)
        sources = step_sources(count, scales)
        rows: dict[int, np.ndarray] = {}
        stages = [(stage, threshold) for stage, threshold in zip(rule.stages, rule.thresholds)
                  if threshold is not None and stage < len(sources)]
        for stage, threshold in [*stages, (len(sources), None)]:
            steps = prefix_steps(len(sources), stage)
            needed = sorted({frame for step in steps for frame in sources[step]})
            new = [frame for frame in needed if frame not in rows]
            if new:
                rows.update(zip(new, self.frame_features(frames[new])))
            features = np.ascontiguousarray(multiscale_steps(rows, sources, steps, len(scales)), dtype=np.float32)
            if threshold is None:
                return Embedded(features, steps, needed, count)
            confidence = float(self.ensemble.predict_proba(torch.from_numpy(features)[None]).max())
            if confidence >= threshold:
                return Embedded(features, steps, needed, count)
        raise AssertionError("the last stage always returns")

    def step_frames(self, embedded: Embedded) -> np.ndarray:
        """``[T_read, F_used]``: the share of each embedded frame in each step read (see ``step_frame_matrix``)."""
        matrix = step_frame_matrix(embedded.sampled, self.settings.scales)
        return matrix[embedded.steps][:, embedded.frames]

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
            # Frames embedded for this answer, of the sample: fewer when an early stage's answer was final.
            "frames_used": len(video.frame_indices),
            "frames_sampled": video.frames_sampled or len(video.frame_indices),
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
