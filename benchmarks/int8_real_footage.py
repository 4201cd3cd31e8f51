"""int8 CNN on real footage: does ``vidtempo export --quantize int8`` answer as float32 does on real clips?

One ensemble that early_exit.py trained on the default extraction (64 frames at 256 px; seed 1, without prefix
training; run early_exit.py first) is exported twice with ``export_model``: float32, and with the backbone
quantised to int8, its activation ranges calibrated on ``--calibration`` train clips spread evenly over the
train split (every class folder). Both ONNX folders then classify every test and val clip of real_footage.py's
set, each as ``VideoClassifier.from_checkpoints(folder, runtime="onnx")`` builds it, with ONNX Runtime held to
``--threads`` intra-op threads (from_checkpoints takes the runtime's default, every core; the machine is
shared). Reported:

* how often the predicted class is the float32 one (count and %), and each one's accuracy;
* the cosine similarity of each sampled frame's CNN features, int8 against float32 (each clip decoded once);
* the CNN time per video of each (``timings_s.cnn_s`` of ``classify``), and the backbone alone on one clip's
  64 frames, the two alternating, best of ``--repeats``.

The rule it is held to: int8 becomes the default only if it agrees with float32 on at least 99.5% of videos
and is faster. With N videos one disagreement is 100/N % (over 1% for fewer than 100), so a set of this size
can fail the rule but cannot show with confidence that a model meets it: zero disagreements in N videos bounds
the disagreement rate below 3/N at 95% (the rule of three), about 3.3% for 92.

    python benchmarks/int8_real_footage.py [--calibration 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import early_exit  # noqa: E402  (benchmarks/early_exit.py: its trained runs)
import real_footage  # noqa: E402

SPLITS = ("test", "val")


def ensemble_run(cache: Path, seed: int) -> Path:
    """The checkpoints of early_exit.py's run on the default features, ``seed``, without prefix training."""
    jobs = early_exit.run_plan({"default": cache / "features-default"}, [seed], cache)
    job = next(j for j in jobs if not j["prefix"])
    checkpoints = Path(job["out"]) / "checkpoints"
    if not (Path(job["out"]) / "result.json").is_file():
        real_footage.fail(f"{job['out']}: not trained yet; run benchmarks/early_exit.py first")
    return checkpoints


def classifier(folder: Path, threads: int):
    """What ``VideoClassifier.from_checkpoints(folder, runtime="onnx")`` builds, with ``threads`` ONNX Runtime
    threads."""
    from vidtempo.features.extract import FeatureExtractor
    from vidtempo.inference import VideoClassifier
    from vidtempo.inference.onnx_model import OnnxEnsemble

    ensemble = OnnxEnsemble(folder, threads=threads)
    return VideoClassifier(ensemble, FeatureExtractor(ensemble.extraction, device="cpu", backbone=ensemble.backbone()))


def cosines(models: dict, clips: list[Path]) -> np.ndarray:
    """Per sampled frame of every clip: cosine of the int8 backbone's features with the float32 one's."""
    out = []
    decoder = models["fp32"].extractor
    for clip in clips:
        frames = decoder.decode(clip).frames
        a, b = (models[name].frame_features(frames) for name in ("fp32", "int8"))
        out.append(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))
    return np.concatenate(out)


