"""Ensemble settings fitted on validation: member weights, TTA views, temperature, collapse checks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAINING
from vidtempo import Ensemble, EnhancedTemporalModelTrainer, SuperEnhancedTemporalModel
from vidtempo.config import TrainingConfig
from vidtempo.ensemble.ensemble import EnsembleSettings
from vidtempo.ensemble.fit import collapse_reason, fit_ensemble_settings, member_weights
from vidtempo.features.store import FeatureSplit
from vidtempo.ensemble.tta import TTA_VIEWS


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


class FirstStepModel(torch.nn.Module):
    """Classifies a video by the features of the first step it is given (they are its logits), so what each
    TTA view does to a prediction is known: reverse starts at the last frame, every other view at frame 0."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.classifier = torch.nn.Identity()

    def encode(self, x, lengths):
        weights = torch.zeros(x.shape[:2])
        weights[:, 0] = 1.0
        return x[:, 0] * self.scale, weights


def _first_and_last_frame_split(first_and_last, labels, lengths):
    features = np.zeros((len(labels), max(lengths), 2), dtype=np.float32)
    for video, ((first, last), length) in enumerate(zip(first_and_last, lengths)):
        features[video, 0], features[video, length - 1] = first, last
    return FeatureSplit(features, np.array(labels), np.array(lengths), {"a": 0, "b": 1})


def _accuracy_and_nll(probs, labels):
    labels = torch.as_tensor(labels, dtype=torch.long)
    nll = -torch.log(probs.double().clamp_min(1e-12)).gather(1, labels[:, None]).mean()
    return 100 * float((probs.argmax(-1) == labels).double().mean()), float(nll)


def test_tta_views_are_kept_only_when_they_help():
    # Class-a videos read right from both ends. Class-b videos read mildly wrong at frame 0 and clearly right
    # at the last frame: adding reverse raises accuracy from 50% to 100%; speed_up and speed_down start at
    # frame 0 like the original, so after reverse they keep 100% but raise the log-loss. Short class-a videos
    # (8 frames) have no speed_up view, which must not count in their average.
    val = _first_and_last_frame_split([([2, 0], [2, 0])] * 4 + [([1, 0], [0, 4])] * 4, [0] * 4 + [1] * 4,
                                      lengths=[12, 12, 8, 8] + [12] * 4)
    ensemble = Ensemble([FirstStepModel()], val.category_mapping, precision="fp32")
    settings = fit_ensemble_settings(ensemble, val, TrainingConfig())
    assert settings.tta_views == ["original", "reverse"]
    tried = settings.report["tta_candidates"]
    assert list(tried) == ["original", "original+reverse", "original+reverse+speed_up",
                           "original+reverse+speed_down"]
    for name, score in tried.items():  # what the ensemble scores on validation with exactly those views
        ensemble.settings = EnsembleSettings(tta_views=name.split("+"))
        accuracy, nll = _accuracy_and_nll(ensemble.predict_proba(val.features, val.num_frames, tta=True), val.labels)
        assert score["accuracy"] == pytest.approx(accuracy) and score["nll"] == pytest.approx(nll, rel=1e-4), name
    assert [tried[name]["accuracy"] for name in tried] == [50.0, 100.0, 100.0, 100.0]
    every = fit_ensemble_settings(ensemble, val, TrainingConfig(choose_tta_views=False))
    assert every.tta_views == list(TTA_VIEWS)


@torch.no_grad()
def _own_softmax(model, feats, lengths):
    """A member's probabilities straight from its own forward pass."""
    return torch.softmax(model.eval()(feats, lengths), dim=-1)


def _entropy(probs):
    return -(probs.double() * probs.double().clamp_min(1e-12).log()).sum(-1)


@pytest.fixture(scope="module")
def two_members():
    """Two differently initialised (untrained) members and a batch of videos of different lengths."""
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(SuperEnhancedTemporalModel(feature_dim=16, **TINY_MODEL, num_classes=4).eval())
    torch.manual_seed(2)
    return members, torch.randn(12, 20, 16), torch.randint(1, 21, (12,))


def _ensemble(members, **settings):
    # float32, as the references these tests compute by hand
    return Ensemble(members, {name: i for i, name in enumerate("abcd")}, settings=EnsembleSettings(**settings),
                    precision="fp32")


