"""A content timeline: the ensemble's classes over time within one video.

A window slides over the video. Each window is sampled as a training video of the window's duration was:
``frames_per_video`` frames spread evenly over it (every frame when it has fewer). The windows' sampled
frames lie on one grid of the video's frames, spaced as the training sampling was, and a hop is a whole
number of grid steps, so overlapping windows share their frames: each grid frame is decoded and embedded
once. (A window's frames may sit one frame off from an even spread over its own span; the grid is shared.)

Each window gets the ensemble's probabilities. Segments cover the video from 0 to its end: each window
speaks for the time from halfway after its predecessor's centre to halfway before its successor's, so a
change lands between the centres of the two windows that disagree. Labels are smoothed by a Viterbi pass
that charges ``switch_penalty`` (in nats of log-probability) for every change of class, so one window
that disagrees with its neighbours does not cut a segment unless it is confident enough to pay for two
changes. Raw window probabilities and raw (unsmoothed) segments are reported too.

The penalty: a run of windows labelled B amid A survives smoothing only if the sum over its windows of
log p(B) - log p(A) exceeds twice the penalty (it pays for two changes; a run at either end of the video
for one). At the default of 1 nat a lone window needs odds of e^2, about 7:1, over its neighbours' class;
weaker windows must come several in a row. The default was chosen with benchmarks/timeline_benchmark.py
(benchmarks/RESULTS.md): on montages of held-out clips the penalty changes nothing (no window is wrong
away from a change); on the same montages under heavy noise, at the default window and hop, 0.5 to 2 nats
removed every spurious change and kept every true one, while the earlier default of 3 merged away a true
3.8 s stretch of one class (the noisy windows' probabilities are close to uniform, so long true runs carry
little evidence each). 1 is the middle of that range. The evidence grows with the number of windows, so a
denser hop tolerates a larger penalty and a sparser one a smaller one; pick it on your own validation
videos with the benchmark's ``--clips-dir`` mode.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import VidtempoError
from ..features.extract.settings import MAX_FRAME_PIXELS

if TYPE_CHECKING:
    from .predictor import VideoPredictor
    from ..features.extract.video import DecodedClip

# Default hop: this share of the window.
DEFAULT_HOP_FRACTION = 0.25
# Nats charged per change of class by the smoothing pass (why 1: see the module docstring).
DEFAULT_SWITCH_PENALTY = 1.0
# Windows through the ensemble at once.
WINDOW_BATCH = 64


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows of one video lie and which of its frames they sample."""

    grid: np.ndarray  # frame indices to decode and embed, ascending
    rows: np.ndarray  # [N, K]: window n samples grid[rows[n]]
    total_frames: int
    frame_rate: float

    @property
    def duration(self) -> float:
        return self.total_frames / self.frame_rate

    def window_bounds(self) -> np.ndarray:
        """``[N, 2]`` start and end of each window in seconds (the end is the end of its last frame)."""
        first = self.grid[self.rows[:, 0]]
        last = self.grid[self.rows[:, -1]] + 1
        return np.stack([first, np.minimum(last, self.total_frames)], axis=1) / self.frame_rate


def plan_windows(total_frames: int, frame_rate: float, window_seconds: float, hop_seconds: float,
                 frames_per_window: int) -> WindowPlan:
    """Windows of ``window_seconds`` every ``hop_seconds`` (rounded to whole grid steps) from the first frame,
    plus one that ends at the last frame; a video no longer than one window is one window over all of it."""
    if window_seconds <= 0 or hop_seconds <= 0:
        raise VidtempoError("--window-seconds and --hop-seconds must be positive")
    if total_frames < 1:
        raise VidtempoError("the video has no frames")
    window_frames = max(1, int(round(window_seconds * frame_rate)))
    if total_frames <= window_frames:
        from ..features.extract.video import uniform_indices

        grid = np.asarray(uniform_indices(total_frames, frames_per_window), dtype=np.int64)
        return WindowPlan(grid, np.arange(len(grid))[None, :], total_frames, frame_rate)
    per_window = min(frames_per_window, window_frames)
    # Training sampled linspace(0, L - 1, K) of an L-frame video: this spacing, truncated to whole frames.
    spacing = (window_frames - 1) / (per_window - 1) if per_window > 1 else float(window_frames)
    grid = np.floor(np.arange(0, (total_frames - 1) / spacing + 1e-9 + 1) * spacing).astype(np.int64)
    grid = grid[grid < total_frames]
    hop_steps = max(1, int(round(hop_seconds * frame_rate / spacing)))
    last_start = len(grid) - per_window
    starts = list(range(0, last_start + 1, hop_steps))
    if starts[-1] != last_start:
        starts.append(last_start)
    rows = np.asarray(starts)[:, None] + np.arange(per_window)[None, :]
    return WindowPlan(grid, rows, total_frames, frame_rate)


