"""How well a timeline labels long videos made of held-out clips of different classes, and what it costs.

Each test video is clips placed one after another: ``--clips-per-class`` clips of one class, then as many of
the next, for ``--classes`` classes, in a few orders; it is measured as made and again degraded by Gaussian
noise (``--noise``, drawn anew for every pixel of every frame), which makes windows unsure and lets them
disagree. It reports, for windows from a quarter of the recorded median training-video duration (few frames
each) to twice it, and switch penalties from 0 (no smoothing) up: the share of the video's time labelled
with its true class, the error of each true change point (distance to the nearest predicted change), the
share of true changes found within one window, and the spurious changes (predicted changes farther than one
window from every true change). Then frames/s of the timeline against plain prediction of the same video,
and the size of a bulk ``--timeline`` row with and without the raw window probabilities.

To pick ``--switch-penalty`` for your own videos, give a labelled folder of held-out clips and your
checkpoints (``--clips-dir``, ``--checkpoints``, ``--noise 0`` to measure them as they are) and, at the
window and hop you will use, take a penalty from the range where the spurious changes are near 0 and the
changes within a window stay at 100%, towards its low end: a larger one merges away true stretches that the
windows are unsure of.

Clips come from the demo (``vidtempo demo DIR``: its held-out ``test`` then ``val`` clips and its
ensemble; run here when DIR has none), or from any labelled folder (``--clips-dir``, one sub-folder per
class, or ``test``/``val`` sub-folders holding those) with ``--checkpoints``. Run:

    python benchmarks/timeline_benchmark.py --demo-dir /tmp/vidtempo-demo
    python benchmarks/timeline_benchmark.py --clips-dir VIDEOS --checkpoints CKPTS
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidtempo.inference.classify import VideoClassifier
from vidtempo.features.extract.video import is_video_file
from vidtempo.inference.library import result_row
from vidtempo.demo.videos import write_clip
from vidtempo.demo.montage import MONTAGE_FPS, concatenate_clips, square_frames
from vidtempo.inference.timeline import DEFAULT_HOP_FRACTION, DEFAULT_SWITCH_PENALTY, build_timeline, recorded_window_seconds

HELD_OUT = ("test", "val")
PENALTIES = tuple(sorted({0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, DEFAULT_SWITCH_PENALTY}))
# (window as a multiple of the recorded median training-video duration, hop as a share of the window)
SETTINGS = ((0.25, DEFAULT_HOP_FRACTION), (0.5, DEFAULT_HOP_FRACTION), (1.0, DEFAULT_HOP_FRACTION), (1.0, 0.5),
            (2.0, DEFAULT_HOP_FRACTION))


def labelled_clips(folder: Path) -> dict[str, list[Path]]:
    """Class -> clips: from ``folder/{test,val}/CLASS`` (held-out splits first) or ``folder/CLASS``."""
    roots = [folder / s for s in HELD_OUT if (folder / s).is_dir()] or [folder]
    clips: dict[str, list[Path]] = {}
    for root in roots:
        for category in sorted(p for p in root.iterdir() if p.is_dir()):
            clips.setdefault(category.name, []).extend(sorted(p for p in category.iterdir() if is_video_file(p)))
    return clips


def build_videos(clips: dict[str, list[Path]], classes: list[str], per_class: int, orders: int,
                 folder: Path) -> list[tuple[Path, list[tuple[str, float, float]]]]:
    """``orders`` montages, each class's block in turn (the class order rotates); truth as (class, start, end)."""
    videos = []
    for order in range(orders):
        sequence = classes[order % len(classes):] + classes[: order % len(classes)]
        rng = np.random.default_rng(order)
        chosen = [(c, p) for c in sequence for p in rng.permutation(clips[c])[:per_class]]
        path, bounds = concatenate_clips([p for _, p in chosen], folder / f"montage_{order}.mp4")
        truth = []
        for (category, _), (start, end) in zip(chosen, bounds):
            if truth and truth[-1][0] == category:
                truth[-1] = (category, truth[-1][1], end)
            else:
                truth.append((category, start, end))
        videos.append((path, truth))
    return videos


def degrade(video: Path, sigma: float, seed: int) -> Path:
    """A copy of ``video`` with Gaussian noise of standard deviation ``sigma`` (of 255) on every pixel of every
    frame, drawn anew for each frame: content that is hard to tell apart, window by window."""
    frames = np.stack(square_frames(video)).astype(np.float32)
    noisy = frames + np.random.default_rng(seed).normal(0.0, sigma, frames.shape)
    output = video.with_name(f"{video.stem}_noise{sigma:g}.mp4")
    write_clip(output, list(np.clip(noisy, 0, 255).astype(np.uint8)), fps=MONTAGE_FPS)
    return output


