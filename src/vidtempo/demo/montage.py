"""Long labelled videos made of clips placed one after another, for measuring timelines.

Each frame is centre-cropped to a square and scaled to one size: extraction sees a centre square of every
frame anyway, so the crop keeps what a clip shows to the CNN while letting clips of any shape share a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import av
import numpy as np

from .videos import write_clip

MONTAGE_FPS = 25
MONTAGE_SIZE = 192


def square_frames(path: str | os.PathLike, size: int = MONTAGE_SIZE) -> list[np.ndarray]:
    """Every frame of a video, centre-cropped to a square and scaled to ``size`` x ``size`` RGB."""
    from PIL import Image

    from ..features.extract.video import to_rgb

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image = Image.fromarray(to_rgb(frame))
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            square = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
            frames.append(np.asarray(square))
    return frames


def concatenate_clips(clips: Sequence[str | os.PathLike], output: str | os.PathLike,
                      fps: int = MONTAGE_FPS) -> tuple[Path, list[tuple[float, float]]]:
    """Write ``clips`` one after another to ``output`` (mp4); returns it and each clip's (start, end) seconds."""
    frames: list[np.ndarray] = []
    bounds = []
    for clip in clips:
        start = len(frames)
        frames.extend(square_frames(clip))
        bounds.append((start / fps, len(frames) / fps))
    write_clip(Path(output), frames, fps=fps)
    return Path(output), bounds
