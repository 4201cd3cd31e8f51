"""The decoding side of the pipeline: what each decoder worker process does."""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch.utils.data import Dataset

from .catalog import VideoItem
from .video import VideoDecodeError, decode_clip


class DecodeVideos(Dataset):
    """Item i: (i, uint8 frames [T, 3, S, S] or None, failure reason or None). Runs in decoder workers."""

    def __init__(self, items: Sequence[VideoItem], frames_per_video: int, image_size: int):
        self.items = list(items)
        self.frames_per_video = frames_per_video
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        path = self.items[index].path
        try:
            return index, decode_clip(path, self.frames_per_video, self.image_size).frames, None
        except VideoDecodeError as exc:
            return index, None, str(exc).removeprefix(f"{path}: ")
        except Exception as exc:  # a decoder crash on one file must not end the run
            return index, None, f"unexpected decoding error ({type(exc).__name__}: {exc})"


# How much to lower decoder processes' priority when they share the CPU with the CNN.
DECODER_NICENESS = 10


def lower_decoder_priority(worker_id: int) -> None:
    """The CNN's threads meet at a barrier after every layer, so a decoder that preempts one of them stalls
    them all. At a lower priority decoders take the cycles the CNN leaves idle (and all of them while it
    waits for the next video), which keeps the CNN at its full speed."""
    try:
        os.nice(DECODER_NICENESS)
    except OSError:
        pass