def score(segments: list[dict], truth: list[tuple[str, float, float]], window: float) -> dict[str, float]:
    """Share of time labelled correctly; mean and max change-point error; share of true changes with a
    predicted one within a window; predicted changes farther than a window from every true change."""
    correct = sum(max(0.0, min(s["end_s"], e) - max(s["start_s"], b))
                  for s in segments for c, b, e in truth if s["class"] == c)
    predicted = np.array([s["start_s"] for s in segments[1:]])
    true = np.array([b for _, b, _ in truth[1:]])
    errors = [float(np.min(np.abs(predicted - b))) if len(predicted) else float("inf") for b in true]
    spurious = sum(not len(true) or float(np.min(np.abs(true - p))) > window for p in predicted)
    return {"correct": correct / truth[-1][2], "mean_error": float(np.mean(errors)), "max_error": max(errors),
            "found": float(np.mean([e <= window for e in errors])), "spurious": spurious}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", type=Path, help="output folder of `vidtempo demo` (made when missing)")
    parser.add_argument("--clips-dir", type=Path, help="labelled folder of clips (instead of the demo's)")
    parser.add_argument("--checkpoints", type=Path, help="ensemble for --clips-dir")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--clips-per-class", type=int, default=6)
    parser.add_argument("--orders", type=int, default=3, help="montages, each with another class order")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 120.0],
                        help="noise levels (standard deviation of 255) to measure the montages at; 0: as they are")
    args = parser.parse_args()
    if args.clips_dir is None:
        demo = args.demo_dir or Path(tempfile.gettempdir()) / "vidtempo-demo"
        if not (demo / "checkpoints").is_dir():
            from vidtempo.demo.run import run_demo

            run_demo(demo)
        args.clips_dir, args.checkpoints = demo / "videos", demo / "checkpoints"
    torch.set_num_threads(max(1, torch.get_num_threads()))
    classifier = VideoClassifier.from_checkpoints(args.checkpoints)
    clips = labelled_clips(args.clips_dir)
    classes = [c for c in classifier.categories if len(clips.get(c, [])) >= args.clips_per_class][: args.classes]
    median = recorded_window_seconds(classifier)
    if median is None:
        raise SystemExit("the checkpoints record no median training-video duration")
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; classes {classes}, {args.clips_per_class} clips each, "
          f"{args.orders} orders; median training video {median:.2f}s")
    with tempfile.TemporaryDirectory() as tmp:
        videos = build_videos(clips, classes, args.clips_per_class, args.orders, Path(tmp))
        for sigma in args.noise:
            print(f"\nNoise {sigma:g}:" if sigma else "\nAs recorded:")
            measured = [(degrade(v, sigma, i) if sigma else v, truth) for i, (v, truth) in enumerate(videos)]
            accuracy_table(classifier, measured, median)
        cost(classifier, videos[0][0])


def accuracy_table(classifier: VideoClassifier, videos: list[tuple[Path, list]], median: float) -> None:
    """One row per window/hop setting and switch penalty, averaged over ``videos``."""
    print("\n| window s | hop s | switch penalty | time correct | change error mean / max s | "
          "changes within a window | spurious changes per video |\n| --- | --- | --- | --- | --- | --- | --- |")
    for factor, hop_fraction in SETTINGS:
        window, hop = median * factor, median * factor * hop_fraction
        results = [(classifier.timeline(v, window, hop), truth) for v, truth in videos]
        for penalty in PENALTIES:
            rows = [score(rescore(r, penalty, classifier.categories), truth, window) for r, truth in results]
            mean = {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}
            worst = max(row["max_error"] for row in rows)
            print(f"| {window:.2f} | {hop:.2f} | {penalty:g} | {100 * mean['correct']:.1f}% | "
                  f"{mean['mean_error']:.2f} / {worst:.2f} | {100 * mean['found']:.0f}% | "
                  f"{mean['spurious']:.1f} |", flush=True)


def rescore(result: dict, penalty: float, names: list[str]) -> list[dict]:
    """Segments of ``result``'s windows smoothed with ``penalty``."""
    timeline = result["timeline"]
    probs = np.array([[w["probabilities"][n] for n in names] for w in timeline["windows"]])
    bounds = np.array([[w["start_s"], w["end_s"]] for w in timeline["windows"]])
    return build_timeline(probs, bounds, timeline["duration_s"], names, penalty)["segments"]


def cost(classifier: VideoClassifier, video: Path, repeats: int = 2) -> None:
    """Frames of the video per second of wall time: plain prediction against the timeline."""
    from vidtempo.features.extract.video import count_frames

    frames = count_frames(video)
    classifier.classify_file(video)  # warm up
    plain = min(_timed(lambda: classifier.classify_file(video)) for _ in range(repeats))
    timed = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = classifier.timeline(video)
        timed.append(time.perf_counter() - start)
    timeline = result["timeline"]
    print(f"\nCost on {video.name} ({frames} frames, {timeline['duration_s']:.1f}s), best of {repeats}:\n")
    print("| run | seconds | video frames/s | frames embedded | windows |\n| --- | --- | --- | --- | --- |")
    print(f"| plain prediction | {plain:.2f} | {frames / plain:.0f} | {classifier.settings.frames_per_video} | 1 |")
    print(f"| timeline (window {timeline['window_seconds']:g}s, hop {timeline['hop_seconds']:g}s) | "
          f"{min(timed):.2f} | {frames / min(timed):.0f} | {timeline['frames_embedded']} | "
          f"{len(timeline['windows'])} |")
    windows = len(timeline["windows"])
    print(f"\nWithout sharing, the windows would embed {windows * classifier.settings.frames_per_video} frames.")
    row = result_row(video.name, result)
    with_windows = {**row, "windows": timeline["windows"]}
    print(f"A bulk --timeline row of this video: {len(json.dumps(row))} bytes; with the raw window probabilities "
          f"{len(json.dumps(with_windows))} bytes.")


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
