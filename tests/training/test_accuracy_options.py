"""Training options for small labelled sets: mixup / cutmix over time, weight averaging (EMA), cross-fitting."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAINING
from vidtempo import EnhancedTemporalModelTrainer
from vidtempo.cli.commands import main
from vidtempo.config import ABSENT_SETTINGS_MEANT, TrainingConfig
from vidtempo.training.data import make_loader, mix_batch
from vidtempo.errors import ConfigError
from vidtempo.ensemble.folds import cross_fit_splits, fold_assignment
from vidtempo.model.loss import FocalLoss
from vidtempo.model.temporal import SuperEnhancedTemporalModel
from vidtempo.features.store import read_splits
from vidtempo.features.synthetic import write_synthetic_features
from vidtempo.training.run import evaluate_loss


@pytest.fixture(scope="module")
def learnable_features(tmp_path_factory):
    """A generated temporal-order set large enough for the tiny model to learn in a dozen epochs."""
    folder = tmp_path_factory.mktemp("learnable")
    write_synthetic_features(folder, videos_per_split={"train": 256, "val": 64, "test": 32})
    return folder


def make_trainer(features, output, **training):
    return EnhancedTemporalModelTrainer(features, output, device="cpu", model_config=TINY_MODEL,
                                        training_config={**TINY_TRAINING, **training}, quiet=True)


def numbered_batch(lengths):
    """Video i's frame t is the vector filled with ``100 * (i + 1) + t``; padding is zero."""
    lengths = torch.tensor(lengths)
    steps = int(lengths.max())
    features = torch.zeros(len(lengths), steps, 3)
    for i, length in enumerate(lengths.tolist()):
        features[i, :length] = (100 * (i + 1) + torch.arange(length, dtype=torch.float32))[:, None]
    return features, torch.arange(len(lengths)), lengths


# ----------------------------------------------------------------------------------------- mixing
def test_no_mixing_when_both_are_off():
    features, targets, lengths = numbered_batch([5, 7])
    assert mix_batch(features, targets, lengths, 0.0, 0.0) is None


def test_cutmix_replaces_one_stretch_with_the_partners_frames_at_the_same_relative_times():
    features, targets, lengths = numbered_batch([10, 20, 7, 16, 12, 9])
    torch.manual_seed(0)
    mixed = mix_batch(features, targets, lengths, mixup_alpha=0.0, cutmix_alpha=1.0)
    assert torch.equal(mixed.lengths, lengths)
    partner = mixed.partner_targets  # targets are the video indices, so this is the permutation
    for i, length in enumerate(lengths.tolist()):
        row = mixed.features[i, :, 0]
        assert torch.all(mixed.features[i, length:] == 0), "padding stays padding"
        if int(partner[i]) == i:  # paired with itself: nothing changes, whatever the share
            assert torch.equal(row, features[i, :, 0])
            continue
        taken = [t for t in range(length) if row[t] != features[i, t, 0]]
        if taken:
            assert taken == list(range(taken[0], taken[-1] + 1)), "one contiguous stretch"
        j = int(partner[i])
        for t in taken:
            assert row[t] == features[j, (t * int(lengths[j])) // length, 0]
        assert float(mixed.own_share[i]) == pytest.approx(1 - len(taken) / length)


def test_mixup_blends_whole_videos_with_one_share():
    features, targets, lengths = numbered_batch([4, 9, 6])
    torch.manual_seed(3)
    mixed = mix_batch(features, targets, lengths, mixup_alpha=0.4, cutmix_alpha=0.0)
    lam = float(mixed.own_share[0])
    assert torch.all(mixed.own_share == lam) and 0 < lam < 1
    partner = mixed.partner_targets
    assert torch.allclose(mixed.features, lam * features + (1 - lam) * features[partner])
    assert torch.equal(mixed.lengths, torch.maximum(lengths, lengths[partner]))


def test_the_mixed_loss_weights_both_labels_by_their_shares():
    features, targets, lengths = numbered_batch([4, 9, 6])
    criterion = FocalLoss(torch.tensor([1.0, 2.0, 0.5]))
    torch.manual_seed(5)
    mixed = mix_batch(features, targets, lengths, mixup_alpha=0.0, cutmix_alpha=1.0)
    logits = torch.randn(3, 3)
    share = mixed.own_share
    expected = (share * criterion.per_sample(logits, targets)
                + (1 - share) * criterion.per_sample(logits, mixed.partner_targets)).mean()
    assert torch.allclose(mixed.loss(criterion.per_sample, logits, targets), expected)
    mixed.own_share = torch.ones(3)
    assert torch.allclose(mixed.loss(criterion.per_sample, logits, targets), criterion(logits, targets))


def test_both_on_uses_each_of_them():
    features, targets, lengths = numbered_batch([8, 8, 8, 8])
    torch.manual_seed(11)
    kinds = set()
    for _ in range(20):
        mixed = mix_batch(features, targets, lengths, mixup_alpha=0.4, cutmix_alpha=1.0)
        kinds.add("mixup" if torch.all(mixed.own_share == mixed.own_share[0]) and not torch.all(
            torch.isin(mixed.features[:, :, 0], features[:, :, 0])) else "cutmix")
    assert kinds == {"mixup", "cutmix"}


@pytest.mark.parametrize("setting", [{"mixup_alpha": -1.0}, {"weight_averaging": "swa"},
                                     {"ensemble_strategy": "folds"}, {"ema_half_life_epochs": 0}])
def test_bad_settings_are_refused(setting):
    with pytest.raises(ConfigError, match=next(iter(setting))):
        TrainingConfig(**setting)


@pytest.mark.slow
def test_mixing_runs_are_reproducible_and_differ_from_plain_runs(small_features, tmp_path):
    def weights(folder, **training):
        model, _ = make_trainer(small_features, tmp_path / folder, **training).train_single_model(
            num_epochs=2, model_name="m", results_dir=tmp_path / "r")
        return model.state_dict()

    first = weights("a", mixup_alpha=0.4, cutmix_alpha=1.0)
    torch.manual_seed(99)
    second = weights("b", mixup_alpha=0.4, cutmix_alpha=1.0)
    plain = weights("c")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], plain[k]) for k in first)


