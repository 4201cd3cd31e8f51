"""Cross-fitting (``ensemble_strategy="cross_fit"``): the train and validation splits are pooled and cut into
k stratified folds, k being the number of members. Member i trains on the other folds and selects its epoch
on fold i, so every labelled video is seen by all members but one, and has an out-of-fold prediction from
that one, on which the ensemble's settings are fitted (fit.py).

The folds are a function of the pooled labels, k and the ensemble's seed only, so the members (trained in
one process, in several, or one at a time with ``--member``) and the assembly all cut the same folds.
Fold splits are views over the split files' rows: nothing is copied, and a streamed split stays streamed.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold

from ..errors import ConfigError
from ..features.store import FeatureSplit


class RowsView:
    """Chosen rows of several ``[N, T, D]`` feature arrays (in memory or streamed), read as one
    ``[rows, T_max, D]`` array: a row alone (``view[i]``, ``view[i, :n]``) or a block (``view[a:b]``,
    zero-padded to the longest source). ``positions`` index the sources' rows laid end to end."""

    def __init__(self, sources: Sequence[Any], positions: np.ndarray) -> None:
        self.sources = list(sources)
        self.positions = np.asarray(positions, dtype=np.int64)
        self._starts = np.cumsum([0] + [int(s.shape[0]) for s in self.sources])[:-1]
        self.shape = (len(self.positions), max(int(s.shape[1]) for s in self.sources), int(self.sources[0].shape[2]))

    @property
    def rows(self) -> list[tuple[int, int]]:
        """Each chosen row as ``(source, row in that source)``."""
        return [self._locate(i) for i in range(len(self))]

    def _locate(self, index: int) -> tuple[int, int]:
        position = int(self.positions[index])
        source = int(np.searchsorted(self._starts, position, side="right")) - 1
        return source, position - int(self._starts[source])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        index, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(index, slice):
            if rest:
                raise IndexError("RowsView: a block of rows takes no further index")
            chosen = range(*index.indices(len(self)))
            block = np.zeros((len(chosen), *self.shape[1:]), dtype=np.float32)
            for i, position in enumerate(chosen):
                source, row = self._locate(position)
                block[i, : self.sources[source].shape[1]] = self.sources[source][row]
            return block
        source, row = self._locate(int(index))
        return np.asarray(self.sources[source][(row, *rest)])


def cross_fits(strategy: str, num_models: int) -> bool:
    """Whether an ensemble of ``num_models`` with ``strategy`` is cross-fitted. A single member has no other
    member to hold a fold out for, so it learns from the train split and selects on val, as with "seeds"."""
    return strategy == "cross_fit" and num_models > 1


def subset(splits: Sequence[FeatureSplit], positions: np.ndarray) -> FeatureSplit:
    """A split of the chosen rows of ``splits`` laid end to end (they share categories and extraction
    settings)."""
    first = splits[0]
    ids = None
    if all(split.video_ids is not None for split in splits):
        pooled_ids = [video_id for split in splits for video_id in split.video_ids]
        ids = [pooled_ids[p] for p in positions]
    return dataclasses.replace(
        first, features=RowsView([s.features for s in splits], positions),
        labels=np.concatenate([s.labels for s in splits]).astype(np.int64)[positions],
        num_frames=np.concatenate([s.num_frames for s in splits]).astype(np.int64)[positions],
        video_ids=ids, path=first.path)


def fold_assignment(labels: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """``[N]``: the fold (0-based) of every pooled video; stratified by class, shuffled by ``seed``."""
    if num_folds < 2:
        raise ConfigError(f"ensemble_strategy='cross_fit' needs at least 2 members (one fold each), got {num_folds}")
    if num_folds > len(labels):
        raise ConfigError(f"cross_fit: {num_folds} folds but only {len(labels)} labelled videos")
    folds = np.empty(len(labels), dtype=np.int64)
    with warnings.catch_warnings():
        # A class with fewer videos than folds is simply absent from some folds' validation.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        cutter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed % 2**32)
        try:
            for fold, (_, held_out) in enumerate(cutter.split(np.zeros(len(labels)), labels)):
                folds[held_out] = fold
        except ValueError as exc:
            raise ConfigError(f"cross_fit: cannot cut {num_folds} stratified folds ({exc})") from None
    return folds


def cross_fit_splits(splits: Mapping[str, FeatureSplit], num_folds: int, seed: int) -> list[dict[str, FeatureSplit]]:
    """For each fold i: ``{"train": the other folds, "val": fold i, "test": the test split}``."""
    labelled = [splits["train"], splits["val"]]
    folds = fold_assignment(np.concatenate([s.labels for s in labelled]), num_folds, seed)
    return [{"train": subset(labelled, np.flatnonzero(folds != fold)),
             "val": subset(labelled, np.flatnonzero(folds == fold)),
             "test": splits["test"]} for fold in range(num_folds)]
