"""Peak memory of `vidtempo extract` and `vidtempo merge-features` as the number of videos grows.

Each command runs in its own process; its peak resident memory (``ru_maxrss`` from ``os.wait4``, which
covers the process and the decoder workers it waited for) is what the table shows.

- extract: ``--counts`` folders of tiny generated videos (16x16 px noise, mpeg4, ``--frames`` + 2 frames; a
  few distinct clips copied round-robin), extracted with ``--frames`` frames at ``--image-size``, multi-scale,
  EfficientNet-Lite0. With the default 64 frames every video is stored as 73 x 1280 float32 (374 KB); on a
  small CPU the CNN then takes about a second per video, so ``--frames 8`` (9 x 1280, 45 KB) keeps 3,000
  videos to minutes while the stored features still dominate what grows.
- merge: shard files written directly through ``vidtempo.features.store.SplitWriter`` (the real file format; random
  features of 73 x 1280, ``--shards`` shards per split), then merged. Writing them with ``extract --shard``
  would give the same files and take as long as the extraction again.

    python benchmarks/extract_memory.py --counts 300 3000 --frames 8
    python benchmarks/extract_memory.py --counts 300 3000 --src /path/to/other/checkout/src   # compare

``--src`` runs the commands on another copy of the sources (the shard files are always written by this one).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

import av  # noqa: E402
import numpy as np  # noqa: E402

from vidtempo.features.extract.multiscale import multiscale_length  # noqa: E402
from vidtempo.features.extract.shards import shard_path  # noqa: E402
from vidtempo.features.sharding import shard_items  # noqa: E402
from vidtempo.features.store import MULTISCALE_SUFFIX, SplitWriter  # noqa: E402

CATEGORIES = ("Animation", "Natural_Content")
STORED_STEPS, FEATURE_DIM = 73, 1280  # 64 frames, multi-scale, EfficientNet-Lite0
DISTINCT_CLIPS = 8


def write_clip(path: Path, frames: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def build_videos(root: Path, count: int, frames: int) -> None:
    clips = root.parent / "clips"
    clips.mkdir(exist_ok=True)
    sources = [clips / f"clip{i}.mp4" for i in range(DISTINCT_CLIPS)]
    for seed, source in enumerate(sources):
        if not source.exists():
            write_clip(source, frames + 2, seed)
    for index in range(count):
        target = root / "train" / CATEGORIES[index % 2] / f"{index:06d}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[index % DISTINCT_CLIPS], target)


def build_shards(folder: Path, count: int, shards: int) -> None:
    rng = np.random.default_rng(0)
    ids = [f"train/{CATEGORIES[i % 2]}/{i:06d}.mp4" for i in range(count)]
    mapping = {name: i for i, name in enumerate(CATEGORIES)}
    attrs = {"backbone": "efficientnet_lite0", "image_size": 32, "frames_per_video": 64,
             "scales": [1.0, 0.85, 1.15], "vidtempo_version": "0.1.0"}
    for index in range(1, shards + 1):
        mine = shard_items(ids, index, shards, key=lambda video_id: video_id)
        shard_attrs = {**attrs, "shard": index, "num_shards": shards, "shard_videos": len(mine), "split_videos": count}
        path = shard_path(folder, "train", MULTISCALE_SUFFIX, index, shards)
        with SplitWriter(path, len(mine), STORED_STEPS, FEATURE_DIM, mapping, True, extra_attrs=shard_attrs) as writer:
            for video_id in mine:
                features = rng.standard_normal((STORED_STEPS, FEATURE_DIM), dtype=np.float32)
                writer.add(features, CATEGORIES.index(video_id.split("/")[1]), video_id)


def peak_rss(argv: list[str], src: Path) -> tuple[float, float]:
    """Run ``python -m vidtempo ARGV``; its peak RSS in MiB and its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "vidtempo", *argv], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"vidtempo {argv[0]} failed with exit status {process.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - started


def measure(count: int, args: argparse.Namespace, work: Path) -> dict[str, tuple[float, float]]:
    videos, features, merged = work / f"videos-{count}", work / f"features-{count}", work / f"merge-{count}"
    build_videos(videos, count, args.frames)
    extract = ["extract", "--videos-dir", str(videos), "--output-dir", str(features), "--frames", str(args.frames),
               "--image-size", str(args.image_size), "--workers", str(args.workers), "--device", "cpu", "--quiet"]
    results = {"extract": peak_rss(extract, args.src)}
    shutil.rmtree(features)
    merged.mkdir()
    build_shards(merged, count, args.shards)
    results["merge-features"] = peak_rss(["merge-features", "--features-dir", str(merged), "--quiet"], args.src)
    shutil.rmtree(merged)
    shutil.rmtree(videos)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[300, 3000], help="videos in the split")
    parser.add_argument("--frames", type=int, default=64, help="frames sampled per video by extract")
    parser.add_argument("--image-size", type=int, default=32, help="CNN input size (the smallest allowed is 32)")
    parser.add_argument("--workers", type=int, default=1, help="decoder processes of extract")
    parser.add_argument("--shards", type=int, default=4, help="shard files per split for the merge")
    parser.add_argument("--src", type=Path, default=SRC, help="the vidtempo sources to run (default this checkout)")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default a temporary one)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vidtempo-memory-", dir=args.work_dir))
    try:
        results = {count: measure(count, args, work) for count in args.counts}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    steps = {"extract": multiscale_length(args.frames), "merge-features": STORED_STEPS}
    print(f"sources {args.src}; {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")
    print(f"extract: {args.frames} frames at {args.image_size}px, {args.workers} decoder worker(s); "
          f"merge-features: {args.shards} shards")
    print(f"{'command':<16}{'videos':>8}{'stored per video':>18}{'split array MiB':>17}{'peak RSS MiB':>14}"
          f"{'seconds':>9}")
    for command in ("extract", "merge-features"):
        row_mib = steps[command] * FEATURE_DIM * 4 / 2**20
        for count in args.counts:
            rss, seconds = results[count][command]
            print(f"{command:<16}{count:>8}{f'{steps[command]} x {FEATURE_DIM}':>18}{count * row_mib:>17.0f}"
                  f"{rss:>14.0f}{seconds:>9.1f}")
        if len(args.counts) > 1:
            low, high = min(args.counts), max(args.counts)
            growth = results[high][command][0] - results[low][command][0]
            print(f"  {command}: peak RSS {growth:+.0f} MiB from {low} to {high} videos; "
                  f"the split's array {(high - low) * row_mib:+.0f} MiB")


if __name__ == "__main__":
    main()