# ------------------------------------------------------------------------------ weight averaging
def _val_accuracy(trainer, state_dict):
    model = SuperEnhancedTemporalModel(feature_dim=trainer.splits['train'].feature_dim, num_classes=len(trainer.class_names), **TINY_MODEL)
    model.load_state_dict(state_dict, strict=True)  # the seed's keys and loading
    _, val_loader, _ = trainer.create_dataloaders()
    return evaluate_loss(model, val_loader, torch.nn.CrossEntropyLoss(), None, trainer.class_names)["accuracy"]


@pytest.mark.slow
def test_ema_keeps_whichever_weights_score_better_on_validation(learnable_features, tmp_path):
    trainer = make_trainer(learnable_features, tmp_path / "c", weight_averaging="ema", ema_half_life_epochs=1.0)
    _, results = trainer.train_single_model(num_epochs=12, model_name="m", results_dir=tmp_path / "r")
    best = torch.load(tmp_path / "c" / "best_m.pt", weights_only=True)
    assert best["kept_weights"] in ("raw", "averaged")
    averaged = {k.removeprefix("module."): v for k, v in best["averaged_state_dict"].items() if k != "n_averaged"}
    kept_is_average = all(torch.equal(best["model_state_dict"][k], averaged[k]) for k in averaged)
    assert kept_is_average == (best["kept_weights"] == "averaged")
    if best["kept_weights"] == "averaged":
        assert "training_state_dict" in best
    # What the history and the checkpoint report is what the kept weights score.
    assert _val_accuracy(trainer, best["model_state_dict"]) == pytest.approx(results["best_val_acc"])


@pytest.mark.slow
def test_an_average_that_lags_far_behind_is_not_kept(learnable_features, tmp_path):
    # A half-life of thousands of epochs keeps the average at the untrained weights.
    trainer = make_trainer(learnable_features, tmp_path / "c", weight_averaging="ema", ema_half_life_epochs=1e4)
    _, results = trainer.train_single_model(num_epochs=12, model_name="m", results_dir=tmp_path / "r")
    best = torch.load(tmp_path / "c" / "best_m.pt", weights_only=True)
    assert results["best_val_acc"] > 75 and best["kept_weights"] == "raw"
    assert "training_state_dict" not in best


@pytest.mark.slow
def test_ema_run_resumes_exactly(small_features, tmp_path):
    settings = dict(checkpoint_every=2, weight_averaging="ema", ema_half_life_epochs=1.0, cutmix_alpha=1.0)
    uncut_model, uncut = make_trainer(small_features, tmp_path / "a", **settings).train_single_model(
        model_name="m", num_epochs=6, results_dir=tmp_path / "ra")
    make_trainer(small_features, tmp_path / "b", **settings).train_single_model(
        model_name="m", num_epochs=3, results_dir=tmp_path / "rb")
    torch.manual_seed(1234)
    resumed_model, resumed = make_trainer(small_features, tmp_path / "b", **settings).train_single_model(
        model_name="m", num_epochs=6, results_dir=tmp_path / "rb", resume_from=tmp_path / "b" / "m_checkpoint_epoch_2.pt")
    assert resumed["history"]["val_acc"] == uncut["history"]["val_acc"]
    assert resumed["history"]["val_loss"] == uncut["history"]["val_loss"]
    for key, value in uncut_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key
    last_a = torch.load(tmp_path / "a" / "m_checkpoint_epoch_4.pt", weights_only=True)
    last_b = torch.load(tmp_path / "b" / "m_checkpoint_epoch_4.pt", weights_only=True)
    for key, value in last_a["averaged_state_dict"].items():
        assert torch.equal(last_b["averaged_state_dict"][key], value), key


