"""Ensemble settings fitted on validation: member weights, TTA views, temperature, collapse checks."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAINING
from vidtempo import Ensemble, EnhancedTemporalModelTrainer
from vidtempo.config import TrainingConfig
from vidtempo.ensemble_fit import collapse_reason, fit_ensemble_settings, member_weights
from vidtempo.tta import TTA_VIEWS


def test_member_weights():
    assert member_weights([80.0, 60.0], TrainingConfig()) == (None, [])
    weights, _ = member_weights([80.0, 60.0], TrainingConfig(member_weighting="val_accuracy"))
    assert weights == [80.0, 60.0]
    weights, notes = member_weights([80.0, 20.0, 70.0], TrainingConfig(drop_members_below=50.0))
    assert weights == [1.0, 0.0, 1.0] and "member 2 dropped" in notes[0]
    weights, notes = member_weights([10.0, 20.0], TrainingConfig(drop_members_below=50.0))
    assert weights is None and "none dropped" in notes[0]


def test_a_class_absent_from_validation_is_not_a_collapse():
    cfg = TrainingConfig()
    # Class c has no validation videos: its F1 of 0 says nothing about the member.
    metrics = {"accuracy": 80.0, "per_class_f1": {"a": 75.0, "b": 85.0, "c": 0.0},
               "per_class_support": {"a": 10, "b": 10, "c": 0}}
    assert collapse_reason(metrics, 3, cfg) is None
    # Chance is judged over the classes validation has: 2 present classes, so 52% is near chance.
    near_chance = {**metrics, "accuracy": 52.0, "per_class_f1": {"a": 50.0, "b": 54.0, "c": 0.0}}
    assert "chance (50.0%)" in collapse_reason(near_chance, 3, cfg)


def test_collapse_reason():
    cfg = TrainingConfig()
    healthy = {"accuracy": 80.0, "per_class_f1": {"a": 70.0, "b": 90.0}}
    assert collapse_reason(healthy, 2, cfg) is None
    assert "chance" in collapse_reason({"accuracy": 54.0, "per_class_f1": {"a": 60.0, "b": 40.0}}, 2, cfg)
    assert "class b" in collapse_reason({"accuracy": 80.0, "per_class_f1": {"a": 90.0, "b": 5.0}}, 2, cfg)


@pytest.fixture(scope="module")
def small_ensemble(small_features, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit")
    trainer = EnhancedTemporalModelTrainer(small_features, folder, device="cpu", model_config=TINY_MODEL,
                                           training_config={**TINY_TRAINING, "collapse_retries": 0}, quiet=True)
    trainer.train_ensemble(num_models=2, num_epochs=4, results_dir=folder / "results")
    return Ensemble.from_checkpoints(folder), trainer.splits["val"]


def test_tta_views_are_kept_only_when_they_help(small_ensemble):
    ensemble, val = small_ensemble
    settings = fit_ensemble_settings(ensemble, val, TrainingConfig(collapse_retries=0))
    assert settings.tta_views[0] == "original"
    tried = settings.report["tta_candidates"]
    chosen = tried["+".join(settings.tta_views)]
    assert chosen["accuracy"] >= tried["original"]["accuracy"]
    for name, score in tried.items():
        if name.startswith("+".join(settings.tta_views)) and name != "+".join(settings.tta_views):
            assert (score["accuracy"], -score["nll"]) <= (chosen["accuracy"], -chosen["nll"]), name
    every = fit_ensemble_settings(ensemble, val, TrainingConfig(choose_tta_views=False))
    assert every.tta_views == list(TTA_VIEWS)


def test_temperature_and_weights_apply_at_inference(small_ensemble):
    ensemble, val = small_ensemble
    settings = fit_ensemble_settings(ensemble, val, TrainingConfig(member_weighting="val_accuracy"))
    assert settings.temperature > 0 and settings.member_weights is not None
    ensemble.settings = settings
    feats, lengths = torch.from_numpy(val.features[:8]), torch.from_numpy(val.num_frames[:8])
    members = ensemble.member_probabilities(feats, lengths)
    weights = torch.tensor(settings.member_weights) / sum(settings.member_weights)
    mixed = (members * weights[:, None, None]).sum(0)
    expected = torch.softmax(torch.log(mixed.double().clamp_min(1e-12)) / settings.temperature, -1).float()
    torch.testing.assert_close(ensemble.predict_proba(feats, lengths), expected, atol=1e-5, rtol=1e-4)
    uncalibrated = fit_ensemble_settings(ensemble, val, TrainingConfig(calibrate=False))
    assert uncalibrated.temperature == 1.0


@pytest.fixture(scope="module")
def calibration_ensemble(tmp_path_factory):
    """An ensemble with a validation split big enough to calibrate on, and wrong on some of it."""
    from vidtempo.synthetic import write_synthetic_features

    folder = tmp_path_factory.mktemp("calibrate")
    write_synthetic_features(folder / "features", videos_per_split={"train": 64, "val": 120, "test": 16},
                             feature_dim=16, min_frames=12, max_frames=24, seed=5)
    trainer = EnhancedTemporalModelTrainer(folder / "features", folder / "ckpt", device="cpu", model_config=TINY_MODEL,
                                           training_config={**TINY_TRAINING, "collapse_retries": 0}, quiet=True)
    trainer.train_ensemble(num_models=2, num_epochs=3, results_dir=folder / "results")
    return Ensemble.from_checkpoints(folder / "ckpt"), trainer.splits["val"]


def test_tta_predictions_get_the_calibration_fitted_on_tta(calibration_ensemble):
    from vidtempo.calibration import MAX_TEMPERATURE, MIN_TEMPERATURE, apply_temperature, fit_calibration

    ensemble, val = calibration_ensemble
    settings = fit_ensemble_settings(ensemble, val, TrainingConfig(choose_tta_views=False))
    ensemble.settings = settings
    labels = torch.from_numpy(val.labels)
    for tta, temperature in ((False, settings.temperature), (True, settings.tta_temperature)):
        uncalibrated = ensemble.combine(ensemble.split_member_probabilities(val, tta=tta), calibrated=False)
        fitted, skipped = fit_calibration(uncalibrated, labels)
        assert skipped is None and MIN_TEMPERATURE < temperature < MAX_TEMPERATURE
        assert temperature == fitted, "each mode's temperature is fitted on that mode's probabilities"
        feats, lengths = torch.from_numpy(val.features[:8]), torch.from_numpy(val.num_frames[:8])
        # The same batch on both sides: in bf16 a video's result varies a little with the batch it is in.
        same_batch = ensemble.combine(ensemble.member_probabilities(feats, lengths, tta=tta), calibrated=False)
        torch.testing.assert_close(ensemble.predict_proba(feats, lengths, tta=tta),
                                   apply_temperature(same_batch, temperature), atol=1e-5, rtol=1e-4)
    assert settings.tta_temperature != settings.temperature
    # Each mode's threshold leaves about 5% of that mode's correct validation predictions "uncertain".
    for tta in (False, True):
        analysis = ensemble.analyze(val.features, val.num_frames, tta=tta)
        correct = analysis["probs"].argmax(-1) == labels
        below = analysis["trust"]["score"][correct] < analysis["uncertain_below"]
        assert analysis["uncertain_below"] == settings.calibration(tta)[1]
        assert float(below.float().mean()) <= 0.05 + 1.0 / int(correct.sum())
