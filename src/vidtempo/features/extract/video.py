"""Decoding a video and sampling frames uniformly over it, with PyAV.

How the sampled frames are found (``ExtractionSettings.sampling``, stored with the features):

- ``exact``: the frames at ``uniform_indices`` of the decoding order, decoded from the start up to the last
  one. Exact, and its cost grows with the video's length (the only mode of earlier versions).
- ``keyframe``: for each uniform target time, the keyframe at or before it, found by seeking; only keyframes
  are decoded. A video with fewer keyframes than targets yields fewer (distinct) frames.
- ``auto``: a video of at most ``AUTO_WHOLE_FRAMES_PER_TARGET`` frames per target is decoded as ``exact``
  does (a short clip decodes faster whole than by seeking). In a longer one each target has a reach of half
  the spacing between targets either side: a keyframe within the reach is kept (one seek, one frame decoded),
  else the decoder runs on from the keyframe before the reach to its first frame. Each frame kept is closer
  to its own target than to any other, and the cost follows the number of targets and the keyframe
  interval, not the video's length.

The number of frames and the frame rate come from the container's index and header; packets are counted
(a demuxing pass over the whole file) only where the index states no frame count or one that disagrees
with the stream's duration.

A sampled frame is resized so its shorter side is ``round(S * 1.15)`` and centre-cropped to ``S x S``.
Frames travel as uint8 ``[T, 3, S, S]`` (a quarter of the bytes of float32 between decoder processes);
``to_float`` turns them into 0..1 floats, and the backbone normalises with its own mean and std.
"""

from __future__ import annotations

import bisect
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np
import torch

