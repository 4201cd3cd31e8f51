"""Answering from the first steps of a video: a model's answers from prefixes of the coarse-to-fine order of
its steps (features/frame_order.py), and the rule that says, stage by stage, when an early answer is final.

A video is read in stages: the first ``stages[0]`` steps of the order, then the first ``stages[1]``, and so
on, then all of them. After each early stage the model's calibrated confidence (its top probability) is
compared with that stage's threshold; at or above it, the answer is final and the rest of the video is never
read. The thresholds are fitted on labelled videos the model did not learn from, so that the early answers
agree with the answer from all the steps on at least ``target_agreement`` of them, with as few steps read as
that allows: at each stage in turn, the lowest threshold that keeps the disagreements within the budget
(``(1 - target_agreement)`` of the videos, rounded down: on fewer than 200 videos, none at all).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..features.frame_order import prefix_steps
from ..features.store import FeatureSplit

# The early stages a video is read in unless told otherwise, in steps of the coarse-to-fine order.
DEFAULT_STAGES = (8, 16, 32)
# The share of videos on which the early answer must be the full answer, where the rule is fitted.
TARGET_AGREEMENT = 0.995


@dataclass
class ExitRule:
    """When an early answer is final: stage ``i`` reads ``stages[i]`` steps and stops when the calibrated
    confidence is at least ``thresholds[i]`` (None: never stops there)."""

    stages: list[int]
    thresholds: list[float | None]
    target_agreement: float
    fitted_on: str  # the videos it was fitted on, in words with their count
    agreement: float  # where it was fitted: the share of early answers equal to the full answer
    mean_steps: float  # where it was fitted: steps read per video, on average
    full_steps: float  # where it was fitted: steps per video when every step is read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExitRule":
        return cls(**{key: values[key] for key in cls.__dataclass_fields__})

    def apply(self, staged: torch.Tensor, steps: np.ndarray) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Given every stage's probabilities ``[S + 1, N, C]`` (the last: all steps) and the steps each stage
        reads ``[S + 1, N]``: the answers ``[N, C]``, the stage each video stopped at ``[N]`` and the steps
        it read ``[N]``."""
        return apply_thresholds(staged, steps, self.thresholds)


def staged_probabilities(ensemble, split: FeatureSplit, stages: Sequence[int] = DEFAULT_STAGES,
                         batch_size: int = 256) -> tuple[torch.Tensor, np.ndarray]:
    """The ensemble's calibrated plain probabilities from the first ``stages`` steps of the coarse-to-fine order
    of every video of ``split``, then from all its steps: ``[S + 1, N, C]``, and the steps each read
    ``[S + 1, N]`` (a video shorter than a stage reads all its steps there)."""
    probs, steps = [], []
    for start in range(0, split.num_videos, batch_size):
        features = split.features[start:start + batch_size]
        lengths = split.num_frames[start:start + batch_size].astype(np.int64)
        per_stage, per_stage_steps = [], []
        for stage in (*stages, None):
            rows = [np.asarray(features[i, :lengths[i]])[prefix_steps(int(lengths[i]), stage or int(lengths[i]))]
                    for i in range(len(lengths))]
            counts = np.array([len(r) for r in rows])
            padded = np.zeros((len(rows), counts.max(), features.shape[2]), dtype=np.float32)
            for i, row in enumerate(rows):
                padded[i, : len(row)] = row
            per_stage.append(ensemble.predict_proba(torch.from_numpy(padded), torch.from_numpy(counts)))
            per_stage_steps.append(counts)
        probs.append(torch.stack(per_stage))
        steps.append(np.stack(per_stage_steps))
    return torch.cat(probs, dim=1), np.concatenate(steps, axis=1)


def apply_thresholds(staged: torch.Tensor, steps: np.ndarray,
                     thresholds: Sequence[float | None]) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """See ``ExitRule.apply``."""
    num_stages, count = staged.shape[0], staged.shape[1]
    stopped = np.full(count, num_stages - 1)
    open_ = np.ones(count, dtype=bool)
    confidence = staged.max(-1).values.numpy()
    for stage, threshold in enumerate(thresholds):
        if threshold is None:
            continue
        stops = open_ & (confidence[stage] >= threshold)
        stopped[stops] = stage
        open_ &= ~stops
    answers = staged[torch.from_numpy(stopped), torch.arange(count)]
    return answers, stopped, steps[stopped, np.arange(count)]


def fit_exit_rule(staged: torch.Tensor, steps: np.ndarray, stages: Sequence[int], fitted_on: str,
                  target_agreement: float = TARGET_AGREEMENT) -> ExitRule:
    """The thresholds (see the module's docstring) for ``staged`` and ``steps`` as ``staged_probabilities``
    returns them."""
    count = staged.shape[1]
    full = staged[-1].argmax(-1).numpy()
    budget = int(np.floor((1.0 - target_agreement) * count + 1e-9))
    confidence = staged.max(-1).values.numpy()
    answers = staged.argmax(-1).numpy()
    open_ = np.ones(count, dtype=bool)
    disagreements = 0
    thresholds: list[float | None] = []
    for stage in range(len(stages)):
        # Lowering the threshold lets more videos stop here: the lowest that stays within the budget, where a
        # threshold lets every video of a confidence tie stop, or none of them.
        idx = np.flatnonzero(open_)
        order = idx[np.argsort(-confidence[stage][idx], kind="stable")]
        values = confidence[stage][order]
        wrong = disagreements + np.cumsum(answers[stage][order] != full[order])
        at_tie_end = np.append(values[:-1] > values[1:], True) if len(values) else np.zeros(0, dtype=bool)
        allowed = np.flatnonzero((wrong <= budget) & at_tie_end)
        chosen = None
        if len(allowed):
            last = allowed[-1]
            chosen, disagreements = float(values[last]), int(wrong[last])
            open_[order[: last + 1]] = False
        thresholds.append(chosen)
    answers_used, _, used_steps = apply_thresholds(staged, steps, thresholds)
    agreement = float(np.mean(answers_used.argmax(-1).numpy() == full)) if count else 1.0
    return ExitRule(stages=[int(s) for s in stages], thresholds=thresholds, target_agreement=target_agreement,
                    fitted_on=fitted_on, agreement=agreement, mean_steps=float(np.mean(used_steps)) if count else 0.0,
                    full_steps=float(np.mean(steps[-1])) if count else 0.0)