def smooth_labels(probs: np.ndarray, switch_penalty: float) -> np.ndarray:
    """Most likely class sequence under log-probabilities minus ``switch_penalty`` per change (Viterbi).
    A penalty of 0 gives each window's most probable class."""
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))
    if switch_penalty <= 0 or len(probs) < 2:
        return log_probs.argmax(axis=1)
    num_windows, num_classes = log_probs.shape
    score = log_probs[0].copy()
    back = np.zeros((num_windows, num_classes), dtype=np.int64)
    switch = switch_penalty * (1.0 - np.eye(num_classes))  # [from, to]
    for t in range(1, num_windows):
        candidates = score[:, None] - switch
        back[t] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + log_probs[t]
    labels = np.empty(num_windows, dtype=np.int64)
    labels[-1] = int(score.argmax())
    for t in range(num_windows - 1, 0, -1):
        labels[t - 1] = back[t, labels[t]]
    return labels


def window_spans(bounds: np.ndarray, duration: float) -> np.ndarray:
    """``[N, 2]``: the time each window speaks for. Neighbours meet halfway between their centres; the
    first starts at 0 and the last ends at ``duration``, so the spans tile the video."""
    centres = bounds.mean(axis=1)
    cuts = (centres[:-1] + centres[1:]) / 2
    return np.stack([np.concatenate([[0.0], cuts]), np.concatenate([cuts, [duration]])], axis=1)