from ...errors import VidtempoError
from .settings import MAX_FRAME_PIXELS, SAMPLING_MODES, ExtractionSettings

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi")
# The seed's preprocessing: resize the shorter side to S * 1.15, then centre-crop S x S.
RESIZE_RATIO = 1.15
# ``auto`` sampling decodes a video whole when it has at most this many frames per sampled frame: below it,
# seeking (which decodes from a keyframe each time) costs more than decoding every frame. Measured with
# benchmarks/decode_cost.py (benchmarks/RESULTS.md).
AUTO_WHOLE_FRAMES_PER_TARGET = 8
# The container's frame count is trusted when it agrees with duration x rate to within this share.
FRAME_COUNT_TOLERANCE = 0.01
# How many of the index's last entries are compared with the file's size to find a file cut short.
INDEX_TAIL_ENTRIES = 64
# PyAV 17 and later resize with a pool of slice threads unless told otherwise. One thread: each decoder
# process already has a core, and a pool's state must never be inherited by a forked child (see
# decoder_pool).
_RESIZE_THREADS = {"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {}


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
    rgb = to_rgb(frame, width, height, interpolation="BILINEAR")
    top = (height - image_size) // 2
    left = (width - image_size) // 2
    return rgb[top : top + image_size, left : left + image_size]


def to_rgb(frame: av.VideoFrame, width: int | None = None, height: int | None = None, **options: Any
           ) -> np.ndarray:
    """``frame`` as RGB uint8 ``[H, W, 3]``, resized by FFmpeg's swscale on this thread alone. Every resize in
    vidtempo goes through here."""
    return frame.to_ndarray(width=width, height=height, format="rgb24", **options, **_RESIZE_THREADS)


def count_frames(path: str | os.PathLike) -> int:
    """Frames in the first video stream (see ``_count_packets``)."""
    with _open(path) as container:
        return _count_packets(container, _video_stream(container, path))


def decode_clip(path: str | os.PathLike, num_frames: int, image_size: int, sampling: str = "exact",
                max_seconds: float | None = None, max_pixels: int | None = MAX_FRAME_PIXELS) -> DecodedClip:
    """Decode ``path`` and return up to ``num_frames`` uniformly spread frames, found as ``sampling`` says
    (see the module docstring), opening the file once. A decode still running after ``max_seconds`` is
    stopped; a stream whose frames have more than ``max_pixels`` pixels is refused before decoding. Raises
    VideoDecodeError."""
    if sampling not in SAMPLING_MODES:
        raise VidtempoError(f"sampling must be one of {', '.join(SAMPLING_MODES)}, got {sampling!r}")
    deadline = None if max_seconds is None else time.monotonic() + max_seconds

    def uniform(total: int, _rate: float | None) -> list[int]:
        return uniform_indices(total, num_frames)

    def near_targets(container, stream, facts: StreamFacts):
        targets = uniform(facts.total_frames, facts.frame_rate)
        if not sparse_sampling_applies(sampling, facts.total_frames, len(targets)):
            return None
        return _decode_near_targets(facts, targets, image_size, keyframes_only=sampling == "keyframe",
                                    deadline=deadline)

    return decode_selected(path, uniform, image_size, deadline, near_targets if sampling != "exact" else None,
                           max_pixels=max_pixels)


def sparse_sampling_applies(sampling: str, total_frames: int, num_targets: int) -> bool:
    """Whether ``sampling`` seeks to its targets in a video of ``total_frames`` (else it decodes whole)."""
    if sampling == "exact" or num_targets < 2:
        return False
    return sampling == "keyframe" or total_frames > AUTO_WHOLE_FRAMES_PER_TARGET * num_targets


def sparse_choice(targets: list[int], keyframes: list[int], total_frames: int, keyframes_only: bool) -> list[int]:
    """The frames ``_decode_near_targets`` keeps, from the keyframes' positions: what seeking to each target
    finds, for a caller that decodes the video in one pass anyway (the timeline)."""
    tolerance = math.inf if keyframes_only else (targets[-1] - targets[0]) / (len(targets) - 1) / 2
    chosen: list[int] = []
    for target in targets:
        reach = target if keyframes_only else min(target + tolerance, total_frames - 1)
        before = [k for k in keyframes if k <= reach]
        start = before[-1] if before else 0
        last = chosen[-1] if chosen else -1
        if keyframes_only:
            index = start if start > last else None
        else:
            index = max(start, last + 1, math.ceil(target - tolerance))
        if index is not None and index <= max(reach, target) and index < total_frames:
            chosen.append(index)
    return chosen


@dataclass
class StreamFacts:
    """What the container says of its first video stream, and on demand its keyframes' positions and, for a
    variable frame rate, every frame's time stamp (a demuxing pass over the file each, no decoding).

    A frame's index is its place in presentation order. At a constant rate it follows from its time stamp
    (time x rate); at a variable rate it does not (frames of 20, 40 and 60 ms average 25 per second, yet the
    226th second-25th is not frame 226), so it is looked up among all the stream's time stamps."""

    total_frames: int
    frame_rate: float | None
    container: av.container.InputContainer
    stream: av.VideoStream
    _timestamps: list[int] | None = None

    @property
    def variable_rate(self) -> bool:
        """The stream's frames are not evenly spaced: its average rate and its base rate (the rate its time
        stamps are multiples of) disagree."""
        average, base = self.stream.average_rate, self.stream.base_rate
        return bool(average and base and abs(float(average) / float(base) - 1) > FRAME_COUNT_TOLERANCE)

    def timestamps(self) -> list[int]:
        """Every frame's presentation time stamp, in order (a demuxing pass, kept)."""
        if self._timestamps is None:
            self._timestamps = sorted(packet.pts for packet in self.container.demux(self.stream)
                                      if packet.pts is not None and packet.size > 0)
            self.container.seek(0)
        return self._timestamps

    def index_of(self, pts: int | None) -> int | None:
        """The index of the frame shown at ``pts``; None when it cannot be known (no time stamp, no rate)."""
        if pts is None or not self.frame_rate or not self.stream.time_base:
            return None
        if self.variable_rate:
            stamps = self.timestamps()
            return min(bisect.bisect_left(stamps, pts), max(len(stamps) - 1, 0))
        start = self.stream.start_time or 0
        return int(round((pts - start) * float(self.stream.time_base) * self.frame_rate))

    def pts_of(self, index: float) -> int:
        """The time stamp to seek to for frame ``index`` (at or before it)."""
        if self.variable_rate and self.timestamps():
            stamps = self.timestamps()
            return stamps[min(int(index), len(stamps) - 1)]
        start = self.stream.start_time or 0
        return start + int(index / self.frame_rate / float(self.stream.time_base))

    def keyframes(self) -> list[int]:
        if not self.frame_rate or not self.stream.time_base:
            return []
        if self.variable_rate:
            self.timestamps()  # before the keyframe pass, which must not interleave with it
        stamps = [packet.pts for packet in self.container.demux(self.stream)
                  if packet.is_keyframe and packet.pts is not None]
        self.container.seek(0)
        return sorted(index for index in map(self.index_of, stamps) if index is not None)


FrameSelector = Callable[..., list[int]]
SeekingDecoder = Callable[..., "tuple[list[np.ndarray], list[int]] | None"]


def decode_selected(path: str | os.PathLike, select: FrameSelector, image_size: int,
                    deadline: float | None = None, seek: SeekingDecoder | None = None,
                    keyframes: bool = False, max_pixels: int | None = MAX_FRAME_PIXELS) -> DecodedClip:
    """Decode the frames ``select(total_frames, frame_rate)`` names (sorted, 0-based), opening the file once,
    from the start up to the last one; with ``keyframes``, ``select`` gets a third argument, a function that
    returns the keyframes' positions (``StreamFacts.keyframes``). ``seek(container, stream, facts)`` is tried
    first when given: it returns frames and their indices, or None to decode from the start. Stops with
    VideoDecodeError when ``time.monotonic()`` passes ``deadline``, and refuses frames of more than
    ``max_pixels`` pixels before decoding one. Raises VideoDecodeError."""
    try:
        with _open(path) as container:
            stream = _video_stream(container, path)
            _check_frame_size(stream, path, max_pixels)
            rate = _frame_rate(stream)
            facts = StreamFacts(_frame_count(container, stream, rate), rate, container, stream)
            found = seek(container, stream, facts) if seek is not None else None
            if found and found[0]:
                frames, indices = found
            else:
                frames, indices = _decode_from_start(container, stream, facts, select, image_size, deadline, keyframes)
    except VideoDecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, RuntimeError, EOFError) as exc:
        raise VideoDecodeError(f"{path}: cannot decode ({_reason(exc)})") from None
    if not frames:
        raise VideoDecodeError(f"{path}: no decodable video frames")
    stacked = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    return DecodedClip(frames=stacked, indices=indices[: len(frames)], total_frames=facts.total_frames,
                       frame_rate=rate)


