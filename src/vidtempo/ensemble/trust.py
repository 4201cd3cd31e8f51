"""How far to trust a prediction, from signals available at inference.

Signals, per video:

- ``confidence``: the ensemble's top probability;
- ``agreement``: the share of members whose own top class is the ensemble's;
- ``distance_ratio``: how far each member's pooled representation lies from the centroid of the predicted
  class in the training set, divided by the 95th percentile of the training videos' distances to their own
  class centroid, averaged over members (1.0: as far as a typical training video's outer edge).

``score = confidence * min(1, 1 / distance_ratio)`` lies in [0, 1]: the (calibrated) confidence,
discounted when the video lies farther from its class than the training videos do. Disagreement between
members already lowers the averaged confidence; multiplying by the agreement again made the score worse
at telling correct from wrong predictions, so agreement is reported but not multiplied in (AUROC per
signal in benchmarks/RESULTS.md, from benchmarks/trust_auroc.py).

A prediction is flagged ``out_of_distribution`` when ``distance_ratio > OOD_DISTANCE_RATIO`` and
``uncertain`` when its score is below the ensemble's threshold; otherwise ``ok``. The threshold is fitted
on the validation split when an ensemble is trained (on out-of-fold predictions for a cross-fitted one):
the 5th percentile of the scores of correctly classified videos (so 95% of such predictions count as
``ok``), stored in ``ensemble.json`` beside the checkpoints. Without one, ``DEFAULT_UNCERTAIN_BELOW``
applies. Members trained before representation statistics existed contribute no distance (ratio 1.0).

A member's own training videos lie closer to its centroids than videos it never saw: it learned them. So
for a cross-fitted ensemble, whose every labelled video is unseen by one member, the spread is refitted
on those out-of-fold videos (:func:`fit_distance_spread`): the training spread is widened by the factor
that puts 95% of the correctly classified ones within ratio 1, so that "farther than 95% of the videos of
its class" is measured against unseen videos, the kind that inference sees.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

# A representation twice as far from its class as the outer edge of the training videos is unlike them.
OOD_DISTANCE_RATIO = 2.0
# Used when no threshold was fitted on validation data.
DEFAULT_UNCERTAIN_BELOW = 0.5
# Share of correct validation predictions that fall below the fitted threshold.
UNCERTAIN_QUANTILE = 0.05
DISTANCE_QUANTILE = 0.95
# Fewer (correctly classified) out-of-fold videos than this keep the training spread: their 95th percentile
# would be decided by the one or two farthest of them.
MIN_SPREAD_VIDEOS = 20


def representation_stats(pooled: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """Class centroids of training representations and the spread of distances to them."""
    pooled = pooled.float()
    centroids = torch.zeros(num_classes, pooled.shape[1])
    quantiles = torch.ones(num_classes)
    for c in range(num_classes):
        members = pooled[labels == c]
        if members.shape[0] == 0:
            continue
        centroids[c] = members.mean(0)
        distances = torch.linalg.vector_norm(members - centroids[c], dim=1)
        quantiles[c] = torch.quantile(distances, DISTANCE_QUANTILE).clamp_min(1e-6)
    return {"centroids": centroids, "distance_q95": quantiles}


def class_distance_ratios(pooled: torch.Tensor, stats: Mapping[str, torch.Tensor] | None,
                          num_classes: int) -> torch.Tensor:
    """[B, C]: for every class, the distance to its training centroid over that class's 95th-percentile
    training distance (all 1.0 without statistics)."""
    if not stats:
        return torch.ones(pooled.shape[0], num_classes)
    distances = torch.cdist(pooled.float(), stats["centroids"].float())
    return distances / stats["distance_q95"].float()[None, :]


def trust(member_probs: torch.Tensor, probs: torch.Tensor, ratios: torch.Tensor) -> dict[str, torch.Tensor]:
    """Signals and score per video. ``member_probs [M, B, C]``, ``probs [B, C]``, ``ratios [B]``."""
    confidence, predicted = probs.max(-1)
    agreement = (member_probs.argmax(-1) == predicted.unsqueeze(0)).float().mean(0)
    score = confidence * torch.clamp(1.0 / ratios, max=1.0)
    return {"score": score, "confidence": confidence, "agreement": agreement, "distance_ratio": ratios}


def fit_uncertain_threshold(scores: np.ndarray, correct: np.ndarray) -> float:
    """The score below which only UNCERTAIN_QUANTILE of correct (validation) predictions fall."""
    if not correct.any():
        return DEFAULT_UNCERTAIN_BELOW
    return float(np.quantile(scores[correct], UNCERTAIN_QUANTILE))


def fit_distance_spread(own_class_ratios: np.ndarray) -> tuple[float, str | None]:
    """How much wider than the training spread the distances of unseen videos to their class are.

    ``own_class_ratios`` ``[N]``: the distance ratio of each correctly classified out-of-fold video to its
    class, measured by the member that did not train on it (the ratio inference computes for a right
    prediction; a misclassified video lies far from its class, which the trust score should go on saying).
    Returns the factor to multiply the members' ``distance_q95`` by (the ratios' 95th percentile, so that
    95% of these videos then lie within ratio 1) and None, or 1.0 and the reason it was not fitted. One
    factor for every member and class: members trained alike learn their folds alike, and pooling keeps the
    percentile from resting on a fold's few videos of one class. Never below 1: videos as close as the
    training videos are not unusual, and a factor under 1 from a few dozen videos says more about them than
    about the members.
    """
    ratios = np.asarray(own_class_ratios, dtype=np.float64).reshape(-1)
    if len(ratios) < MIN_SPREAD_VIDEOS:
        return 1.0, (f"distance spread of the training videos kept: {len(ratios)} correctly classified "
                     f"out-of-fold videos, fewer than {MIN_SPREAD_VIDEOS}")
    return max(1.0, float(np.quantile(ratios, DISTANCE_QUANTILE))), None


def flag(score: float, ratio: float, uncertain_below: float = DEFAULT_UNCERTAIN_BELOW) -> str:
    if ratio > OOD_DISTANCE_RATIO:
        return "out_of_distribution"
    if score < uncertain_below:
        return "uncertain"
    return "ok"


def auroc_correct_vs_wrong(scores: np.ndarray, correct: np.ndarray) -> float | None:
    """AUROC of the score for telling correct from wrong predictions (None when one group is empty)."""
    from sklearn.metrics import roc_auc_score

    if correct.all() or not correct.any():
        return None
    return float(roc_auc_score(correct.astype(int), scores))


def describe(signals: Mapping[str, torch.Tensor], index: int,
             uncertain_below: float = DEFAULT_UNCERTAIN_BELOW) -> dict[str, Any]:
    """The trust part of one video's result, with the reasons for a flag other than ``ok``."""
    score, ratio = float(signals["score"][index]), float(signals["distance_ratio"][index])
    confidence, agreement = float(signals["confidence"][index]), float(signals["agreement"][index])
    verdict = flag(score, ratio, uncertain_below)
    return {
        "score": score,
        "flag": verdict,
        "reasons": [] if verdict == "ok" else flag_reasons(confidence, agreement, ratio, uncertain_below),
        "confidence": confidence,
        "member_agreement": agreement,
        "distance_ratio": ratio,
    }


def flag_reasons(confidence: float, agreement: float, ratio: float, uncertain_below: float) -> list[str]:
    """What lowered the trust score of a flagged prediction, in words."""
    reasons = []
    if ratio > OOD_DISTANCE_RATIO:
        reasons.append(f"far from the training videos ({ratio:.1f}x the distance that 95% of its class lie within)")
    elif ratio > 1.0:
        reasons.append(f"farther from its class than 95% of the training videos ({ratio:.2f}x)")
    if confidence < uncertain_below:
        reasons.append(f"low confidence after calibration ({100 * confidence:.1f}%)")
    if agreement < 1.0:
        reasons.append(f"members disagree (only {100 * agreement:.0f}% pick this class)")
    return reasons