def test_an_old_checkpoint_resumes_with_the_recipe_it_was_trained_with(small_features, tmp_path):
    trainer = make_trainer(small_features, tmp_path / "c")
    saved = {k: v for k, v in dataclasses.asdict(trainer.training_config).items() if k not in ABSENT_SETTINGS_MEANT}
    resumed = trainer._resumed_config({"training_config": saved}, "old.pt", {})
    assert {k: getattr(resumed, k) for k in ABSENT_SETTINGS_MEANT} == ABSENT_SETTINGS_MEANT
    assert ABSENT_SETTINGS_MEANT == {"ensemble_strategy": "seeds", "weight_averaging": "none", "mixup_alpha": 0.0,
                                     "cutmix_alpha": 0.0, "prefix_lengths": None}


# -------------------------------------------------------------------------------------- cross-fitting
def test_folds_are_stratified_disjoint_and_fixed_by_the_seed():
    labels = np.repeat(np.arange(3), [30, 12, 6])
    folds = fold_assignment(labels, 3, seed=7)
    assert np.array_equal(folds, fold_assignment(labels, 3, seed=7))
    assert not np.array_equal(folds, fold_assignment(labels, 3, seed=8))
    for fold in range(3):
        assert np.array_equal(np.bincount(labels[folds == fold], minlength=3), [10, 4, 2])
    with pytest.raises(ConfigError, match="at least 2 members"):
        fold_assignment(labels, 1, seed=7)


def test_fold_splits_pool_train_and_val_without_copying(small_features):
    splits = read_splits(small_features, "_multiscale")
    folds = cross_fit_splits(splits, 3, seed=5)
    pooled = [(s, r) for s, name in enumerate(("train", "val")) for r in range(splits[name].num_videos)]
    seen = []
    for fold in folds:
        train_rows, val_rows = fold["train"].features.rows, fold["val"].features.rows
        assert not set(train_rows) & set(val_rows)
        assert sorted(train_rows + val_rows) == pooled
        assert fold["test"] is splits["test"]
        seen += val_rows
    assert sorted(seen) == pooled, "every labelled video is held out exactly once"
    val = folds[1]["val"]
    sources = [splits["train"], splits["val"]]
    for i in (0, len(val.labels) - 1):
        source, row = val.features.rows[i]
        length = int(val.num_frames[i])
        assert val.labels[i] == sources[source].labels[row] and length == sources[source].num_frames[row]
        assert np.array_equal(val.features[i, :length], sources[source].features[row, :length])
    block = val.features[0:5]
    assert block.shape == (5, val.max_frames, val.feature_dim)
    assert np.array_equal(block[2, : val.num_frames[2]], val.features[2, : val.num_frames[2]])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*collapsed:RuntimeWarning")
def test_a_cross_fitted_ensemble_selects_on_each_fold_and_fits_on_out_of_fold_predictions(small_features, tmp_path):
    trainer = make_trainer(small_features, tmp_path / "c", ensemble_strategy="cross_fit", collapse_retries=0)
    ensemble, results = trainer.train_ensemble(num_models=3, num_epochs=3, results_dir=tmp_path / "r")
    folds = cross_fit_splits(trainer.splits, 3, trainer.training_config.seed)
    for i, (member, fold) in enumerate(zip(ensemble.models, folds)):
        saved = json.loads((tmp_path / "r" / f"ensemble_model_{i + 1}_results.json").read_text())
        assert saved["cross_fit"] == {"folds": 3, "seed": trainer.training_config.seed}
        # The epoch was selected on the member's own fold: its best validation accuracy is measured there.
        val_loader = make_loader(fold["val"], 64, num_workers=0)
        accuracy = evaluate_loss(member, val_loader, torch.nn.CrossEntropyLoss(), None, trainer.class_names)["accuracy"]
        assert accuracy == pytest.approx(saved["best_val_acc"])
    manifest = json.loads((tmp_path / "c" / "ensemble.json").read_text())["settings"]
    assert manifest["fitted_on"] == "out_of_fold"
    assert 0 <= manifest["report"]["out_of_fold_accuracy"] <= 100
    assert set(results["evaluation"]) == {"test"}, "validation videos were learned from; only test is scored"
    # Scoring it on validation says that those scores are not held-out ones.
    with pytest.warns(RuntimeWarning, match="cross-fitted: its members learned from the val videos"):
        assert main(["evaluate", "--features-dir", str(small_features), "--checkpoints", str(tmp_path / "c"),
                     "--split", "val", "--output", str(tmp_path / "val.json")]) == 0
    # Assembling the same members as a seed ensemble is refused.
    seeds = make_trainer(small_features, tmp_path / "c", ensemble_strategy="seeds")
    with pytest.raises(ConfigError, match="ensemble_strategy='cross_fit'"):
        seeds.assemble_ensemble(3, results_dir=tmp_path / "r")


def test_a_single_member_learns_from_the_train_split_whatever_the_strategy(small_features, tmp_path):
    trainer = make_trainer(small_features, tmp_path / "c", ensemble_strategy="cross_fit")
    _, results = trainer.train_ensemble(num_models=1, num_epochs=1, results_dir=tmp_path / "r")
    assert "cross_fit" not in results["members"][0]
    assert json.loads((tmp_path / "c" / "ensemble.json").read_text())["settings"]["fitted_on"] == "val"
    assert set(results["evaluation"]) == {"val", "test"}