def _decode_from_start(container, stream, facts: StreamFacts, select: FrameSelector, image_size: int,
                       deadline: float | None, keyframes: bool) -> tuple[list[np.ndarray], list[int]]:
    def selected() -> list[int]:
        return select(facts.total_frames, facts.frame_rate, *([facts.keyframes] if keyframes else []))

    indices = selected()
    frames, decoded = _decode_at(container, stream, indices, image_size, deadline)
    if len(frames) < len(indices):
        # The stream promised more frames than the decoder delivered (a damaged tail, or an index that
        # overstates): select again over the frames that really exist, so the spread stays as intended.
        facts.total_frames = decoded
        indices = selected()
        frames, _ = _decode_at(container, stream, indices, image_size, deadline)
    return frames, indices


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
    container: av.container.InputContainer, stream: av.VideoStream, indices: list[int], image_size: int,
    deadline: float | None = None,
) -> tuple[list[np.ndarray], int]:
    """Decode from the start up to the last wanted frame, converting only the wanted ones.
    Returns (frames, number of frames decoded)."""
    wanted = set(indices)
    last = max(indices) if indices else -1
    frames: list[np.ndarray] = []
    decoded = 0
    container.seek(0)  # back to the start (also flushes the decoder) after counting or an earlier pass
    try:
        for frame in container.decode(stream):
            if decoded in wanted:
                frames.append(prepare_frame(frame, image_size))
            decoded += 1
            if decoded > last:
                break
            _check_deadline(deadline, container)
    except (av.FFmpegError, EOFError):
        if not decoded:
            raise
        # The data ends before the index says (a truncated file): the frames so far are all there is; the
        # caller samples again over them.
    return frames, decoded


