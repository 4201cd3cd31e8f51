"""How well a timeline labels long videos made of held-out clips of different classes, and what it costs.

Each test video is clips placed one after another: ``--clips-per-class`` clips of one class, then as many of
the next, for ``--classes`` classes, in a few orders. It reports, for several window/hop settings and with
and without smoothing, the share of the video's time labelled with its true class, the error of each true
change point (distance to the nearest predicted change) and the share of changes found within one window;
then frames/s of the timeline against plain prediction of the same video.

Clips come from the demo (``vidtempo demo DIR``: its held-out ``test`` then ``val`` clips and its
ensemble; run here when DIR has none), or from any labelled folder (``--clips-dir``, one sub-folder per
class, or ``test``/``val`` sub-folders holding those) with ``--checkpoints``. Run:

    python benchmarks/timeline_benchmark.py --demo-dir /tmp/vidtempo-demo
    python benchmarks/timeline_benchmark.py --clips-dir VIDEOS --checkpoints CKPTS
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidtempo.classify import VideoClassifier
from vidtempo.extract.video import is_video_file
from vidtempo.montage import concatenate_clips
from vidtempo.timeline import DEFAULT_HOP_FRACTION, DEFAULT_SWITCH_PENALTY, build_timeline, recorded_window_seconds

HELD_OUT = ("test", "val")
PENALTIES = (0.0, 1.0, DEFAULT_SWITCH_PENALTY, 6.0)
# (window as a multiple of the recorded median training-video duration, hop as a share of the window)
SETTINGS = ((1.0, DEFAULT_HOP_FRACTION), (1.0, 0.5), (2.0, DEFAULT_HOP_FRACTION))


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


def score(segments: list[dict], truth: list[tuple[str, float, float]], window: float) -> dict[str, float]:
    """Share of time labelled correctly; mean and max change-point error; share of changes within a window."""
    correct = sum(max(0.0, min(s["end_s"], e) - max(s["start_s"], b))
                  for s in segments for c, b, e in truth if s["class"] == c)
    predicted = np.array([s["start_s"] for s in segments[1:]])
    errors = [float(np.min(np.abs(predicted - b))) if len(predicted) else float("inf") for _, b, _ in truth[1:]]
    return {"correct": correct / truth[-1][2], "mean_error": float(np.mean(errors)), "max_error": max(errors),
            "found": float(np.mean([e <= window for e in errors])), "extra": len(predicted) - len(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", type=Path, help="output folder of `vidtempo demo` (made when missing)")
    parser.add_argument("--clips-dir", type=Path, help="labelled folder of clips (instead of the demo's)")
    parser.add_argument("--checkpoints", type=Path, help="ensemble for --clips-dir")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--clips-per-class", type=int, default=6)
    parser.add_argument("--orders", type=int, default=2, help="montages, each with another class order")
    args = parser.parse_args()
    if args.clips_dir is None:
        demo = args.demo_dir or Path(tempfile.gettempdir()) / "vidtempo-demo"
        if not (demo / "checkpoints").is_dir():
            from vidtempo.demo import run_demo

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
        print("\n| window s | hop s | switch penalty | time correct | change error mean / max s | "
              "changes within a window | extra changes |\n| --- | --- | --- | --- | --- | --- | --- |")
        for factor, hop_fraction in SETTINGS:
            window, hop = median * factor, median * factor * hop_fraction
            results = [(classifier.timeline(v, window, hop), truth) for v, truth in videos]
            for penalty in PENALTIES:
                rows = [score(rescore(r, penalty, classifier.categories), truth, window) for r, truth in results]
                mean = {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}
                worst = max(row["max_error"] for row in rows)
                print(f"| {window:.2f} | {hop:.2f} | {penalty:g} | {100 * mean['correct']:.1f}% | "
                      f"{mean['mean_error']:.2f} / {worst:.2f} | {100 * mean['found']:.0f}% | "
                      f"{mean['extra']:.1f} |", flush=True)
        cost(classifier, videos[0][0])


def rescore(result: dict, penalty: float, names: list[str]) -> list[dict]:
    """Segments of ``result``'s windows smoothed with ``penalty``."""
    timeline = result["timeline"]
    probs = np.array([[w["probabilities"][n] for n in names] for w in timeline["windows"]])
    bounds = np.array([[w["start_s"], w["end_s"]] for w in timeline["windows"]])
    return build_timeline(probs, bounds, timeline["duration_s"], names, penalty)["segments"]


def cost(classifier: VideoClassifier, video: Path, repeats: int = 2) -> None:
    """Frames of the video per second of wall time: plain prediction against the timeline."""
    from vidtempo.extract.video import count_frames

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


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