def merge_segments(labels: np.ndarray, probs: np.ndarray, spans: np.ndarray,
                   class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Runs of equal labels as segments; a segment's confidence is the mean probability of its class over
    its windows."""
    segments: list[dict[str, Any]] = []
    start = 0
    for end in range(1, len(labels) + 1):
        if end < len(labels) and labels[end] == labels[start]:
            continue
        label = int(labels[start])
        segments.append({
            "start_s": round(float(spans[start, 0]), 3),
            "end_s": round(float(spans[end - 1, 1]), 3),
            "class": class_names[label],
            "confidence": float(probs[start:end, label].mean()),
            "windows": end - start,
        })
        start = end
    return segments


def build_timeline(probs: np.ndarray, bounds: np.ndarray, duration: float, class_names: Sequence[str],
                   switch_penalty: float = DEFAULT_SWITCH_PENALTY) -> dict[str, Any]:
    """Windows, smoothed segments and raw segments from window probabilities ``[N, C]`` and bounds ``[N, 2]``."""
    spans = window_spans(bounds, duration)
    return {
        "duration_s": round(float(duration), 3),
        "smoothing": {"method": "viterbi", "switch_penalty": float(switch_penalty)},
        "segments": merge_segments(smooth_labels(probs, switch_penalty), probs, spans, class_names),
        "raw_segments": merge_segments(probs.argmax(axis=1), probs, spans, class_names),
        "windows": [
            {"start_s": round(float(s), 3), "end_s": round(float(e), 3),
             "probabilities": {name: float(p) for name, p in zip(class_names, row)}}
            for (s, e), row in zip(bounds, probs)
        ],
    }


def recorded_window_seconds(classifier: "VideoPredictor") -> float | None:
    """The median duration of the training videos, as recorded at extraction; None for older features."""
    from ..features.store import MEDIAN_SECONDS_ATTR

    recorded = [float(s) for s in (m.get(MEDIAN_SECONDS_ATTR) for m in classifier.ensemble.metadata) if s]
    return recorded[0] if recorded else None


def default_window_seconds(classifier: "VideoPredictor") -> float:
    """The median duration of the training videos, as recorded at extraction."""
    recorded = recorded_window_seconds(classifier)
    if recorded is None:
        raise VidtempoError(
            "these checkpoints record no training-video duration (features extracted by an older version): "
            "give --window-seconds"
        )
    return recorded


@dataclass(frozen=True)
class TimelineOptions:
    """How timelines are made: ``window_seconds`` (None: the median duration of the training videos),
    ``hop_seconds`` (None: ``DEFAULT_HOP_FRACTION`` of the window) and ``switch_penalty`` (nats per change)."""

    window_seconds: float | None = None
    hop_seconds: float | None = None
    switch_penalty: float = DEFAULT_SWITCH_PENALTY

    def resolved(self, classifier: "VideoPredictor") -> "TimelineOptions":
        """These options with the defaults that depend on the checkpoints filled in; bad values refused."""
        window = self.window_seconds if self.window_seconds is not None else default_window_seconds(classifier)
        hop = self.hop_seconds if self.hop_seconds is not None else window * DEFAULT_HOP_FRACTION
        if window <= 0 or hop <= 0:
            raise VidtempoError("--window-seconds and --hop-seconds must be positive")
        if self.switch_penalty < 0:
            raise VidtempoError(f"--switch-penalty must be 0 or more, got {self.switch_penalty}")
        return TimelineOptions(window, hop, self.switch_penalty)


@dataclass
class TimelineFrames:
    """The decoded frames of one video that its windows and its whole-video sample use, each once."""

    clip: "DecodedClip"
    plan: WindowPlan
    whole: list[int]  # the frames a plain prediction samples
    window_seconds: float
    hop_seconds: float


def decode_timeline_frames(path: str | os.PathLike, window_seconds: float, hop_seconds: float,
                           frames_per_video: int, image_size: int, sampling: str = "exact",
                           max_pixels: int | None = MAX_FRAME_PIXELS) -> TimelineFrames:
    """Decode what a timeline of ``path`` needs (see TimelineFrames), in one pass; the whole-video sample is
    the one ``sampling`` takes in a plain prediction. Raises VideoDecodeError. Decoder worker processes run
    it too, so it takes plain values."""
    from ..features.extract.video import (VideoDecodeError, decode_selected, sparse_choice, sparse_sampling_applies,
                                          uniform_indices)

    plans: dict[str, Any] = {}

    def select(total: int, rate: float | None, keyframes) -> list[int]:
        if not rate:
            raise VideoDecodeError(f"{path}: the video states no frame rate, so windows cannot be placed in time")
        try:
            plans["plan"] = plan_windows(total, rate, window_seconds, hop_seconds, frames_per_video)
        except VidtempoError as exc:
            raise VideoDecodeError(f"{path}: {exc}") from None
        plans["whole"] = uniform_indices(total, frames_per_video)
        if sparse_sampling_applies(sampling, total, len(plans["whole"])):
            plans["whole"] = sparse_choice(plans["whole"], keyframes(), total, sampling == "keyframe")
        return sorted(set(plans["plan"].grid.tolist()) | set(plans["whole"]))

    clip = decode_selected(path, select, image_size, keyframes=True, max_pixels=max_pixels)
    return TimelineFrames(clip, plans["plan"], plans["whole"], window_seconds, hop_seconds)


def timeline_decoder(classifier: "VideoPredictor", options: TimelineOptions) -> functools.partial:
    """``decode_timeline_frames`` with ``classifier``'s extraction settings and limits and the timeline's
    windows: a function of the path alone, picklable, for its decoder processes."""
    settings = classifier.settings
    return functools.partial(decode_timeline_frames, window_seconds=options.window_seconds,
                             hop_seconds=options.hop_seconds, frames_per_video=settings.frames_per_video,
                             image_size=settings.image_size, sampling=settings.sampling,
                             max_pixels=classifier.extractor.max_frame_pixels)


def classify_timeline(classifier: "VideoPredictor", path: str | os.PathLike, window_seconds: float | None = None,
                      hop_seconds: float | None = None,
                      switch_penalty: float = DEFAULT_SWITCH_PENALTY, thumbnails: bool = False) -> dict[str, Any]:
    """The whole-video result of ``classifier`` with a ``timeline`` added (see module docstring). The video
    is decoded once; each frame either needs is embedded once."""
    path = Path(path)
    if not path.is_file():
        raise VidtempoError(f"{path}: file not found")
    options = TimelineOptions(window_seconds, hop_seconds, switch_penalty).resolved(classifier)
    start = time.perf_counter()
    frames = classifier.extractor.decode_with(timeline_decoder(classifier, options), path)
    return timeline_result(classifier, path, frames, switch_penalty, thumbnails,
                           {"decode_s": time.perf_counter() - start})


def timeline_result(classifier: "VideoPredictor", path: Path, frames: TimelineFrames, switch_penalty: float,
                    thumbnails: bool = False, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """``classify_timeline``'s result from the decoded ``frames``: the whole-video result from the frames a
    plain prediction samples, the windows' probabilities from the grid, every frame embedded once."""
    from .predictor import PreparedVideo, frame_thumbnails, step_frame_matrix

    clip, plan, whole = frames.clip, frames.plan, frames.whole
    settings = classifier.settings
    start = time.perf_counter()
    frame_features = classifier.frame_features(clip.frames)
    position = {index: row for row, index in enumerate(clip.indices)}
    whole_rows = [position[i] for i in whole]
    video = PreparedVideo(
        path=path, features=_sequence(frame_features[whole_rows], settings), frame_indices=whole,
        frame_times=[round(i / plan.frame_rate, 3) for i in whole],
        step_frames=step_frame_matrix(len(whole), settings.scales),
        timings={**(timings or {}), "cnn_s": time.perf_counter() - start},
        thumbnails=frame_thumbnails(clip.frames[whole_rows]) if thumbnails else None,
    )
    result = classifier.classify_prepared([video])[0]
    grid_rows = np.asarray([position[i] for i in plan.grid.tolist()])
    windows_start = time.perf_counter()
    probs = window_probabilities(classifier, frame_features[grid_rows], plan.rows)
    timeline = build_timeline(probs, plan.window_bounds(), plan.duration, classifier.categories, switch_penalty)
    timeline.update(window_seconds=round(frames.window_seconds, 3), hop_seconds=round(frames.hop_seconds, 3),
                    frames_embedded=len(clip.indices))
    result["timeline"] = timeline
    result["timings_s"]["timeline_s"] = round(time.perf_counter() - windows_start, 4)
    result["timings_s"]["total_s"] = round(result["timings_s"]["total_s"] + result["timings_s"]["timeline_s"], 4)
    return result


def window_probabilities(classifier: "VideoPredictor", grid_features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``[N, C]`` ensemble probabilities of each window, from the embedded grid frames ``[G, D]``."""
    import torch

    settings = classifier.settings
    out = []
    for first in range(0, len(rows), WINDOW_BATCH):
        batch = np.stack([_sequence(grid_features[r], settings) for r in rows[first:first + WINDOW_BATCH]])
        lengths = torch.full((len(batch),), batch.shape[1], dtype=torch.long)
        with torch.no_grad():
            probs = classifier.ensemble.predict_proba(torch.from_numpy(batch), lengths, tta=classifier.tta)
        out.append(probs.cpu().numpy())
    return np.concatenate(out)


def _sequence(frame_features: np.ndarray, settings: Any) -> np.ndarray:
    """A window's stored-style sequence from its frames' CNN features (as FeatureExtractor.sequence_features)."""
    if settings.multi_scale:
        from ..features.extract.multiscale import multiscale_sequence

        frame_features = multiscale_sequence(frame_features, settings.scales)
    return np.ascontiguousarray(frame_features, dtype=np.float32)


def plot_timeline(result: dict[str, Any], output: str | os.PathLike) -> Path:
    """The class band over time above the per-class window probability curves, as an image file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import atomic_write

    timeline = result["timeline"]
    names = list(result["probabilities"])
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}
    fig, (band, curves) = plt.subplots(2, 1, figsize=(10, 4), sharex=True,
                                       gridspec_kw={"height_ratios": [1, 3]})
    for segment in timeline["segments"]:
        band.axvspan(segment["start_s"], segment["end_s"], color=colours[segment["class"]])
        band.text((segment["start_s"] + segment["end_s"]) / 2, 0.5,
                  f"{segment['class']}\n{100 * segment['confidence']:.0f}%", ha="center", va="center", fontsize=8)
    band.set_yticks([])
    band.set_title(Path(result["video"]).name)
    centres = [(w["start_s"] + w["end_s"]) / 2 for w in timeline["windows"]]
    for name in names:
        curves.plot(centres, [w["probabilities"][name] for w in timeline["windows"]], color=colours[name],
                    label=name, marker=".")
    curves.set_xlim(0, timeline["duration_s"])
    curves.set_ylim(0, 1)
    curves.set_xlabel("seconds")
    curves.set_ylabel("window probability")
    curves.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    output = Path(output)
    atomic_write(output, lambda tmp: fig.savefig(tmp, format=output.suffix.lstrip(".") or "png", dpi=100))
    plt.close(fig)
    return output


def add_timeline_options(parser: Any) -> None:
    """``predict``'s timeline options."""
    parser.add_argument("--timeline", action="store_true",
                        help="also label each stretch of the video: windows and segments over time (with --videos-dir: "
                             "each row of the .jsonl --output adds the segments)")
    parser.add_argument("--window-seconds", type=float,
                        help="timeline window (default: the median duration of the training videos)")
    parser.add_argument("--hop-seconds", type=float,
                        help=f"timeline hop (default: {DEFAULT_HOP_FRACTION:g} of the window)")
    parser.add_argument("--switch-penalty", type=float, default=DEFAULT_SWITCH_PENALTY,
                        help="smoothing: log-probability a change of class must win by; 0 turns smoothing off "
                             "(default %(default)s)")
    parser.add_argument("--plot", type=Path, help="with --timeline and one video: draw the timeline to this image")


def check_timeline_args(args: Any) -> None:
    """Refuse timeline options that cannot work, before any model loads."""
    used = [flag for flag, value in (("--window-seconds", args.window_seconds), ("--hop-seconds", args.hop_seconds),
                                     ("--plot", args.plot)) if value is not None]
    if used and not args.timeline:
        raise VidtempoError(f"{used[0]} needs --timeline")
    if args.plot and len(args.videos) != 1:
        raise VidtempoError("--plot draws one video's timeline: give one video")
    for value, flag in ((args.window_seconds, "--window-seconds"), (args.hop_seconds, "--hop-seconds")):
        if value is not None and value <= 0:
            raise VidtempoError(f"{flag} must be positive, got {value}")
    if args.switch_penalty < 0:
        raise VidtempoError(f"--switch-penalty must be 0 or more, got {args.switch_penalty}")


def run_timeline(classifier: "VideoPredictor", args: Any) -> int:
    """``predict --timeline``: one result per video with its timeline; 2 when any video failed."""
    import json
    import sys

    results, failed = [], 0
    for video in args.videos:
        try:
            results.append(classifier.timeline(video, args.window_seconds, args.hop_seconds, args.switch_penalty))
        except VidtempoError as exc:
            print(f"vidtempo: error: {exc}", file=sys.stderr)
            failed += 1
    if args.plot and results:
        plot_timeline(results[0], args.plot)
    if args.json:
        print(json.dumps(results, indent=2))
    for result in [] if args.json else results:
        timeline = result["timeline"]
        print(f"{result['video']}: {result['predicted_class']} ({100 * result['confidence']:.1f}%), "
              f"window {timeline['window_seconds']:g}s hop {timeline['hop_seconds']:g}s")
        for segment in timeline["segments"]:
            print(f"  {segment['start_s']:8.2f}s - {segment['end_s']:8.2f}s  {segment['class']} "
                  f"({100 * segment['confidence']:.1f}%)")
    return 2 if failed else 0