def _decode_near_targets(
    facts: StreamFacts, targets: list[int], image_size: int, keyframes_only: bool, deadline: float | None,
) -> tuple[list[np.ndarray], list[int]] | None:
    """For each target frame: with ``keyframes_only``, the keyframe at or before it; else, with a reach of
    half a target spacing either side, the last keyframe before the reach ends when it lies within the reach,
    else the first frame after that keyframe that does. Frames are kept once each, in order. None when the
    stream cannot be sought in by time stamps (no rate or time base, frames without time stamps). A file
    whose data ends early gives the frames found before its end."""
    container, stream, total = facts.container, facts.stream, facts.total_frames
    if not facts.frame_rate or not stream.time_base or len(targets) < 2:
        return None
    tolerance = math.inf if keyframes_only else (targets[-1] - targets[0]) / (len(targets) - 1) / 2
    frames: list[np.ndarray] = []
    indices: list[int] = []
    for target in targets:
        reach = target if keyframes_only else min(target + tolerance, total - 1)
        container.seek(facts.pts_of(reach), stream=stream, backward=True, any_frame=False)
        try:
            for frame in container.decode(stream):
                _check_deadline(deadline, container)
                index = facts.index_of(frame.pts)
                if index is None:
                    return None
                if index > max(reach, target):
                    break  # the seek overshot: no frame near this target
                if indices and index <= indices[-1]:
                    if keyframes_only:
                        break  # the previous target's keyframe again
                    continue  # frames before the last one kept
                if keyframes_only or index >= target - tolerance:
                    frames.append(prepare_frame(frame, image_size))
                    indices.append(min(index, total - 1))
                    break
        except (av.FFmpegError, EOFError):
            if not frames:
                raise
            break  # the data ends here (a truncated file): keep what came before
    return frames, indices


def _check_deadline(deadline: float | None, container: av.container.InputContainer) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise VideoDecodeError(f"{container.name}: decoding took longer than the limit (--max-decode-seconds)")


def _check_frame_size(stream: av.VideoStream, path: str | os.PathLike, max_pixels: int | None) -> None:
    """Refuse a stream whose declared frame size exceeds ``max_pixels`` (the header's, read without decoding)."""
    width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
    if max_pixels is not None and width * height > max_pixels:
        raise VideoDecodeError(f"{path}: frames of {width} x {height} pixels exceed the limit of {max_pixels} "
                               "(--max-frame-pixels)")


def _frame_rate(stream: av.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def _frame_count(container: av.container.InputContainer, stream: av.VideoStream, rate: float | None) -> int:
    """Frames in ``stream``: the container's count where it agrees with the stream's duration x rate, else
    counted by demuxing packets (exact, and far cheaper than decoding; the count is missing or wrong for many
    mkv/webm files)."""
    declared = stream.frames or 0
    seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    agrees = rate and seconds and abs(declared - seconds * rate) <= max(1.0, FRAME_COUNT_TOLERANCE * declared)
    if declared > 0 and agrees and not _index_past_the_end(container, stream):
        return declared
    count = _count_packets(container, stream)
    container.seek(0)
    return count


def _index_past_the_end(container: av.container.InputContainer, stream: av.VideoStream) -> bool:
    """Whether the container's index places frames beyond the end of the file (a file cut short after an
    index written at its start): its frame count then promises frames that are not there. Read from the
    index (PyAV 17+ shows it), no demuxing."""
    entries = getattr(stream, "index_entries", None)
    if not entries:
        return False
    try:
        size = os.path.getsize(container.name)
    except (OSError, TypeError):
        return False
    # The last frames' data lies at the end of a file written in time order, and a cut loses the end: the
    # index's last entries settle it without walking an index of hundreds of thousands on every video.
    return max(entry.pos + entry.size for entry in entries[max(0, len(entries) - INDEX_TAIL_ENTRIES):]) > size


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
