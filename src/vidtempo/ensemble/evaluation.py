"""Scoring an ensemble on feature splits (members and ensemble, plain and TTA, calibration) and the report.

Used by the end of ``train_ensemble`` and by ``vidtempo evaluate``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .calibration import expected_calibration_error, reliability_bins
from .early_exit import ExitRule, staged_probabilities
from .ensemble import Ensemble
from .metrics import classification_metrics
from ..features.store import FeatureSplit
from .tta import average_member_views


# The entries of evaluate_ensemble's result that are not a split's scores.
NOT_SCORES = ("calibration", "reliability", "predictions", "held_out", "early_exit")


def evaluate_ensemble(ensemble: Ensemble, splits: Mapping[str, FeatureSplit], tta: bool = True,
                      computed: Mapping[str, tuple[Sequence[str], torch.Tensor, torch.Tensor]] | None = None,
                      ) -> dict[str, Any]:
    """``{split: {"plain"|"tta": {"members": {name: metrics}, "ensemble": metrics}}}`` plus ``held_out``
    (``{split: None, or why its scores are not held out}``), for the last split, ``calibration`` (temperature, ECE before and after), ``reliability`` bins and ``predictions``
    (``split``, the calibrated plain ``probabilities`` ``[N, C]``, their top classes ``y_pred`` and the
    split's ``video_ids``, None when its file has none).

    The members run once per split, over the ensemble's TTA views: plain scores are the original view's.
    ``computed``: ``{split: (views, view_probs [M, V, N, C], applies [V, N])}`` the members already ran
    (a superset of the views needed), used instead of running them again."""
    names = ensemble.class_names
    views = tuple(ensemble.settings.tta_views) if tta else ("original",)
    evaluation: dict[str, Any] = {}
    last: dict[str, Any] = {}
    for split_name, split in splits.items():
        evaluation[split_name] = {}
        view_probs, applies = _view_probabilities(ensemble, split, views, (computed or {}).get(split_name))
        for mode in ("plain", "tta") if tta else ("plain",):
            member_probs = view_probs[:, 0] if mode == "plain" else average_member_views(view_probs, applies)
            combined = ensemble.combine(member_probs, tta=mode == "tta")
            evaluation[split_name][mode] = {
                "members": {member: classification_metrics(split.labels, p.argmax(-1).numpy(), names)
                            for member, p in zip(ensemble.names, member_probs)},
                "ensemble": classification_metrics(split.labels, combined.argmax(-1).numpy(), names),
            }
            last[mode] = (split_name, split, member_probs)
    split_name, split, _ = last["plain"]
    labels = torch.from_numpy(split.labels)
    calibration = {mode: _calibration_of_mode(ensemble, probs, labels, mode == "tta")
                   for mode, (_, _, probs) in last.items()}
    fitted = ensemble.settings.report.get("calibration", {})
    # Which splits' scores are held out: a cross-fitted ensemble learned from val too.
    evaluation["held_out"] = {name: ensemble.settings.scores_note(name) for name in splits}
    evaluation["calibration"] = {
        "calibrated_on": ensemble.settings.calibrated_on,
        **{k: v for k, v in calibration["plain"].items() if k != "bins"},
        "modes": {mode: {k: v for k, v in c.items() if k != "bins"} for mode, c in calibration.items()},
        "skipped": {mode: fitted[mode]["skipped"] for mode in calibration if fitted.get(mode, {}).get("skipped")},
        "fitted_on": ensemble.settings.fitted_on,
        "split": split_name,
    }
    evaluation["reliability"] = calibration["plain"]["bins"]
    if ensemble.settings.early_exit:
        evaluation["early_exit"] = {"split": split_name, **early_exit_scores(ensemble, split)}
    after = ensemble.combine(last["plain"][2])
    evaluation["predictions"] = {"split": split_name, "y_pred": after.argmax(-1).tolist(),
                                 "probabilities": after.detach().float().cpu().numpy(), "video_ids": split.video_ids}
    return evaluation


def early_exit_scores(ensemble: Ensemble, split: FeatureSplit) -> dict[str, Any]:
    """How the ensemble's early-exit rule does on ``split``: the share of early answers equal to the answer
    from every step, the accuracy of both, and the steps read per video on average, with and without it."""
    rule = ExitRule.from_dict(ensemble.settings.early_exit)
    staged, steps = staged_probabilities(ensemble, split, rule.stages)
    answers, stopped, used = rule.apply(staged, steps)
    early, full = answers.argmax(-1).numpy(), staged[-1].argmax(-1).numpy()
    return {"agreement": 100.0 * float(np.mean(early == full)), "accuracy": 100.0 * float(np.mean(early == split.labels)),
            "full_accuracy": 100.0 * float(np.mean(full == split.labels)), "mean_steps": float(np.mean(used)),
            "full_steps": float(np.mean(steps[-1])),
            "stopped_at": {str(stage): int(np.sum(stopped == i)) for i, stage in enumerate([*rule.stages, "all"])},
            "rule": rule.to_dict()}


def _view_probabilities(ensemble: Ensemble, split: FeatureSplit, views: tuple[str, ...],
                        computed: tuple[Sequence[str], torch.Tensor, torch.Tensor] | None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``views``' member probabilities ``[M, V, N, C]`` and ``applies [V, N]`` over ``split``: taken from
    ``computed`` when given, else run."""
    if computed is None:
        return ensemble.split_view_probabilities(split, views)
    ran, view_probs, applies = computed
    chosen = [list(ran).index(view) for view in views]
    return view_probs[:, chosen], applies[chosen]


def _calibration_of_mode(ensemble: Ensemble, member_probs: torch.Tensor, labels: torch.Tensor,
                         tta: bool) -> dict[str, Any]:
    before, after = ensemble.combine(member_probs, calibrated=False), ensemble.combine(member_probs, tta=tta)
    return {
        "temperature": ensemble.settings.calibration(tta)[0],
        "ece_before": expected_calibration_error(before, labels),
        "ece_after": expected_calibration_error(after, labels),
        "bins": {"before": reliability_bins(before, labels), "after": reliability_bins(after, labels)},
    }


def write_evaluation_report(
    folder: Path,
    evaluation: Mapping[str, Any],
    class_names: Sequence[str],
    y_true: np.ndarray,
    histories: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    best_epochs: Mapping[str, int | None] | None = None,
    notes: Sequence[str] | None = None,
    title: str = "vidtempo evaluation",
    videos_dir: str | os.PathLike | None = None,
    misses_per_class: int | None = None,
) -> Path:
    """PNG plots and ``report.md`` in ``folder``; returns the report's path.

    The report shows the ``misses_per_class`` (default ``report.MISSES_PER_CLASS``) most confident misses of
    each class of the scored split; with ``videos_dir``, the folder the split's features were extracted from
    (its ``video_ids`` are paths relative to it), each with a strip of its frames."""
    from .report import MISSES_PER_CLASS, build_report

    scores = {k: v for k, v in evaluation.items() if k not in NOT_SCORES}
    calibration = dict(evaluation["calibration"])
    calibration["split"] = calibration.get("fitted_on") or calibration["split"]
    predictions = evaluation["predictions"]
    return build_report(
        folder, scores, histories=histories, best_epochs=best_epochs, calibration=calibration, y_true=y_true,
        not_held_out={k: v for k, v in (evaluation.get("held_out") or {}).items() if v},
        y_pred=np.asarray(predictions["y_pred"]), class_names=class_names,
        reliability=evaluation["reliability"], title=title,
        notes=[f"Calibration: ECE measured on the {evaluation['calibration']['split']} split.", *(notes or [])],
        probabilities=predictions.get("probabilities"), video_ids=predictions.get("video_ids"),
        videos_dir=videos_dir, split=predictions.get("split"),
        misses_per_class=MISSES_PER_CLASS if misses_per_class is None else misses_per_class,
    )
