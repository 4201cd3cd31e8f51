"""Temperature scaling and expected calibration error on synthetic predictions with known calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidtempo.ensemble.calibration import (
    apply_temperature,
    ece_from_bins,
    expected_calibration_error,
    fit_temperature,
    log_probabilities,
    reliability_bins,
)


def calibrated_logits(num_samples: int = 4000, num_classes: int = 4, seed: int = 0):
    """Logits and labels drawn from softmax(logits): calibrated by construction."""
    generator = torch.Generator().manual_seed(seed)
    logits = 1.5 * torch.randn(num_samples, num_classes, generator=generator, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
    return logits, labels


def test_over_confident_logits_get_temperature_above_one_and_lower_ece():
    logits, labels = calibrated_logits()
    sharpened = 3.0 * logits  # the same ranking, three times too sure of itself
    temperature = fit_temperature(sharpened, labels)
    assert temperature > 1.0
    assert temperature == pytest.approx(3.0, rel=0.15)

    probs = torch.softmax(sharpened, -1)
    ece_before = expected_calibration_error(probs, labels)
    ece_after = expected_calibration_error(apply_temperature(probs, temperature), labels)
    assert ece_after < ece_before / 2


def test_under_confident_logits_get_temperature_below_one():
    logits, labels = calibrated_logits(seed=1)
    assert fit_temperature(logits / 2.0, labels) < 1.0


def test_fit_is_the_same_from_logits_and_from_log_probabilities():
    logits, labels = calibrated_logits(num_samples=500, seed=2)
    from_logits = fit_temperature(logits, labels)
    from_log_probs = fit_temperature(log_probabilities(torch.softmax(logits, -1)), labels)
    assert from_log_probs == pytest.approx(from_logits, rel=1e-4)
    assert fit_temperature(logits, labels) == from_logits  # deterministic


def test_fit_stays_inside_its_range():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    always_wrong = torch.tensor([1, 0])
    assert fit_temperature(logits, always_wrong, max_temperature=20.0) == pytest.approx(20.0, rel=1e-3)


def test_fit_refuses_non_finite_scores_and_bad_labels():
    with pytest.raises(ValueError, match="finite"):
        fit_temperature(torch.log(torch.tensor([[1.0, 0.0]])), torch.tensor([0]))
    with pytest.raises(ValueError, match="labels"):
        fit_temperature(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="labels"):
        fit_temperature(torch.zeros(2, 3), torch.tensor([0]))


def test_ece_of_calibrated_predictions_is_small():
    logits, labels = calibrated_logits(num_samples=20000, seed=3)
    assert expected_calibration_error(torch.softmax(logits, -1), labels) < 0.02


def test_ece_by_hand_on_a_tiny_example():
    probs = np.array(
        [
            [0.9, 0.1],  # confidence 0.9, correct   -> bin (0.8, 1.0]
            [0.8, 0.2],  # confidence 0.8, wrong      -> bin (0.6, 0.8] (an edge goes to the bin below)
            [0.3, 0.7],  # confidence 0.7, correct   -> bin (0.6, 0.8]
            [0.45, 0.55],  # confidence 0.55, wrong   -> bin (0.4, 0.6]
        ]
    )
    labels = np.array([0, 1, 1, 0])
    bins = reliability_bins(probs, labels, n_bins=5)
    assert bins["edges"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert bins["count"] == [0, 0, 1, 2, 1]
    assert bins["accuracy"] == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0])
    assert bins["confidence"] == pytest.approx([0.0, 0.0, 0.55, 0.75, 0.9])
    # (1 * |0 - 0.55| + 2 * |0.5 - 0.75| + 1 * |1 - 0.9|) / 4
    expected = (0.55 + 2 * 0.25 + 0.1) / 4
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(expected)
    assert ece_from_bins(bins) == pytest.approx(expected)


def test_ece_is_zero_for_confident_correct_and_one_for_confident_wrong():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, torch.tensor([0, 1])) == pytest.approx(0.0)
    assert expected_calibration_error(probs, torch.tensor([1, 0])) == pytest.approx(1.0)


def test_apply_temperature_keeps_argmax_and_rows_summing_to_one():
    generator = torch.Generator().manual_seed(4)
    probs = torch.softmax(torch.randn(64, 5, generator=generator), -1)
    probs[0] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])  # an exact zero must not give NaN
    for temperature in (0.3, 1.0, 2.5):
        scaled = apply_temperature(probs, temperature)
        assert scaled.dtype == torch.float32
        assert torch.isfinite(scaled).all()
        assert torch.equal(scaled.argmax(-1), probs.argmax(-1))
        assert scaled.sum(-1) == pytest.approx(torch.ones(64), abs=1e-5)
    assert apply_temperature(probs, 1.0)[1:] == pytest.approx(probs[1:], abs=1e-6)
    # Higher temperature: softer, so a lower top probability.
    assert (apply_temperature(probs, 2.5)[1:].max(-1).values < probs[1:].max(-1).values).all()


def test_apply_temperature_refuses_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(torch.tensor([[0.5, 0.5]]), 0.0)


def test_separable_or_small_validation_skips_calibration():
    from vidtempo.ensemble.calibration import MAX_TEMPERATURE, MIN_TEMPERATURE, fit_calibration

    assert MIN_TEMPERATURE >= 0.2 and MAX_TEMPERATURE <= 5.0
    # Members that say 55/45 and are always right: the NLL keeps falling as T -> 0, a fit would make
    # them look 99.6% sure. Calibration must be skipped and say why.
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (400,), generator=generator)
    probs = torch.full((400, 2), 0.45).scatter_(1, labels[:, None], 0.55)
    temperature, skipped = fit_calibration(probs, labels)
    assert temperature == 1.0 and "no validation video is misclassified" in skipped
    small_labels = labels[:14]
    temperature, skipped = fit_calibration(torch.softmax(torch.randn(14, 2, generator=generator), -1), small_labels)
    assert temperature == 1.0 and "14 validation videos" in skipped


def test_calibration_is_fitted_when_validation_allows():
    from vidtempo.ensemble.calibration import fit_calibration

    logits, labels = calibrated_logits(num_samples=2000, seed=3)
    temperature, skipped = fit_calibration(torch.softmax(3.0 * logits, -1), labels)
    assert skipped is None and temperature == pytest.approx(3.0, rel=0.15)


def sixty_percent_sure(num_videos: int, near_ties_lost: int = 0, confidently_wrong: int = 0):
    """Three classes, every video 60% sure of its top class. The first ``near_ties_lost`` lose a near tie
    (0.39 for the true class against 0.41); the last ``confidently_wrong`` put their 60% on a wrong class."""
    predicted = torch.arange(num_videos) % 3
    probs = torch.full((num_videos, 3), 0.2, dtype=torch.float64).scatter_(1, predicted[:, None], 0.6)
    labels = predicted.clone()
    for i in range(near_ties_lost):
        probs[i, labels[i]], probs[i, (labels[i] + 1) % 3], probs[i, (labels[i] + 2) % 3] = 0.39, 0.41, 0.20
    if confidently_wrong:
        labels[-confidently_wrong:] = (labels[-confidently_wrong:] + 1) % 3
    return probs, labels


@pytest.mark.parametrize("num_videos", [50, 60])
def test_a_fit_that_runs_to_the_lower_bound_of_its_search_is_not_applied(num_videos):
    """One near-tie mistake among 60%-sure predictions: the NLL keeps falling as T -> 0, so the search stops
    at its bound, where 60% confidence would become 99%. That temperature is the search's edge, not a fit."""
    from vidtempo.ensemble.calibration import MIN_TEMPERATURE, fit_calibration, fit_temperature, log_probabilities

    probs, labels = sixty_percent_sure(num_videos, near_ties_lost=1)
    assert fit_temperature(log_probabilities(probs), labels) == pytest.approx(MIN_TEMPERATURE, rel=1e-6)
    temperature, skipped = fit_calibration(probs, labels)
    assert temperature == 1.0
    assert skipped is not None and "bound" in skipped and f"{MIN_TEMPERATURE:g}" in skipped


