"""Trust signals: centroid statistics, the score, the fitted threshold and the flags."""

from __future__ import annotations

import numpy as np
import torch

from vidtempo.ensemble.trust import (DEFAULT_UNCERTAIN_BELOW, auroc_correct_vs_wrong, class_distance_ratios,
                            fit_uncertain_threshold,
                            flag, representation_stats, trust)


def test_representation_stats_and_distance_ratio():
    pooled = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
    stats = representation_stats(pooled, torch.tensor([0, 0, 1, 1]), num_classes=3)
    torch.testing.assert_close(stats["centroids"][:2], torch.tensor([[1.0, 0.0], [11.0, 10.0]]))
    torch.testing.assert_close(stats["distance_q95"][:2], torch.tensor([1.0, 1.0]))
    assert stats["distance_q95"][2] == 1.0, "a class without training videos keeps a neutral spread"
    ratios = class_distance_ratios(torch.tensor([[1.0, 3.0], [11.0, 10.5]]), stats, num_classes=3)
    torch.testing.assert_close(ratios[:, :2], torch.tensor([[3.0, (10.0**2 + 7.0**2) ** 0.5],
                                                            [(10.0**2 + 10.5**2) ** 0.5, 0.5]]))
    assert torch.equal(class_distance_ratios(pooled, None, num_classes=3), torch.ones(4, 3))


def test_score_combines_confidence_and_distance():
    member_probs = torch.tensor([[[0.8, 0.2], [0.6, 0.4]], [[0.6, 0.4], [0.3, 0.7]]])
    probs = member_probs.mean(0)
    signals = trust(member_probs, probs, torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(signals["agreement"], torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(signals["score"], torch.tensor([0.7, 0.55 * 0.5]))


def test_threshold_and_flags():
    scores = np.linspace(0, 1, 101)
    correct = scores > 0.3
    threshold = fit_uncertain_threshold(scores, correct)
    assert 0.3 < threshold < 0.36
    assert fit_uncertain_threshold(scores, np.zeros(101, bool)) == DEFAULT_UNCERTAIN_BELOW
    assert flag(0.9, 2.5, threshold) == "out_of_distribution"
    assert flag(0.2, 1.0, threshold) == "uncertain" and flag(0.5, 1.0, threshold) == "ok"
    assert auroc_correct_vs_wrong(scores, correct) == 1.0
    assert auroc_correct_vs_wrong(scores, np.ones(101, bool)) is None


def test_a_flagged_prediction_says_why():
    from vidtempo.ensemble.trust import describe

    member_probs = torch.tensor([[[1.0, 0.0], [0.55, 0.45], [0.9, 0.1]], [[1.0, 0.0], [0.3, 0.7], [0.9, 0.1]]])
    probs = member_probs.mean(0)
    signals = trust(member_probs, probs, torch.tensor([1.5, 1.0, 3.0]))
    far = describe(signals, 0, uncertain_below=0.8)  # fully confident, but farther out than the training videos
    assert far["flag"] == "uncertain" and far["confidence"] == 1.0
    assert len(far["reasons"]) == 1 and "farther from its class than 95% of the training videos" in far["reasons"][0]
    split = describe(signals, 1, uncertain_below=0.8)
    assert any("members disagree" in r for r in split["reasons"])
    assert any("low confidence" in r for r in split["reasons"])
    ood = describe(signals, 2, uncertain_below=0.8)
    assert ood["flag"] == "out_of_distribution" and "far from the training videos" in ood["reasons"][0]
    assert describe(signals, 0, uncertain_below=0.5)["reasons"] == []
