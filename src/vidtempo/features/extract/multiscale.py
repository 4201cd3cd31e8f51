"""Multi-scale temporal features: the one place that defines them (SPEC section 3).

The seed system ran the CNN on each scale's re-sampled frames. A scale only re-indexes the sampled frames,
so here the CNN runs once per frame and each scale gathers rows of its output, which gives the same numbers
at a third of the cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

DEFAULT_SCALES = (1.0, 0.85, 1.15)
MIN_SCALED_LENGTH = 5

Array = TypeVar("Array", np.ndarray, "torch.Tensor")


def scale_indices(num_frames: int, scale: float) -> np.ndarray:
    """Rows of a ``num_frames``-step sequence that make up its version at ``scale``.

    Scale 1 keeps every step; any other scale takes ``max(int(T * s), 5)`` steps at
    ``linspace(0, T - 1, L)`` truncated to int (repeating steps when stretching).
    """
    if num_frames < 1:
        raise ValueError("a sequence needs at least one step")
    if scale == 1.0:
        return np.arange(num_frames, dtype=np.int64)
    length = max(int(num_frames * scale), MIN_SCALED_LENGTH)
    return np.linspace(0, num_frames - 1, length).astype(np.int64)


def multiscale_length(num_frames: int, scales: Sequence[float] = DEFAULT_SCALES) -> int:
    """Steps in the multi-scale sequence of a ``num_frames``-step one (73 for 64 with the default scales)."""
    return max(len(scale_indices(num_frames, s)) for s in scales)


def multiscale_sequence(features: Array, scales: Sequence[float] = DEFAULT_SCALES) -> Array:
    """Average of the sequence at each scale, each zero-padded to the longest; the padding zeros count in
    the average, as in the seed's files. ``features`` is ``[T, D]`` (numpy or torch); returns ``[T', D]``."""
    num_frames = int(features.shape[0])
    length = multiscale_length(num_frames, scales)
    if not isinstance(features, np.ndarray):  # a torch tensor (torch is imported only by callers that use it)
        import torch

        total = features.new_zeros((length, features.shape[1]))
        for s in scales:
            rows = torch.from_numpy(scale_indices(num_frames, s)).to(features.device)
            total[: len(rows)] += features[rows]
        return total / len(scales)
    total = np.zeros((length, features.shape[1]), dtype=features.dtype)
    for s in scales:
        rows = scale_indices(num_frames, s)
        total[: len(rows)] += features[rows]
    return total / np.asarray(len(scales), dtype=features.dtype)


def step_sources(num_frames: int, scales: Sequence[float] = DEFAULT_SCALES) -> list[list[int]]:
    """For each step of the multi-scale sequence of ``num_frames`` frames, the frames it averages, in the order
    of ``scales`` (a scale shorter than the step adds nothing: its padding zero)."""
    rows = [scale_indices(num_frames, s) for s in scales]
    return [[int(r[t]) for r in rows if t < len(r)] for t in range(max(len(r) for r in rows))]


def multiscale_steps(frame_rows: dict[int, np.ndarray], sources: list[list[int]], steps: Sequence[int],
                     num_scales: int) -> np.ndarray:
    """Rows ``steps`` of ``multiscale_sequence``, from the features of just the frames they need
    (``frame_rows``: frame -> ``[D]``; ``sources``: ``step_sources``), summed in the same order, so equal to
    the rows of the whole sequence."""
    dim = len(next(iter(frame_rows.values())))
    dtype = next(iter(frame_rows.values())).dtype
    out = np.zeros((len(steps), dim), dtype=dtype)
    for i, step in enumerate(steps):
        for frame in sources[step]:
            out[i] += frame_rows[frame]
    return out / np.asarray(num_scales, dtype=dtype)
