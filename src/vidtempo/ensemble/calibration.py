"""Temperature scaling and calibration error for the ensemble's probabilities.

Temperature scaling (Guo et al., 2017) divides a model's logits by one scalar ``T`` fitted on held-out
predictions to minimise the negative log-likelihood (the validation split's, or a cross-fitted ensemble's
out-of-fold predictions of every labelled video: see fit.py); ``T > 1`` softens over-confident
predictions, ``T < 1`` sharpens under-confident ones, and the argmax (so accuracy) never changes.

An ensemble's output is the mean of its members' softmax, which has no logits of its own. Its logarithm
plays their part: ``softmax(log(p) / T)`` is what :func:`apply_temperature` computes, and ``T = 1`` gives
``p`` back. Fit with the same log-probabilities::

    temperature = fit_temperature(log_probabilities(val_probs), val_labels)
    calibrated = apply_temperature(test_probs, temperature)

Calibration error is measured with the expected calibration error over equal-width confidence bins; it is
a fraction in ``[0, 1]`` (multiply by 100 for percent).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

# Search range of the temperature. Outside it a fit turns 55/45 votes into near certainty (or any vote into
# a coin flip), which says more about the validation split than about the model.
MIN_TEMPERATURE = 0.2
MAX_TEMPERATURE = 5.0
# Fewer videos than this (validation, or out-of-fold for a cross-fitted ensemble) give a temperature that is
# mostly noise: calibration is skipped.
MIN_CALIBRATION_VIDEOS = 50
# Probabilities are clamped here before the logarithm, so a member's exact zero cannot give -inf.
PROBABILITY_FLOOR = 1e-12
# Golden-section search stops when the log-temperature bracket is this narrow (T to ~1e-6 relative).
_LOG_T_TOLERANCE = 1e-7
# A fitted log-temperature this close to an end of the search range ran into it (the search stops within
# _LOG_T_TOLERANCE of where it ends; an inner optimum this close to a bound cannot be told from it).
_AT_BOUND_LOG_T = 1e-5
_INVERSE_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def log_probabilities(probs: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``log(probs)`` in float64, clamped at :data:`PROBABILITY_FLOOR` so every entry is finite."""
    return _cpu_tensor(probs, torch.float64).clamp_min(PROBABILITY_FLOOR).log()


