"""Classify video files: extract them as the training features were made, then run the ensemble.

The extraction settings travel from the feature files into every checkpoint (``feature_settings``, read
back as ``Ensemble.extraction``), so a new video is decoded, sampled, cropped and embedded exactly like the
training videos, by the same FeatureExtractor.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Sequence

import torch

from ..errors import VidtempoError
from ..features.extract.catalog import VideoItem
from .library import error_row, library_items, result_row
from .predictor import PreparedVideo, VideoPredictor
from .timeline import DEFAULT_SWITCH_PENALTY, TimelineOptions, classify_timeline, timeline_decoder, timeline_result

# Videos that go through the ensemble together when classifying a library.
LIBRARY_BATCH_VIDEOS = 8
Progress = Callable[[str, float], None]


class VideoClassifier(VideoPredictor):
    """``classify(paths)`` -> one result dict per video (see README, "Classifying videos")."""

    def classify_library(
        self, videos_dir: str | os.PathLike, *, skip: Collection[str] = (), shard: tuple[int, int] | None = None,
        batch_videos: int = LIBRARY_BATCH_VIDEOS, timeline: bool | TimelineOptions = False,
    ) -> Iterator[dict[str, Any]]:
        """One prediction row (see library.py) per video file under ``videos_dir``, as soon as it is known.
        Videos whose relative path is in ``skip`` are left out; ``shard=(i, n)`` keeps shard i (1-based) of n of
        the sorted list, as extraction shards. See ``classify_items``."""
        return self.classify_items(library_items(videos_dir, shard), skip=skip, batch_videos=batch_videos,
                                   timeline=timeline)

    def classify_items(
        self, items: Sequence[VideoItem], *, skip: Collection[str] = (), batch_videos: int = LIBRARY_BATCH_VIDEOS,
        timeline: bool | TimelineOptions = False,
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

    def _timeline_rows(self, pending: Sequence[VideoItem], options: TimelineOptions) -> Iterator[dict[str, Any]]:
        """One video at a time: its windows already make batches for the ensemble."""
        for item, frames, error in self.extractor.decoded_videos(pending, timeline_decoder(self, options)):
            if frames is None:
                yield error_row(item.video_id, f"{item.video_id}: {error}", self.categories, timeline=True)
                continue
            yield result_row(item.video_id, timeline_result(self, item.path, frames, options.switch_penalty))

    def _prepared_frames(self, path: Path, frames: torch.Tensor) -> PreparedVideo:
        start = time.perf_counter()
        embedded = self.embed_video(frames)
        return PreparedVideo(path=path, features=embedded.features, frame_indices=list(embedded.frames),
                             frame_times=[0.0] * len(embedded.frames), step_frames=self.step_frames(embedded),
                             timings={"cnn_s": time.perf_counter() - start}, frames_sampled=embedded.sampled)

    def _library_rows(self, batch: Sequence[tuple[str, PreparedVideo]]) -> Iterator[dict[str, Any]]:
        results = self.classify_prepared([video for _, video in batch])
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
        results = dict(zip(map(id, ready), self.classify_prepared(ready))) if ready else {}
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
        """``classify_file``'s result plus a ``timeline`` of windows and segments (see vidtempo.inference.timeline)."""
        penalty = DEFAULT_SWITCH_PENALTY if switch_penalty is None else switch_penalty
        return classify_timeline(self, path, window_seconds, hop_seconds, penalty, thumbnails)
