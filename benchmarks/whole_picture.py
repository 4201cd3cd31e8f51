"""What a video costs end to end, and what is given up for it: today's default model against a distilled
student, with and without early exit, on the real-footage clips.

Rows (each a ``VideoClassifier`` over the same clips, ``classify_library`` as ``predict --videos-dir`` runs it:
decoder processes ahead of the CNN, batches of 8 through the model, default extraction: 64 frames at 256 px,
multi-scale, bf16 autocast where the CPU has it):

* ``default ensemble``: 3 members of the default model (65 M parameters each), random weights: what today's
  default costs per video (cost does not depend on the weights; its answers are not scored);
* ``teacher``: the ensemble the student learned from (``--teacher``, trained on the set's default-extraction
  features with prefix training, e.g. by early_exit.py), every frame: the answers the others are compared with;
* ``student, all frames``: ``vidtempo distill`` of the teacher (default student size), ``--frames all``;
* ``student, early exit``: the same student, ``--frames auto`` (its early-exit rule);
* ``teacher, early exit``: the teacher with its own rule.

For each: seconds, videos per second, accuracy on the clips' labels (their folder), agreement with the
teacher's all-frames answers, and frames embedded per video. Then where one video's time goes (decode, CNN,
model) for the default ensemble and the student with early exit, from ``classify`` on ``--profile`` clips one
at a time. Run (after early_exit.py has trained its runs):

    python benchmarks/whole_picture.py --teacher ~/.cache/vidtempo/early_exit/runs/default-prefix-seed1-*/checkpoints
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidtempo import Ensemble
from vidtempo.config import ModelConfig
from vidtempo.inference.classify import VideoClassifier
from vidtempo.model.temporal import TemporalModel
from vidtempo.training.distill import distill

CACHE = Path.home() / ".cache" / "vidtempo" / "whole_picture"
VIDEOS = Path.home() / ".cache" / "vidtempo" / "real_footage" / "seed0-v1-200clips-40s" / "videos"
FEATURES = Path.home() / ".cache" / "vidtempo" / "early_exit" / "features-default"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    flags = open("/proc/cpuinfo").read()
    return (f"{model}, {torch.get_num_threads()} torch threads, AMX {'yes' if 'amx_tile' in flags else 'no'}, "
            f"AVX512-BF16 {'yes' if 'avx512_bf16' in flags else 'no'}; torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def clips(videos: Path, splits: list[str]) -> list[tuple[Path, str]]:
    return [(path, path.parent.name) for split in splits for path in sorted((videos / split).rglob("*.mp4"))]


def student_of(teacher: Path, features: Path, out: Path, seed: int) -> Path:
    if not (out / "ensemble.json").is_file():
        training = json.loads(next(teacher.glob("*_config.json")).read_text())["training_config"]
        keep = {k: training[k] for k in ("num_epochs", "batch_size", "learning_rate", "patience", "prefix_lengths",
                                          "precision")}
        distill(features, teacher, out, training_config={**keep, "seed": seed, "num_workers": 0,
                                                        "checkpoint_every": 0}, device="cpu", quiet=True)
    return out


def default_ensemble(extraction) -> Ensemble:
    torch.manual_seed(0)
    models = [TemporalModel(ModelConfig(num_classes=4)).eval() for _ in range(3)]
    return Ensemble(models, {"Animation": 0, "Flat_Content": 1, "Gaming": 2, "Natural_Content": 3},
                    names=["m1", "m2", "m3"], extraction=extraction)


def library_run(classifier: VideoClassifier, items: list[tuple[Path, str]]) -> dict[str, Any]:
    from vidtempo.features.extract.catalog import VideoItem

    videos = [VideoItem(path=path, video_id=str(path), category=category, label=0) for path, category in items]
    classifier.classify_file(items[0][0])  # warm-up: decoder process, CNN weights
    start = time.perf_counter()
    rows = list(classifier.classify_items(videos))
    seconds = time.perf_counter() - start
    labels = dict((str(p), c) for p, c in items)
    return {"seconds": seconds, "rows": rows, "videos_per_s": len(rows) / seconds,
            "accuracy": 100 * float(np.mean([r["predicted_class"] == labels[r["path"]] for r in rows])),
            "frames": float(np.mean([r["frames_used"] for r in rows]))}


def profile(classifier: VideoClassifier, items: list[tuple[Path, str]]) -> dict[str, float]:
    classifier.classify_file(items[0][0])
    timings = [classifier.classify_file(path)["timings_s"] for path, _ in items]
    return {key: float(np.mean([t[key] for t in timings])) for key in ("decode_s", "cnn_s", "ensemble_s", "total_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--features", type=Path, default=FEATURES)
    parser.add_argument("--videos", type=Path, default=VIDEOS)
    parser.add_argument("--splits", default="val,test")
    parser.add_argument("--profile", type=int, default=8, help="clips for the per-video breakdown")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    items = clips(args.videos, args.splits.split(","))
    student = student_of(args.teacher, args.features, CACHE / f"student-seed{args.seed}", args.seed)
    teacher = Ensemble.from_checkpoints(args.teacher)
    print(f"machine: {machine()}")
    print(f"clips: {len(items)} ({args.splits}) of {args.videos}; teacher {args.teacher}; student {student}\n")
    rows = {
        "default ensemble (3 x 65 M, random weights)": VideoClassifier(default_ensemble(teacher.extraction),
                                                                      frames="all"),
        "teacher, all frames": VideoClassifier.from_checkpoints(args.teacher, frames="all"),
        "student, all frames": VideoClassifier.from_checkpoints(student, frames="all"),
        "student, early exit": VideoClassifier.from_checkpoints(student, frames="auto"),
        "teacher, early exit": VideoClassifier.from_checkpoints(args.teacher, frames="auto"),
    }
    results = {}
    for name, classifier in rows.items():
        results[name] = library_run(classifier, items)
        print(f"{name}: {results[name]['seconds']:.1f} s", flush=True)
    reference = {r["path"]: r["predicted_class"] for r in results["teacher, all frames"]["rows"]}
    print("\n| model | parameters | videos/s | s | accuracy % | agreement with teacher % | frames embedded |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, result in results.items():
        classifier = rows[name]
        params = sum(p.numel() for m in classifier.ensemble.models for p in m.parameters())
        scored = not name.startswith("default")
        agreement = 100 * float(np.mean([r["predicted_class"] == reference[r["path"]] for r in result["rows"]]))
        print(f"| {name} | {params / 1e6:.2f} M | {result['videos_per_s']:.2f} | {result['seconds']:.1f} | "
              f"{result['accuracy']:.1f} | {agreement:.1f} | {result['frames']:.1f} |" if scored else
              f"| {name} | {params / 1e6:.2f} M | {result['videos_per_s']:.2f} | {result['seconds']:.1f} | n/a | n/a | "
              f"{result['frames']:.1f} |")
    spread = items[:: max(len(items) // args.profile, 1)][: args.profile]
    print(f"\nOne video at a time ({len(spread)} clips, classify_file, no overlap of decode and CNN), mean seconds:\n")
    print("| model | decode | CNN | model | total |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("default ensemble (3 x 65 M, random weights)", "student, all frames", "student, early exit"):
        t = profile(rows[name], spread)
        print(f"| {name} | {t['decode_s']:.3f} | {t['cnn_s']:.3f} | {t['ensemble_s']:.3f} | {t['total_s']:.3f} |")
    for classifier in rows.values():
        classifier.extractor.close()


if __name__ == "__main__":
    main()
