"""Classify video files with a model folder from ``vidtempo export``, needing only numpy, PyAV and ONNX Runtime.

    pip install numpy av onnxruntime
    python examples/onnx_client.py MODEL_DIR VIDEO [VIDEO ...]

Prints one JSON object per video, named as ``vidtempo predict --json`` names them: ``video``,
``predicted_class``, ``confidence``, ``probabilities``, ``members`` and ``trust``. It samples and crops
frames as vidtempo's extraction does (``model.json`` says how: frames, crop size, sampling, scales), runs
``backbone.onnx`` on them and ``ensemble.onnx`` on the features. A video that cannot be read gets
``{"video", "error"}`` and the exit status is 1.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort

RESIZE_RATIO = 1.15  # the shorter side is resized to round(S * 1.15), then an S x S centre crop is taken
MIN_SCALED_LENGTH = 5
AUTO_WHOLE_FRAMES_PER_TARGET = 8
CNN_BATCH = 32


def load(model_dir: Path) -> tuple[dict, ort.InferenceSession, ort.InferenceSession]:
    manifest = json.loads((model_dir / "model.json").read_text())
    for name, digest in manifest["sha256"].items():
        if hashlib.sha256((model_dir / name).read_bytes()).hexdigest() != digest:
            sys.exit(f"onnx_client: {model_dir / name}: SHA-256 differs from model.json")
    if manifest.get("extraction") is None:
        sys.exit(f"onnx_client: {model_dir}: this model classifies features, not video files (no backbone.onnx)")
    providers = ["CPUExecutionProvider"]
    return (manifest, ort.InferenceSession(str(model_dir / "backbone.onnx"), providers=providers),
            ort.InferenceSession(str(model_dir / "ensemble.onnx"), providers=providers))


def uniform_indices(total: int, count: int) -> list[int]:
    if total <= count:
        return list(range(total))
    return np.linspace(0, total - 1, count).astype(np.int64).tolist()


def crop(frame: av.VideoFrame, size: int) -> np.ndarray:
    short = round(size * RESIZE_RATIO)
    if frame.width <= frame.height:
        width, height = short, max(short, round(frame.height * short / frame.width))
    else:
        width, height = max(short, round(frame.width * short / frame.height)), short
    rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="BILINEAR")
    top, left = (height - size) // 2, (width - size) // 2
    return rgb[top : top + size, left : left + size]


def frame_count(container: av.container.InputContainer, stream: av.VideoStream, rate: float | None) -> int:
    seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    if stream.frames and rate and seconds and abs(stream.frames - seconds * rate) <= max(1.0, 0.01 * stream.frames):
        return stream.frames
    count = sum(1 for packet in container.demux(stream) if packet.size > 0)
    container.seek(0)
    return count


def decode_from_start(container, stream, indices: list[int], size: int) -> list[np.ndarray]:
    wanted, frames = set(indices), []
    container.seek(0)
    for number, frame in enumerate(container.decode(stream)):
        if number in wanted:
            frames.append(crop(frame, size))
        if number >= max(indices):
            break
    return frames


def decode_near_targets(container, stream, targets: list[int], total: int, rate: float, size: int,
                        keyframes_only: bool) -> list[np.ndarray]:
    """The frame kept for each target: a keyframe within half a target spacing, else the first frame after the
    keyframe before that reach that lies within it (``keyframe`` sampling: the keyframe before the target)."""
    time_base, start = float(stream.time_base), stream.start_time or 0
    tolerance = math.inf if keyframes_only else (targets[-1] - targets[0]) / (len(targets) - 1) / 2
    frames, last = [], -1
    for target in targets:
        reach = target if keyframes_only else min(target + tolerance, total - 1)
        container.seek(start + int(reach / rate / time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            index = int(round((frame.pts - start) * time_base * rate))
            if index > max(reach, target) or (keyframes_only and index <= last):
                break
            if index > last and (keyframes_only or index >= target - tolerance):
                frames.append(crop(frame, size))
                last = index
                break
    return frames


def sample_frames(path: str, extraction: dict) -> np.ndarray:
    """uint8 ``[T, 3, S, S]``: the frames extraction samples from ``path``."""
    size, count, sampling = extraction["image_size"], extraction["frames_per_video"], extraction["sampling"]
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0) or None
        total = frame_count(container, stream, rate)
        targets = uniform_indices(total, count)
        frames = []
        seeks = sampling == "keyframe" or (sampling == "auto" and total > AUTO_WHOLE_FRAMES_PER_TARGET * len(targets))
        if seeks and len(targets) > 1 and rate and stream.time_base:
            frames = decode_near_targets(container, stream, targets, total, rate, size, sampling == "keyframe")
        if not frames:
            frames = decode_from_start(container, stream, targets, size)
    if not frames:
        raise ValueError("no decodable video frames")
    return np.stack(frames).transpose(0, 3, 1, 2).copy()


def scale_indices(num_frames: int, scale: float) -> np.ndarray:
    if scale == 1.0:
        return np.arange(num_frames)
    return np.linspace(0, num_frames - 1, max(int(num_frames * scale), MIN_SCALED_LENGTH)).astype(np.int64)


def sequence(features: np.ndarray, extraction: dict) -> np.ndarray:
    """The stored sequence: with multi-scale, the average of the sequence at each scale, each zero-padded."""
    if not extraction["multi_scale"]:
        return features
    scales = extraction["scales"]
    rows = [scale_indices(len(features), s) for s in scales]
    total = np.zeros((max(len(r) for r in rows), features.shape[1]), dtype=np.float32)
    for r in rows:
        total[: len(r)] += features[r]
    return total / np.float32(len(scales))


def classify(path: str, manifest: dict, backbone: ort.InferenceSession, ensemble: ort.InferenceSession) -> dict:
    frames = sample_frames(path, manifest["extraction"])
    features = np.concatenate([backbone.run(None, {"frames": frames[i : i + CNN_BATCH]})[0]
                               for i in range(0, len(frames), CNN_BATCH)])
    steps = sequence(features, manifest["extraction"])
    names = [o.name for o in ensemble.get_outputs()]
    out = dict(zip(names, ensemble.run(None, {"features": steps[None].astype(np.float32),
                                              "lengths": np.array([len(steps)], dtype=np.int64)})))
    classes, probs = manifest["classes"], out["probs"][0]
    best = int(probs.argmax())
    score, ratio = float(out["trust_score"][0]), float(out["distance_ratio"][0])
    trust = manifest["trust"]
    flag = ("out_of_distribution" if ratio > trust["out_of_distribution_ratio"]
            else "uncertain" if score < trust["uncertain_below"] else "ok")
    return {
        "video": path,
        "predicted_class": classes[best],
        "confidence": float(probs[best]),
        "probabilities": {name: float(p) for name, p in zip(classes, probs)},
        "members": {member: {name: float(p) for name, p in zip(classes, out["member_probs"][m, 0])}
                    for m, member in enumerate(manifest["members"])},
        "trust": {"score": score, "flag": flag, "distance_ratio": ratio},
    }


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    manifest, backbone, ensemble = load(Path(argv[0]))
    failed = 0
    for path in argv[1:]:
        try:
            result = classify(path, manifest, backbone, ensemble)
        except (av.FFmpegError, OSError, ValueError) as exc:
            result, failed = {"video": path, "error": str(exc).splitlines()[0]}, failed + 1
        print(json.dumps(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
