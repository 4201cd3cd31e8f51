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
