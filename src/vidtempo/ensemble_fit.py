"""Decisions about an ensemble as a whole, made on the validation split and stored in its manifest.

- member weights: equal (the seed's behaviour), or proportional to validation accuracy, with members under
  a threshold dropped (weight 0);
- TTA views: starting from the original view, each other view is kept only if adding it raises validation
  accuracy, or keeps it and lowers the validation log-loss (the seed applied every view even when TTA
  lowered accuracy);
- temperature scaling of the combined probabilities (calibration);
- the trust-score threshold of the "uncertain" flag.

Also the check for collapsed members: best validation accuracy within a margin of chance, or a class that
is hardly ever predicted right.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from .calibration import fit_temperature, log_probabilities
from .config import TrainingConfig
from .ensemble import Ensemble, EnsembleSettings, model_outputs
from .store import FeatureSplit
from .trust import fit_uncertain_threshold
from .tta import TTA_VIEWS


def collapse_reason(val_metrics: Mapping[str, Any], num_classes: int, cfg: TrainingConfig) -> str | None:
    """Why a member counts as collapsed, or None. ``val_metrics`` are its best epoch's validation metrics."""
    chance = 100.0 / num_classes
    accuracy = float(val_metrics["accuracy"])
    if accuracy <= chance + cfg.collapse_margin:
        return f"validation accuracy {accuracy:.1f}% is within {cfg.collapse_margin:g} points of chance ({chance:.1f}%)"
    weak = {k: v for k, v in val_metrics["per_class_f1"].items() if v < cfg.collapse_min_class_f1}
    if weak:
        name, f1 = min(weak.items(), key=lambda kv: kv[1])
        return f"validation F1 of class {name} is {f1:.1f}% (< {cfg.collapse_min_class_f1:g}%)"
    return None


def view_probabilities(ensemble: Ensemble, split: FeatureSplit, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Every member's probabilities for every TTA view: ``[M, V, N, C]`` and ``applies [V, N]``."""
    probs, applies = [], []
    for start in range(0, split.num_videos, batch_size):
        feats = torch.from_numpy(split.features[start : start + batch_size])
        lengths = torch.from_numpy(split.num_frames[start : start + batch_size])
        outputs = [model_outputs(m, feats, lengths, views=TTA_VIEWS) for m in ensemble.models]
        probs.append(torch.stack([o.view_probs for o in outputs]))
        applies.append(outputs[0].applies)
    return torch.cat(probs, dim=2), torch.cat(applies, dim=1)


def _views_average(view_probs: torch.Tensor, applies: torch.Tensor, chosen: list[int]) -> torch.Tensor:
    """``[M, V, N, C]`` -> ``[M, N, C]`` averaged over the chosen views that apply."""
    mask = applies[chosen].to(view_probs.dtype)  # [v, N]
    total = (view_probs[:, chosen] * mask[None, :, :, None]).sum(1)
    return total / mask.sum(0)[None, :, None]


def _score(probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    accuracy = float((probs.argmax(-1) == labels).float().mean())
    nll = float(-torch.log(probs.clamp_min(1e-12)).gather(1, labels[:, None]).mean())
    return accuracy, nll


def member_weights(member_accuracy: list[float], cfg: TrainingConfig) -> tuple[list[float] | None, list[str]]:
    notes = []
    weights = list(member_accuracy) if cfg.member_weighting == "val_accuracy" else [1.0] * len(member_accuracy)
    if cfg.drop_members_below is not None:
        dropped = [i for i, acc in enumerate(member_accuracy) if acc < cfg.drop_members_below]
        if len(dropped) == len(weights):
            notes.append(f"every member is below {cfg.drop_members_below}% validation accuracy; none dropped")
        else:
            for i in dropped:
                weights[i] = 0.0
                notes.append(f"member {i + 1} dropped: validation accuracy {member_accuracy[i]:.1f}% "
                             f"< {cfg.drop_members_below}%")
    if cfg.member_weighting == "equal" and all(w == 1.0 for w in weights):
        return None, notes
    return [float(w) for w in weights], notes


def fit_ensemble_settings(ensemble: Ensemble, val: FeatureSplit, cfg: TrainingConfig) -> EnsembleSettings:
    """Member weights, TTA views, temperature and trust threshold, all chosen on ``val``."""
    labels = torch.from_numpy(val.labels)
    view_probs, applies = view_probabilities(ensemble, val)
    plain = view_probs[:, 0]
    member_accuracy = [100.0 * float((p.argmax(-1) == labels).float().mean()) for p in plain]
    weights, notes = member_weights(member_accuracy, cfg)
    ensemble.settings = EnsembleSettings(member_weights=weights)

    chosen, tried = [0], {}
    best = _score(ensemble.combine(plain, calibrated=False), labels)
    tried["original"] = {"accuracy": 100 * best[0], "nll": best[1]}
    for v in range(1, len(TTA_VIEWS)):
        candidate = chosen + [v]
        score = _score(ensemble.combine(_views_average(view_probs, applies, candidate), calibrated=False), labels)
        tried["+".join(TTA_VIEWS[i] for i in candidate)] = {"accuracy": 100 * score[0], "nll": score[1]}
        if not cfg.choose_tta_views or score[0] > best[0] or (score[0] == best[0] and score[1] < best[1]):
            chosen, best = candidate, score

    temperature = 1.0
    if cfg.calibrate:
        temperature = fit_temperature(log_probabilities(ensemble.combine(plain, calibrated=False)), labels)
    ensemble.settings = EnsembleSettings(member_weights=weights, tta_views=[TTA_VIEWS[i] for i in chosen],
                                         temperature=temperature)
    scores, predicted = [], []
    for start in range(0, val.num_videos, 256):  # in blocks: a streamed split is never read whole
        analysis = ensemble.analyze(val.features[start : start + 256], val.num_frames[start : start + 256])
        scores.append(analysis["trust"]["score"].numpy())
        predicted.append(analysis["probs"].argmax(-1).numpy())
    correct = np.concatenate(predicted) == val.labels
    return EnsembleSettings(
        member_weights=weights,
        tta_views=[TTA_VIEWS[i] for i in chosen],
        temperature=temperature,
        uncertain_below=fit_uncertain_threshold(np.concatenate(scores), correct),
        fitted_on="val",
        report={"member_val_accuracy": member_accuracy, "tta_candidates": tried, "notes": notes},
    )
