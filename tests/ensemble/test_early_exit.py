"""The early-exit rule: thresholds fitted so that early answers agree with the full answer on the target share
of videos, with as few steps read as that allows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidtempo.ensemble.early_exit import ExitRule, fit_exit_rule, staged_probabilities


def staged_from(confidences, answers, full):
    """``[S + 1, N, 2]`` probabilities whose top class and confidence are as given per early stage."""
    stages = []
    for conf, ans in zip(confidences, answers):
        probs = torch.zeros(len(conf), 2)
        probs[torch.arange(len(conf)), torch.tensor(ans)] = torch.tensor(conf)
        probs[torch.arange(len(conf)), 1 - torch.tensor(ans)] = 1 - torch.tensor(conf)
        stages.append(probs)
    last = torch.zeros(len(full), 2)
    last[torch.arange(len(full)), torch.tensor(full)] = 1.0
    return torch.stack([*stages, last])


def test_the_lowest_threshold_without_disagreement_is_chosen():
    full = [0, 0, 1, 1, 0]
    # Stage 1: the two most confident videos agree with the full answer, the third (0.8) does not.
    staged = staged_from([[0.99, 0.95, 0.8, 0.6, 0.55], [0.99, 0.99, 0.9, 0.9, 0.7]],
                         [[0, 0, 0, 1, 0], [0, 0, 1, 1, 1]], full)
    steps = np.array([[8] * 5, [16] * 5, [64] * 5])
    rule = fit_exit_rule(staged, steps, [8, 16], "test, 5 videos", target_agreement=0.995)
    assert rule.thresholds[0] == np.float32(0.95)
    # Stage 2 (videos 3, 4, 5 left): 0.9 keeps agreement (videos 3 and 4), 0.7 would not (video 5).
    assert rule.thresholds[1] == np.float32(0.9)
    assert rule.agreement == 1.0
    assert rule.mean_steps == (8 + 8 + 16 + 16 + 64) / 5
    answers, stopped, used = rule.apply(staged, steps)
    assert stopped.tolist() == [0, 0, 1, 1, 2] and used.tolist() == [8, 8, 16, 16, 64]
    assert answers.argmax(-1).tolist() == full
    assert ExitRule.from_dict(rule.to_dict()) == rule


def test_a_tie_that_holds_a_disagreement_stops_none_of_its_videos():
    full = [0, 1]
    staged = staged_from([[0.9, 0.9]], [[0, 0]], full)
    rule = fit_exit_rule(staged, np.array([[8, 8], [64, 64]]), [8], "test", target_agreement=0.995)
    assert rule.thresholds == [None] and rule.mean_steps == 64


def test_a_lower_target_spends_its_budget_on_disagreements():
    count = 400
    rng = np.random.default_rng(0)
    full = rng.integers(0, 2, count).tolist()
    answers = [f if i % 50 else 1 - f for i, f in enumerate(full)]  # 8 early answers of 400 differ
    staged = staged_from([rng.uniform(0.5, 1.0, count).tolist()], [answers], full)
    steps = np.array([[8] * count, [64] * count])
    strict = fit_exit_rule(staged, steps, [8], "test", target_agreement=1.0)
    loose = fit_exit_rule(staged, steps, [8], "test", target_agreement=0.99)
    assert strict.agreement == 1.0 and loose.agreement >= 0.99
    assert loose.mean_steps < strict.mean_steps


def test_staged_probabilities_read_prefixes_of_the_coarse_to_fine_order(small_features):
    from vidtempo.features.store import read_split, split_path
    from vidtempo.model.temporal import TemporalModel
    from vidtempo.config import ModelConfig
    from vidtempo.ensemble.ensemble import Ensemble
    from vidtempo.features.frame_order import prefix_steps

    split = read_split(split_path(small_features, "test", "_multiscale"))
    torch.manual_seed(0)
    model = TemporalModel(ModelConfig(feature_dim=split.feature_dim, num_classes=split.num_classes, hidden_dim=16,
                                      num_lstm_layers=1, num_attention_heads=2))
    ensemble = Ensemble([model], split.category_mapping, precision="fp32")
    staged, steps = staged_probabilities(ensemble, split, [4, 8], batch_size=7)
    assert staged.shape == (3, split.num_videos, split.num_classes)
    assert steps[0].tolist() == [4] * split.num_videos and steps[2].tolist() == split.num_frames.tolist()
    video = 5
    length = int(split.num_frames[video])
    alone = ensemble.predict_proba(split.features[video, :length][prefix_steps(length, 8)][None])
    assert torch.allclose(staged[1, video], alone[0], atol=1e-5)
    full = ensemble.predict_proba(split.features[video, :length][None])
    assert torch.allclose(staged[2, video], full[0], atol=1e-5)


@pytest.mark.slow
def test_an_ensemble_trained_on_prefixes_carries_its_rule_and_evaluate_reports_it(small_features, tmp_path):
    import json
    import subprocess
    import sys

    from conftest import TINY_MODEL, TINY_TRAINING
    from vidtempo import EnhancedTemporalModelTrainer
    from vidtempo.ensemble.ensemble import Ensemble

    trainer = EnhancedTemporalModelTrainer(small_features, tmp_path / "ckpt", device="cpu", model_config=TINY_MODEL,
                                           training_config={**TINY_TRAINING, "collapse_retries": 0,
                                                            "prefix_lengths": [4, 8]}, quiet=True)
    trainer.train_ensemble(num_models=2, num_epochs=4, results_dir=tmp_path / "results")
    ensemble = Ensemble.from_checkpoints(tmp_path / "ckpt")
    rule = ExitRule.from_dict(ensemble.settings.early_exit)
    assert rule.stages == [4, 8] and rule.fitted_on == "out-of-fold, 128 videos"
    assert rule.agreement >= rule.target_agreement and rule.mean_steps <= rule.full_steps
    result = subprocess.run([sys.executable, "-m", "vidtempo", "evaluate", "--features-dir", str(small_features),
                             "--checkpoints", str(tmp_path / "ckpt"), "--output", str(tmp_path / "e.json")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "early exit" in result.stdout
    early = json.loads((tmp_path / "e.json").read_text())["early_exit"]
    assert early["split"] == "test" and sum(early["stopped_at"].values()) == 32
    assert 0 <= early["agreement"] <= 100 and early["mean_steps"] <= early["full_steps"]
    inspected = subprocess.run([sys.executable, "-m", "vidtempo", "inspect", str(tmp_path / "ckpt")],
                               capture_output=True, text=True, timeout=300)
    assert inspected.returncode == 0 and "early exit" in inspected.stdout, inspected.stderr