def test_a_fit_that_runs_to_the_upper_bound_is_not_applied_either():
    """60%-sure predictions right only a third of the time on three classes: the NLL keeps falling as the
    outputs flatten towards uniform, and the search stops at its upper bound."""
    from vidtempo.ensemble.calibration import MAX_TEMPERATURE, fit_calibration

    temperature, skipped = fit_calibration(*sixty_percent_sure(60, confidently_wrong=40))
    assert temperature == 1.0
    assert skipped is not None and "bound" in skipped and f"{MAX_TEMPERATURE:g}" in skipped


def test_the_size_rule_and_the_bound_rule_at_the_minimum_size():
    """49 videos: too few, whatever they hold. 50: enough; a fit inside the search's range is applied, one
    that runs to its bound is not."""
    from vidtempo.ensemble.calibration import MAX_TEMPERATURE, MIN_CALIBRATION_VIDEOS, MIN_TEMPERATURE, fit_calibration

    assert MIN_CALIBRATION_VIDEOS == 50
    temperature, skipped = fit_calibration(*sixty_percent_sure(49, confidently_wrong=20))
    assert temperature == 1.0 and "49 validation videos, fewer than 50" in skipped
    # 60% sure and right 30 times in 50: about calibrated already, so a temperature near 1.
    temperature, skipped = fit_calibration(*sixty_percent_sure(50, confidently_wrong=20))
    assert skipped is None and temperature == pytest.approx(1.0, abs=0.25)
    assert MIN_TEMPERATURE < temperature < MAX_TEMPERATURE
    temperature, skipped = fit_calibration(*sixty_percent_sure(50, near_ties_lost=1))
    assert temperature == 1.0 and "bound" in skipped


def test_a_temperature_fitted_to_distributions_recovers_the_one_that_made_them():
    from vidtempo.ensemble.calibration import fit_temperature_to_distributions

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 4, generator=generator) * 3
    for temperature in (0.5, 1.0, 2.5):
        targets = torch.softmax(logits / temperature, dim=-1)
        assert abs(fit_temperature_to_distributions(logits, targets) - temperature) < 0.01
