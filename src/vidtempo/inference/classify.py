"""Classify video files: extract them as the training features were made, then run the ensemble.

The extraction settings travel from the feature files into every checkpoint (``feature_settings``, read
back as ``Ensemble.extraction``), so a new video is decoded, sampled, cropped and embedded exactly like the
training videos, by the same FeatureExtractor.
"""

from __future__ import annotations

import base64
import functools
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Iterator, Sequence

import numpy as np
import torch

from .data import collate_features
from .ensemble import INFERENCE_PRECISION, Ensemble
from .errors import VidtempoError
from .extract import ExtractionSettings, FeatureExtractor, scale_indices
from .extract.catalog import VideoItem
from .library import error_row, library_items, result_row
from .runtime import autocast
from .trust import describe

if TYPE_CHECKING:
    from .timeline import TimelineOptions

THUMBNAIL_SIZE = 96
# Videos that go through the ensemble together when classifying a library.
LIBRARY_BATCH_VIDEOS = 8
Progress = Callable[[str, float], None]


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


class VideoClassifier:
    """``classify(paths)`` -> one result dict per video (see README, "Classifying videos")."""

    def __init__(self, ensemble: Ensemble, extractor: FeatureExtractor | None = None, tta: bool = False) -> None:
        self.ensemble = ensemble
        self.tta = tta
        if extractor is None:
            if ensemble.extraction is None:
                raise VidtempoError(
                    "these checkpoints were not trained on features extracted from videos "
                    "(no extraction settings recorded), so they cannot classify video files"
                )
            extractor = FeatureExtractor(ensemble.extraction, device=str(ensemble.device))
        self.extractor = extractor

    @classmethod
    def from_checkpoints(cls, checkpoints: Any, device: str = "cpu", tta: bool = False,
                         precision: str = INFERENCE_PRECISION) -> "VideoClassifier":
        """``precision`` (auto, fp32, bf16) is the CNN's and the ensemble's; auto is what the hardware is fast at."""
        return cls(Ensemble.from_checkpoints(checkpoints, device=device, precision=precision), tta=tta)

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
            thumbnails=_thumbnails(clip.frames) if thumbnails else None,
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

    def classify_library(
        self, videos_dir: str | os.PathLike, *, skip: Collection[str] = (), shard: tuple[int, int] | None = None,
        batch_videos: int = LIBRARY_BATCH_VIDEOS, timeline: "bool | TimelineOptions" = False,
    ) -> Iterator[dict[str, Any]]:
        """One prediction row (see library.py) per video file under ``videos_dir``, as soon as it is known.
        Videos whose relative path is in ``skip`` are left out; ``shard=(i, n)`` keeps shard i (1-based) of n of
        the sorted list, as extraction shards. See ``classify_items``."""
        return self.classify_items(library_items(videos_dir, shard), skip=skip, batch_videos=batch_videos,
                                   timeline=timeline)

    def classify_items(
        self, items: Sequence[VideoItem], *, skip: Collection[str] = (), batch_videos: int = LIBRARY_BATCH_VIDEOS,
        timeline: "bool | TimelineOptions" = False,
    ) -> Iterator[dict[str, Any]]:
        """One prediction row per video of ``items`` (``video_id``: the path a row names) but those in ``skip``.

        Worker processes decode the next videos while the CNN embeds the current one; ``batch_videos``
        embedded videos go through the ensemble together. A video that cannot be read gets a row with its
        error and an empty class. With ``timeline`` (True for the defaults, or TimelineOptions) each row also
        holds the video's timeline segments (library.TIMELINE_FIELDS), and its whole-video fields come from
        the frames decoded for the timeline; options the checkpoints cannot fill in are refused here, before
        any video is read."""
        pending = [item for item in items if item.video_id not in skip]
        if not timeline:
            return self._plain_rows(pending, batch_videos)
        from .timeline import TimelineOptions

        options = (TimelineOptions() if timeline is True else timeline).resolved(self)
        return self._timeline_rows(pending, options)

    def _plain_rows(self, pending: Sequence[VideoItem], batch_videos: int) -> Iterator[dict[str, Any]]:
        batch: list[tuple[str, PreparedVideo]] = []
        for item, frames, error in self.extractor.decoded_videos(pending):
            if frames is None:
                yield error_row(item.video_id, f"{item.video_id}: {error}", self.categories)
                continue
            batch.append((item.video_id, self._prepared_frames(item.path, frames)))
            if len(batch) == batch_videos:
                yield from self._library_rows(batch)
                batch = []
        if batch:
            yield from self._library_rows(batch)

    def _timeline_rows(self, pending: Sequence[VideoItem], options: "TimelineOptions") -> Iterator[dict[str, Any]]:
        """One video at a time: its windows already make batches for the ensemble."""
        from .timeline import decode_timeline_frames, timeline_result

        decode = functools.partial(decode_timeline_frames, window_seconds=options.window_seconds,
                                   hop_seconds=options.hop_seconds, frames_per_video=self.settings.frames_per_video,
                                   image_size=self.settings.image_size)
        for item, frames, error in self.extractor.decoded_videos(pending, decode):
            if frames is None:
                yield error_row(item.video_id, f"{item.video_id}: {error}", self.categories, timeline=True)
                continue
            yield result_row(item.video_id, timeline_result(self, item.path, frames, options.switch_penalty))

    def _prepared_frames(self, path: Path, frames: torch.Tensor) -> PreparedVideo:
        start = time.perf_counter()
        features = self.embed(frames)
        return PreparedVideo(path=path, features=features, frame_indices=list(range(len(frames))),
                             frame_times=[0.0] * len(frames),
                             step_frames=step_frame_matrix(len(frames), self.settings.scales),
                             timings={"cnn_s": time.perf_counter() - start})

    def _library_rows(self, batch: Sequence[tuple[str, PreparedVideo]]) -> Iterator[dict[str, Any]]:
        results = self._classify_prepared([video for _, video in batch])
        for (relative, _), result in zip(batch, results):
            yield result_row(relative, result)

    def classify(
        self, paths: Iterable[str | os.PathLike], thumbnails: bool = False, progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        """Results in input order; a video that cannot be read gets ``{"video", "error"}`` instead."""
        paths = list(paths)
        prepared: list[PreparedVideo | str] = []
        for i, path in enumerate(paths):
            if progress:
                progress(f"extracting {Path(path).name}", i / (len(paths) + 1))
            try:
                prepared.append(self.prepare(path, thumbnails=thumbnails))
            except VidtempoError as exc:
                prepared.append(str(exc))
        if progress:
            progress("classifying", len(paths) / (len(paths) + 1))
        ready = [p for p in prepared if isinstance(p, PreparedVideo)]
        results = dict(zip(map(id, ready), self._classify_prepared(ready))) if ready else {}
        if progress:
            progress("done", 1.0)
        return [
            results[id(p)] if isinstance(p, PreparedVideo) else {"video": str(path), "error": p}
            for path, p in zip(paths, prepared)
        ]

    def classify_file(self, path: str | os.PathLike, thumbnails: bool = False,
                      progress: Progress | None = None) -> dict[str, Any]:
        """One video's result; raises VidtempoError when it cannot be read."""
        result = self.classify([path], thumbnails=thumbnails, progress=progress)[0]
        if "error" in result:
            raise VidtempoError(result["error"])
        return result

    def timeline(self, path: str | os.PathLike, window_seconds: float | None = None,
                 hop_seconds: float | None = None, switch_penalty: float | None = None,
                 thumbnails: bool = False) -> dict[str, Any]:
        """``classify_file``'s result plus a ``timeline`` of windows and segments (see vidtempo.timeline)."""
        from .timeline import DEFAULT_SWITCH_PENALTY, classify_timeline

        penalty = DEFAULT_SWITCH_PENALTY if switch_penalty is None else switch_penalty
        return classify_timeline(self, path, window_seconds, hop_seconds, penalty, thumbnails)

    def _classify_prepared(self, videos: Sequence[PreparedVideo]) -> list[dict[str, Any]]:
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


def _thumbnails(frames: torch.Tensor) -> list[str]:
    from PIL import Image

    urls = []
    for frame in frames:
        image = Image.fromarray(frame.permute(1, 2, 0).numpy())
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        urls.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    return urls