def test_equal_weights_give_the_plain_mean_of_the_members_softmax(two_members):
    members, feats, lengths = two_members
    own = torch.stack([_own_softmax(m, feats, lengths) for m in members])
    assert not torch.allclose(own[0], own[1], atol=1e-3), "members that differ, or the mean proves nothing"
    probs = _ensemble(members).predict_proba(feats, lengths)
    torch.testing.assert_close(probs, own.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(feats)), atol=1e-5, rtol=0)
    scaled = _ensemble(members, member_weights=[2.0, 2.0]).predict_proba(feats, lengths)
    torch.testing.assert_close(scaled, probs, atol=1e-6, rtol=0)


def test_a_member_of_weight_zero_has_no_influence(two_members):
    (kept, dropped), feats, lengths = two_members
    changed = copy.deepcopy(dropped)
    with torch.no_grad():
        changed.classifier[-1].bias.add_(torch.arange(4, dtype=torch.float32) * 5)

    def probs(members, weights):
        return _ensemble(members, member_weights=weights).predict_proba(feats, lengths)

    assert not torch.allclose(probs([kept, dropped], [1.0, 1.0]), probs([kept, changed], [1.0, 1.0]), atol=1e-3)
    with_dropped = probs([kept, dropped], [1.0, 0.0])
    torch.testing.assert_close(with_dropped, probs([kept, changed], [1.0, 0.0]), atol=0, rtol=0)
    torch.testing.assert_close(with_dropped, _own_softmax(kept, feats, lengths), atol=1e-5, rtol=0)


def test_temperature_one_leaves_probabilities_and_higher_temperature_softens(two_members):
    members, feats, lengths = two_members

    def probs(temperature):
        return _ensemble(members, temperature=temperature).predict_proba(feats, lengths)

    plain = torch.stack([_own_softmax(m, feats, lengths) for m in members]).mean(0)
    torch.testing.assert_close(probs(1.0), plain, atol=1e-5, rtol=0)
    sharp, soft = probs(0.5), probs(2.0)
    for calibrated in (sharp, soft):
        torch.testing.assert_close(calibrated.sum(-1), torch.ones(len(feats)), atol=1e-5, rtol=0)
        assert torch.equal(calibrated.argmax(-1), plain.argmax(-1)), "temperature never changes the prediction"
    assert torch.all(_entropy(sharp) < _entropy(plain)) and torch.all(_entropy(plain) < _entropy(soft))


@pytest.mark.slow
def test_fitted_weights_and_temperature_apply_at_inference(calibration_ensemble):
    ensemble, val = calibration_ensemble  # big enough to calibrate on (see fit_calibration)
    settings = fit_ensemble_settings(ensemble, val, TrainingConfig(member_weighting="val_accuracy"))
    assert settings.member_weights == pytest.approx(settings.report["member_val_accuracy"])
    assert settings.temperature > 0 and settings.temperature != 1.0
    ensemble.settings = EnsembleSettings(member_weights=settings.member_weights)
    _, nll_uncalibrated = _accuracy_and_nll(ensemble.predict_proba(val.features, val.num_frames), val.labels)
    ensemble.settings = settings
    _, nll_calibrated = _accuracy_and_nll(ensemble.predict_proba(val.features, val.num_frames), val.labels)
    assert nll_calibrated < nll_uncalibrated, "the temperature fitted on validation lowers its log-loss"
    uncalibrated = fit_ensemble_settings(ensemble, val, TrainingConfig(calibrate=False))
    assert uncalibrated.temperature == 1.0


@pytest.fixture(scope="module")
def calibration_ensemble(tmp_path_factory):
    """An ensemble with a validation split big enough to calibrate on, and wrong on some of it."""
    from vidtempo.features.synthetic import write_synthetic_features

    folder = tmp_path_factory.mktemp("calibrate")
    write_synthetic_features(folder / "features", videos_per_split={"train": 64, "val": 120, "test": 16},
                             feature_dim=16, min_frames=12, max_frames=24, seed=5)
    trainer = EnhancedTemporalModelTrainer(folder / "features", folder / "ckpt", device="cpu", model_config=TINY_MODEL,
                                           training_config={**TINY_TRAINING, "collapse_retries": 0}, quiet=True)
    trainer.train_ensemble(num_models=2, num_epochs=3, results_dir=folder / "results")
    return Ensemble.from_checkpoints(folder / "ckpt"), trainer.splits["val"]


@pytest.mark.slow
def test_tta_predictions_get_the_calibration_fitted_on_tta(calibration_ensemble):
    from vidtempo.ensemble.calibration import MAX_TEMPERATURE, MIN_TEMPERATURE, apply_temperature, fit_calibration

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
