"""A coarse-to-fine order of a video's sampled steps: every prefix of it covers the whole video evenly.

The middle step first, then the two ends, then the middles of the halves, of the quarters, and so on (the
order FrameExit, CVPR 2021, reads frames in): the first 8 steps of 64 are spread over the video as evenly as
8 steps can be, and the first 16 include them. A model trained on prefixes of this order (training draws them
as augmentation, ``TrainingConfig.prefix_lengths``) can answer from any prefix, which is what lets a video be
read in stages and stop once its answer is settled. The order is over the steps a feature file already holds:
the files do not change.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=256)
def _order(length: int) -> tuple[int, ...]:
    if length < 1:
        raise ValueError("a sequence needs at least one step")
    order: list[int] = []
    seen: set[int] = set()

    def take(position: float) -> None:
        step = int(round(position * (length - 1)))
        if step not in seen:
            seen.add(step)
            order.append(step)

    take(0.5)
    take(0.0)
    take(1.0)
    level = 2
    while len(order) < length and 2 ** (level - 1) < 2 * length:
        for odd in range(1, 2**level, 2):
            take(odd / 2**level)
        level += 1
    order.extend(step for step in range(length) if step not in seen)  # rounding can leave a step out
    return tuple(order)


def coarse_to_fine(length: int) -> np.ndarray:
    """``[length]``: every step 0..length-1 once, coarse to fine (see the module's docstring)."""
    return np.asarray(_order(int(length)), dtype=np.int64)


def prefix_steps(length: int, count: int) -> np.ndarray:
    """The first ``count`` steps of the coarse-to-fine order of ``length`` steps, in time order: the steps a
    model reads when it reads ``count`` of them."""
    return np.sort(coarse_to_fine(length)[: max(1, min(int(count), int(length)))])
