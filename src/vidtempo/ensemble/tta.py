"""Test-time augmentation views of feature sequences: the one definition used by training and inference.

Each view re-indexes a video's valid frames:

- ``original``
- ``reverse``: time flipped
- ``speed_up``: for T > 10, indices ``linspace(0, T-1, T // 2)``
- ``speed_down``: for T > 5, indices ``linspace(0, T-1, int(1.5 * T))`` clamped to the sequence

A view that does not apply to a video (too short) is left out of that video's average.
"""

from __future__ import annotations

from typing import Callable

import torch

TTA_VIEWS = ("original", "reverse", "speed_up", "speed_down")


def _original(length: int) -> torch.Tensor | None:
    return torch.arange(length)


def _reverse(length: int) -> torch.Tensor | None:
    return torch.arange(length - 1, -1, -1)


def _speed_up(length: int) -> torch.Tensor | None:
    if length <= 10:
        return None
    return torch.linspace(0, length - 1, length // 2).long()


def _speed_down(length: int) -> torch.Tensor | None:
    if length <= 5:
        return None
    return torch.linspace(0, length - 1, int(1.5 * length)).long().clamp(0, length - 1)


VIEW_INDICES: dict[str, Callable[[int], torch.Tensor | None]] = {
    "original": _original,
    "reverse": _reverse,
    "speed_up": _speed_up,
    "speed_down": _speed_down,
}


def make_views(
    features: torch.Tensor, lengths: torch.Tensor, views: tuple[str, ...] = TTA_VIEWS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack every view of every video into one padded batch.

    Returns ``(view_features [V*B, T', D], view_lengths [V*B], applies [V, B] bool)``; row ``v*B + b`` is
    view ``v`` of video ``b``. Rows of views that do not apply hold the original sequence (so the batch
    stays rectangular) and are excluded by ``applies``.
    """
    lengths = lengths.to("cpu", torch.long)
    batch = features.shape[0]
    rows: list[torch.Tensor] = []
    applies = torch.zeros(len(views), batch, dtype=torch.bool)
    for v, name in enumerate(views):
        index_fn = VIEW_INDICES[name]
        for b in range(batch):
            length = int(lengths[b])
            idx = index_fn(length)
            applies[v, b] = idx is not None
            rows.append(features[b, idx if idx is not None else torch.arange(length)])
    view_lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long)
    padded = features.new_zeros((len(rows), int(view_lengths.max()), features.shape[2]))
    for i, row in enumerate(rows):
        padded[i, : row.shape[0]] = row
    return padded, view_lengths, applies


def average_views(view_probs: torch.Tensor, applies: torch.Tensor) -> torch.Tensor:
    """Mean over applicable views: ``view_probs [V*B, C]`` -> ``[B, C]``."""
    num_views, batch = applies.shape
    probs = view_probs.reshape(num_views, batch, -1)
    weights = applies.to(probs.dtype).unsqueeze(-1).to(probs.device)
    return (probs * weights).sum(0) / weights.sum(0)


def average_member_views(view_probs: torch.Tensor, applies: torch.Tensor) -> torch.Tensor:
    """Each member's mean over its applicable views: ``view_probs [M, V, N, C]`` -> ``[M, N, C]``."""
    return torch.stack([average_views(member.flatten(0, 1), applies) for member in view_probs])
