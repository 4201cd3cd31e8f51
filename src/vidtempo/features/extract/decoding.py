"""The decoding side of the pipeline: what each decoder worker process does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from torch.utils.data import Dataset

from .catalog import VideoItem
from .settings import ExtractionSettings
from .video import VideoDecodeError, decode_clip


class DecodeVideos(Dataset):
    """Item i: (i, uint8 frames [T, 3, S, S] or None, failure reason or None). Runs in decoder workers.

    ``decode`` (a picklable function of the path that raises VideoDecodeError) decodes something else in
    place of the sampled frames, for instance a timeline's frames."""

    def __init__(self, items: Sequence[VideoItem], settings: ExtractionSettings,
                 decode: Callable[[Path], Any] | None = None, max_decode_seconds: float | None = None):
        self.items = list(items)
        self.settings = settings
        self.decode = decode
        self.max_decode_seconds = max_decode_seconds

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        path = self.items[index].path
        try:
            if self.decode is not None:
                return index, self.decode(path), None
            settings = self.settings
            clip = decode_clip(path, settings.frames_per_video, settings.image_size, settings.sampling,
                               self.max_decode_seconds)
            return index, clip.frames, None
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