def temperature_nll(scores: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(scores / temperature)``."""
    log_probs = torch.log_softmax(scores / temperature, dim=-1)
    return float(-log_probs.gather(1, labels.unsqueeze(1)).mean())


def fit_temperature(
    logits_or_log_probs: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    min_temperature: float = MIN_TEMPERATURE,
    max_temperature: float = MAX_TEMPERATURE,
) -> float:
    """The temperature in ``[min_temperature, max_temperature]`` that minimises the validation NLL.

    ``logits_or_log_probs`` is ``[N, C]``: a model's logits, or for an ensemble ``log`` of its averaged
    probabilities (see :func:`log_probabilities`); both give the same fit, since softmax ignores a per-row
    shift. The NLL is convex in ``1 / T`` and so unimodal in ``log T``: a golden-section search over
    ``log T`` finds its minimum deterministically, with no learning rate or starting point to tune.
    """
    scores, targets = _checked_scores_and_labels(logits_or_log_probs, labels)
    return _minimise_over_log_t(lambda t: temperature_nll(scores, targets, t), min_temperature, max_temperature)


def fit_temperature_to_distributions(scores: torch.Tensor | np.ndarray, target_probs: torch.Tensor | np.ndarray,
                                     min_temperature: float = MIN_TEMPERATURE,
                                     max_temperature: float = MAX_TEMPERATURE) -> float:
    """The temperature that makes ``softmax(scores / T)`` closest to ``target_probs`` (both ``[N, C]``): the
    lowest cross-entropy against them, convex in ``1 / T`` as the NLL is. A distilled student inherits its
    teacher's calibration this way where too few labelled videos are held out to fit one on labels."""
    scores = _cpu_tensor(scores, torch.float64)
    targets = _cpu_tensor(target_probs, torch.float64)

    def cross_entropy(temperature: float) -> float:
        return float(-(targets * torch.log_softmax(scores / temperature, dim=-1)).sum(-1).mean())

    return _minimise_over_log_t(cross_entropy, min_temperature, max_temperature)


def _minimise_over_log_t(objective, min_temperature: float, max_temperature: float) -> float:
    """Golden-section search of a function of T unimodal in ``log T``, over ``[min_temperature, max_temperature]``."""
    if not 0 < min_temperature < max_temperature:
        raise ValueError("need 0 < min_temperature < max_temperature")
    low, high = math.log(min_temperature), math.log(max_temperature)

    def nll_at(log_t: float) -> float:
        return objective(math.exp(log_t))

    left = high - _INVERSE_GOLDEN * (high - low)
    right = low + _INVERSE_GOLDEN * (high - low)
    nll_left, nll_right = nll_at(left), nll_at(right)
    while high - low > _LOG_T_TOLERANCE:
        if nll_left <= nll_right:
            high, right, nll_right = right, left, nll_left
            left = high - _INVERSE_GOLDEN * (high - low)
            nll_left = nll_at(left)
        else:
            low, left, nll_left = left, right, nll_right
            right = low + _INVERSE_GOLDEN * (high - low)
            nll_right = nll_at(right)
    return math.exp((low + high) / 2.0)


def fit_calibration(probs: torch.Tensor | np.ndarray, labels: Any,
                    data: str = "validation") -> tuple[float, str | None]:
    """The temperature for an ensemble's held-out probabilities, or 1.0 and the reason it was skipped.

    ``probs`` are predictions of videos the ensemble did not learn from: the validation split's, or for a
    cross-fitted ensemble the out-of-fold predictions of every labelled video (each by the member that did
    not train on it); ``data`` names them in the reasons ("validation", "out-of-fold").

    Skipped when there are too few videos to fit one, or when none is misclassified: then the likelihood
    keeps rising as ``T -> 0`` and any fit would only sharpen the outputs to the search bound. Also when
    the fit stops at either bound of the search: its likelihood was still rising there (say one near-tie
    mistake among many right answers, which pulls T to the lower bound and turns 60% into 99%), so the
    bound is where the search ended, not a temperature the data supports.
    """
    probs_np, labels_np = _checked_probs_and_labels(probs, labels)
    if len(labels_np) < MIN_CALIBRATION_VIDEOS:
        return 1.0, (f"calibration skipped (temperature 1): {len(labels_np)} {data} videos, "
                     f"fewer than {MIN_CALIBRATION_VIDEOS}")
    if (probs_np.argmax(axis=1) == labels_np).all():
        return 1.0, (f"calibration skipped (temperature 1): no {data} video is misclassified, so the "
                     f"{data} predictions cannot tell how sure the ensemble should be")
    temperature = fit_temperature(log_probabilities(probs), labels_np)
    for bound, direction in ((MIN_TEMPERATURE, "sharper"), (MAX_TEMPERATURE, "softer")):
        if abs(math.log(temperature / bound)) < _AT_BOUND_LOG_T:
            return 1.0, (f"calibration skipped (temperature 1): the fit ran to the bound of its search, "
                         f"T = {bound:g}, and {direction} outputs would fit the {data} predictions better "
                         f"still, so they cannot tell how sure the ensemble should be")
    return temperature, None


def apply_temperature(probs: torch.Tensor | np.ndarray, temperature: float) -> torch.Tensor:
    """``softmax(log(probs) / temperature)``: rows still sum to 1 and keep their argmax.

    Returns float32 for float32 input (the ensemble's dtype) and float64 otherwise.
    """
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    probs = _cpu_tensor(probs)
    out_dtype = torch.float32 if probs.dtype == torch.float32 else torch.float64
    return torch.softmax(log_probabilities(probs) / temperature, dim=-1).to(out_dtype)


def reliability_bins(
    probs: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    n_bins: int = 15,
) -> dict[str, Any]:
    """Predictions grouped by confidence (their top probability) into ``n_bins`` equal-width bins.

    Bin ``i`` holds confidences in ``(edges[i], edges[i+1]]`` (the first bin also holds 0). Returns plain
    lists, ready for JSON or plotting: ``edges`` (``n_bins + 1``), and per bin ``accuracy`` (fraction of
    correct top predictions), ``confidence`` (mean top probability) and ``count``; ``accuracy`` and
    ``confidence`` are 0 where ``count`` is 0.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    probs_np, labels_np = _checked_probs_and_labels(probs, labels)
    confidence = probs_np.max(axis=1)
    correct = (probs_np.argmax(axis=1) == labels_np).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" on the inner edges puts a confidence equal to an edge into the bin below it.
    bin_index = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(bin_index, minlength=n_bins)
    nonempty = np.maximum(count, 1)  # avoids 0/0; the sums of empty bins are 0 anyway
    accuracy = np.bincount(bin_index, weights=correct, minlength=n_bins) / nonempty
    mean_confidence = np.bincount(bin_index, weights=confidence, minlength=n_bins) / nonempty
    return {
        "edges": edges.tolist(),
        "accuracy": accuracy.tolist(),
        "confidence": mean_confidence.tolist(),
        "count": count.astype(int).tolist(),
    }


def ece_from_bins(bins: dict[str, Any]) -> float:
    """Expected calibration error of :func:`reliability_bins` output: the count-weighted mean |acc - conf|."""
    count = np.asarray(bins["count"], dtype=np.float64)
    if count.sum() == 0:
        raise ValueError("no predictions in the bins")
    gap = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))
    return float((count * gap).sum() / count.sum())


def expected_calibration_error(
    probs: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    n_bins: int = 15,
) -> float:
    """ECE in ``[0, 1]`` over ``n_bins`` equal-width confidence bins (0: perfectly calibrated)."""
    return ece_from_bins(reliability_bins(probs, labels, n_bins=n_bins))


def _cpu_tensor(values: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A detached CPU tensor of ``values`` (tensor on any device, array or list)."""
    tensor = values.detach().cpu() if torch.is_tensor(values) else torch.as_tensor(np.asarray(values))
    return tensor if dtype is None else tensor.to(dtype)


def _checked_scores_and_labels(scores: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    scores = _cpu_tensor(scores, torch.float64)
    targets = _cpu_tensor(labels, torch.long).reshape(-1)
    _check_shapes(tuple(scores.shape), targets.shape[0])
    if not torch.isfinite(scores).all():
        # A log of a zero probability: log_probabilities() clamps it.
        raise ValueError("logits or log-probabilities must be finite (use log_probabilities(probs))")
    if int(targets.min()) < 0 or int(targets.max()) >= scores.shape[1]:
        raise ValueError(f"labels must lie in 0..{scores.shape[1] - 1}")
    return scores, targets


def _checked_probs_and_labels(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    probs_np = _cpu_tensor(probs, torch.float64).numpy()
    labels_np = _cpu_tensor(labels, torch.long).numpy().reshape(-1)
    _check_shapes(probs_np.shape, labels_np.shape[0])
    return probs_np, labels_np


def _check_shapes(shape: tuple[int, ...], num_labels: int) -> None:
    if len(shape) != 2 or shape[0] == 0 or shape[1] < 2:
        raise ValueError(f"expected [N, C] scores with N >= 1 and C >= 2, got shape {shape}")
    if shape[0] != num_labels:
        raise ValueError(f"{shape[0]} rows of scores but {num_labels} labels")
