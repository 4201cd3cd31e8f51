"""Decoding a video and sampling frames uniformly over it, with PyAV.

A sampled frame is resized so its shorter side is ``round(S * 1.15)`` and centre-cropped to ``S x S``.
Frames travel as uint8 ``[T, 3, S, S]`` (a quarter of the bytes of float32 between decoder processes);
``to_float`` turns them into 0..1 floats, and the backbone normalises with its own mean and std.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import av
import numpy as np
import torch

from ...errors import VidtempoError
from .settings import ExtractionSettings

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi")
# The seed's preprocessing: resize the shorter side to S * 1.15, then centre-crop S x S.
RESIZE_RATIO = 1.15


class VideoDecodeError(VidtempoError):
    """A video file that cannot be decoded (corrupt, empty, no video stream)."""


@dataclass
class DecodedClip:
    frames: torch.Tensor  # uint8 [T, 3, S, S]
    indices: list[int]  # which frames of the video, 0-based in decoding order
    total_frames: int  # frames the video has
    frame_rate: float | None = None  # frames per second, when the container states it


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def uniform_indices(total_frames: int, num_frames: int) -> list[int]:
    """``num_frames`` indices spread evenly from the first to the last frame; every frame when there are
    no more than ``num_frames``, so a short video never gets repeated or invented frames."""
    if total_frames <= 0:
        return []
    if total_frames <= num_frames:
        return list(range(total_frames))
    return np.linspace(0, total_frames - 1, num_frames).astype(np.int64).tolist()


def resized_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``round(image_size * 1.15)``, aspect ratio kept."""
    short = round(image_size * RESIZE_RATIO)
    if width <= height:
        return short, max(short, round(height * short / width))
    return max(short, round(width * short / height)), short


def prepare_frame(frame: av.VideoFrame, image_size: int) -> np.ndarray:
    """Resize (in FFmpeg's swscale, straight from the decoder's pixel format) and centre-crop: uint8 [S, S, 3]."""
    width, height = resized_size(frame.width, frame.height, image_size)
    rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="BILINEAR")
    top = (height - image_size) // 2
    left = (width - image_size) // 2
    return rgb[top : top + image_size, left : left + image_size]


def count_frames(path: str | os.PathLike) -> int:
    """Frames in the first video stream (see ``_count_packets``)."""
    with _open(path) as container:
        return _count_packets(container, _video_stream(container, path))


def decode_clip(path: str | os.PathLike, num_frames: int, image_size: int) -> DecodedClip:
    """Decode ``path`` and return up to ``num_frames`` uniformly spread frames, opening the file once.
    Raises VideoDecodeError."""
    return decode_selected(path, lambda total, _rate: uniform_indices(total, num_frames), image_size)


FrameSelector = Callable[[int, "float | None"], list[int]]


def decode_selected(path: str | os.PathLike, select: FrameSelector, image_size: int) -> DecodedClip:
    """Decode the frames ``select(total_frames, frame_rate)`` names (sorted, 0-based), opening the file once.
    Raises VideoDecodeError."""
    try:
        with _open(path) as container:
            stream = _video_stream(container, path)
            rate = stream.average_rate or stream.guessed_rate
            rate = float(rate) if rate else None
            total = _count_packets(container, stream)
            indices = select(total, rate)
            frames, decoded = _decode_at(container, stream, indices, image_size)
            if len(frames) < len(indices):
                # The stream promised more frames than the decoder delivered (a damaged tail): select again
                # over the frames that really exist, so the spread stays as intended.
                indices = select(decoded, rate)
                frames, _ = _decode_at(container, stream, indices, image_size)
                total = decoded
    except VideoDecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, RuntimeError, EOFError) as exc:
        raise VideoDecodeError(f"{path}: cannot decode ({_reason(exc)})") from None
    if not frames:
        raise VideoDecodeError(f"{path}: no decodable video frames")
    stacked = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    return DecodedClip(frames=stacked, indices=indices[: len(frames)], total_frames=total, frame_rate=rate)


def video_seconds(path: str | os.PathLike) -> float | None:
    """Duration of the first video stream from the container's header (no decoding); None when unknown."""
    try:
        with _open(path) as container:
            stream = _video_stream(container, path)
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            if container.duration:
                return container.duration / av.time_base
            rate = stream.average_rate or stream.guessed_rate
            return stream.frames / float(rate) if stream.frames and rate else None
    except (VidtempoError, av.FFmpegError, OSError, ValueError):
        return None


def load_video_frames(
    path: str | os.PathLike,
    num_frames: int = ExtractionSettings.frames_per_video,
    image_size: int = ExtractionSettings.image_size,
) -> torch.Tensor:
    """Uniformly sampled, resized and cropped frames as float32 ``[T, 3, S, S]`` in 0..1."""
    return to_float(decode_clip(path, num_frames, image_size).frames)


def to_float(frames: torch.Tensor) -> torch.Tensor:
    return frames.to(torch.float32).div_(255.0)


def _count_packets(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    """Frames in ``stream``, counted by demuxing packets (exact, and far cheaper than decoding; the
    container's own frame count is missing or wrong for many mkv/webm files)."""
    return sum(1 for packet in container.demux(stream) if packet.size > 0)


def _decode_at(
    container: av.container.InputContainer, stream: av.VideoStream, indices: list[int], image_size: int
) -> tuple[list[np.ndarray], int]:
    """Decode from the start up to the last wanted frame, converting only the wanted ones.
    Returns (frames, number of frames decoded)."""
    wanted = set(indices)
    last = max(indices) if indices else -1
    frames: list[np.ndarray] = []
    decoded = 0
    container.seek(0)  # back to the start (also flushes the decoder) after counting or an earlier pass
    for frame in container.decode(stream):
        if decoded in wanted:
            frames.append(prepare_frame(frame, image_size))
        decoded += 1
        if decoded > last:
            break
    return frames, decoded


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoDecodeError(f"{path}: cannot open as a video ({_reason(exc)})") from None


def _video_stream(container: av.container.InputContainer, path: str | os.PathLike) -> av.VideoStream:
    if not container.streams.video:
        raise VideoDecodeError(f"{path}: has no video stream")
    return container.streams.video[0]


def _reason(exc: BaseException) -> str:
    # FFmpeg errors carry the file name and errno in str(); their strerror is the part worth reading.
    text = (getattr(exc, "strerror", None) or str(exc)).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