def backbone_speed(models: dict, clip: Path, repeats: int) -> dict[str, float]:
    """Seconds for the backbone alone on one clip's sampled frames, float32 and int8 alternating, best of
    ``repeats``."""
    frames = models["fp32"].extractor.decode(clip).frames
    for model in models.values():
        model.frame_features(frames[:8])  # warm-up
    best = {name: float("inf") for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.frame_features(frames)
            best[name] = min(best[name], time.perf_counter() - start)
    return {**best, "frames": int(frames.shape[0])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=early_exit.SET)
    parser.add_argument("--cache-dir", type=Path, default=early_exit.CACHE)
    parser.add_argument("--seed", type=int, default=1, help="which of early_exit.py's runs")
    parser.add_argument("--calibration", type=int, default=32, help="train clips that calibrate the int8 ranges")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    say = functools.partial(print, flush=True)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    from vidtempo.inference.export import export_model, spread_evenly

    command = "python benchmarks/int8_real_footage.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = [f"Machine: {real_footage.machine()}; {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
              f"Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {ort.__version__}",
              f"Command: `{command}`"]
    say("\n".join(header))
    checkpoints = ensemble_run(args.cache_dir, args.seed)
    videos = args.set / "videos"
    train = sorted((videos / "train").glob("*/*.mp4"))
    calibration = spread_evenly(train, args.calibration)
    clips = [c for split in SPLITS for c in sorted((videos / split).glob("*/*.mp4"))]
    out = args.cache_dir / "int8" / f"seed{args.seed}-calibration{args.calibration}"
    folders = {"fp32": out / "fp32", "int8": out / "int8"}
    export_seconds = {}
    for name, folder in folders.items():
        if not (folder / "model.json").is_file():
            started = time.perf_counter()
            export_model(checkpoints, folder, overwrite=True, quantize="int8" if name == "int8" else None,
                         calibration_videos=calibration if name == "int8" else ())
            export_seconds[name] = time.perf_counter() - started
    say(f"exported into {out} ({', '.join(f'{k} {v:.0f} s' for k, v in export_seconds.items()) or 'kept'}); "
        f"calibration: {len(calibration)} train clips")
    models = {name: classifier(folder, args.threads) for name, folder in folders.items()}
    results = {}
    for name, model in models.items():
        started = time.perf_counter()
        results[name] = model.classify(clips)
        say(f"{name}: {len(clips)} clips in {time.perf_counter() - started:.0f} s")
    errors = [r for rs in results.values() for r in rs if "error" in r]
    if errors:
        say(f"{len(errors)} clips failed: {errors[:3]}")
    truth = [c.parent.name for c in clips]
    predicted = {name: [r.get("predicted_class") for r in rs] for name, rs in results.items()}
    same = [a == b for a, b in zip(predicted["fp32"], predicted["int8"])]
    accuracy = {name: 100.0 * np.mean([p == t for p, t in zip(ps, truth)]) for name, ps in predicted.items()}
    cnn = {name: [r["timings_s"]["cnn_s"] for r in rs if "timings_s" in r] for name, rs in results.items()}
    decode = {name: [r["timings_s"]["decode_s"] for r in rs if "timings_s" in r] for name, rs in results.items()}
    confidence_gap = [abs(a["confidence"] - b["confidence"]) for a, b in zip(results["fp32"], results["int8"])
                      if "confidence" in a and "confidence" in b]
    say("cosines: decoding each clip once, both backbones")
    cos = cosines(models, clips)
    speed = backbone_speed(models, next(c for c in clips if c.parent.name == "Gaming"), args.repeats)
    differing = [(str(c.relative_to(videos)), a, b) for c, a, b, s in zip(clips, predicted["fp32"], predicted["int8"], same)
                 if not s]
    n, agree = len(clips), int(sum(same))
    passes = agree / n >= 0.995 and np.median(cnn["int8"]) < np.median(cnn["fp32"])
    lines = [
        *header, "",
        f"Ensemble: {checkpoints} (early_exit.py, default extraction, seed {args.seed}, no prefix training). "
        f"int8 calibrated on {len(calibration)} train clips (8 frames each). ONNX Runtime {args.threads} intra-op "
        f"thread(s), one process; a shared machine: times are contended.", "",
        f"Clips: {n} ({', '.join(f'{s} {sum(1 for c in clips if c.parent.parent.name == s)}' for s in SPLITS)}).", "",
        "| backbone | accuracy % | predicted class = fp32's | CNN s / video (mean, median) | decode s / video (median) "
        "| backbone alone, one clip (best of " + f"{args.repeats}) |",
        "| --- | --- | --- | --- | --- | --- |",
        *[f"| {name} | {accuracy[name]:.1f} ({sum(p == t for p, t in zip(predicted[name], truth))}/{n}) | "
          + (f"{agree}/{n} ({100.0 * agree / n:.1f}%)" if name == "int8" else "-")
          + f" | {np.mean(cnn[name]):.3f}, {np.median(cnn[name]):.3f} | {np.median(decode[name]):.3f} | "
          f"{speed[name]:.3f} s for {speed['frames']} frames |" for name in models], "",
        f"Per-frame feature cosine int8 vs fp32 over {len(cos)} frames: mean {cos.mean():.4f}, min {cos.min():.4f}, "
        f"5th percentile {np.percentile(cos, 5):.4f}. Confidence |int8 - fp32|: mean {np.mean(confidence_gap):.4f}, "
        f"max {np.max(confidence_gap):.4f}.",
        f"Clips whose class differs: {differing or 'none'}.",
        f"CNN speed-up int8 vs fp32: {np.median(cnn['fp32']) / np.median(cnn['int8']):.2f}x (median per video), "
        f"{speed['fp32'] / speed['int8']:.2f}x (backbone alone).",
        f"Rule (agrees on >= 99.5% and faster): {'passes' if passes else 'fails'} on these {n} clips "
        f"({agree}/{n} agree; one disagreement would be {100.0 / n:.1f}%; with none, the 95% upper bound on the "
        f"disagreement rate is {300.0 / n:.1f}%, so {n} clips cannot confirm 99.5%).",
    ]
    record = {"clips": [str(c) for c in clips], "truth": truth, "predicted": predicted, "cnn_s": cnn,
              "decode_s": decode, "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
              "backbone_speed": speed, "calibration": [str(c) for c in calibration]}
    (out / "result.json").write_text(json.dumps(record, indent=1))
    (out / f"report-{datetime.datetime.now():%Y%m%d-%H%M%S}.md").write_text("\n".join(lines) + "\n")
    say("\n" + "\n".join(lines[len(header) + 1:]))


if __name__ == "__main__":
    main()
