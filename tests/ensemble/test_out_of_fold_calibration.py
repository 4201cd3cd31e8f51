"""A cross-fitted ensemble is calibrated on the out-of-fold predictions of every labelled video, not on the
validation split alone; the manifest says which data it was fitted on, and which splits are not held out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAINING
from vidtempo import Ensemble, EnhancedTemporalModelTrainer, checkpoint
from vidtempo.ensemble.calibration import (MAX_TEMPERATURE, MIN_CALIBRATION_VIDEOS, MIN_TEMPERATURE,
                                           apply_temperature, expected_calibration_error, fit_calibration)
from vidtempo.ensemble.ensemble import EnsembleSettings, with_fitted_spread
from vidtempo.ensemble.fit import fit_ensemble_settings_out_of_fold
from vidtempo.ensemble.folds import cross_fit_splits
from vidtempo.ensemble.trust import (DISTANCE_QUANTILE, MIN_SPREAD_VIDEOS, UNCERTAIN_QUANTILE, fit_distance_spread,
                                     trust)
from vidtempo.features.store import MULTISCALE_SUFFIX, write_split

# Validation alone is under the calibration minimum, train + val pooled is over it.
VIDEOS = {"train": 96, "val": 32, "test": 16}
NUM_MODELS = 2
# A few short epochs in small batches: enough for the tiny model to learn the set below.
TRAINING = {**TINY_TRAINING, "batch_size": 8, "collapse_retries": 0}


def write_labelled_set(folder, seed: int = 0, label_noise: float = 0.15) -> None:
    """Four classes, each a prototype frame plus noise, so the tiny model learns them in a few epochs (the
    temporal-order set of features/synthetic.py takes it far longer). ``label_noise`` of the labels are
    wrong, so that the out-of-fold predictions have errors however well the members learn, and a
    temperature can be fitted on them (none misclassified, or only near ties, leave nothing to fit)."""
    rng = np.random.default_rng(seed)
    prototypes = 0.4 * rng.standard_normal((4, 16)).astype(np.float32)
    for split, count in VIDEOS.items():
        labels = np.arange(count) % 4
        rng.shuffle(labels)
        lengths = rng.integers(12, 25, size=count)
        features = np.zeros((count, 24, 16), dtype=np.float32)
        for i, (label, length) in enumerate(zip(labels, lengths)):
            features[i, :length] = prototypes[label] + rng.standard_normal((length, 16))
        wrong = rng.random(count) < label_noise
        labels = np.where(wrong, (labels + rng.integers(1, 4, size=count)) % 4, labels)
        write_split(folder / f"{split}_features{MULTISCALE_SUFFIX}.h5", features, labels, lengths,
                    {name: i for i, name in enumerate(("a", "b", "c", "d"))}, multi_scale=True)


@pytest.fixture(scope="module")
def labelled_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled")
    write_labelled_set(folder)
    return folder


def train(features, output, strategy: str, epochs: int):
    trainer = EnhancedTemporalModelTrainer(features, output / "ckpt", device="cpu", model_config=TINY_MODEL,
                                           training_config={**TRAINING, "ensemble_strategy": strategy}, quiet=True)
    _, results = trainer.train_ensemble(num_models=NUM_MODELS, num_epochs=epochs, results_dir=output / "results")
    manifest = json.loads((output / "ckpt" / "ensemble.json").read_text())["settings"]
    return trainer, results, manifest


@pytest.fixture(scope="module")
def cross_fitted(labelled_set, tmp_path_factory):
    output = tmp_path_factory.mktemp("cross_fitted")
    trainer, results, manifest = train(labelled_set, output, "cross_fit", epochs=8)
    return output / "ckpt", trainer, results, manifest


def out_of_fold(folder, trainer):
    """Every labelled video's prediction by the member that did not train on it, computed here apart from
    the assembly: probabilities ``[N, C]``, labels ``[N]`` and the distance ratios to every class ``[N, C]``
    with the member's own training spread (from its checkpoint)."""
    folds = cross_fit_splits(trainer.splits, NUM_MODELS, trainer.training_config.seed)
    probs, labels, ratios = [], [], []
    for i, fold in enumerate(folds):
        # A list of files: no manifest is read, so the member keeps its training spread.
        alone = Ensemble.from_checkpoints([folder / checkpoint.best_checkpoint_name(checkpoint.member_name(i + 1))])
        for outputs in alone.split_view_outputs(fold["val"], ("original",)):
            probs.append(outputs[0].probs)
            ratios.append(alone.class_distance_ratios(outputs)[0])
        labels.append(torch.from_numpy(fold["val"].labels))
    return torch.cat(probs).double(), torch.cat(labels), torch.cat(ratios).double()


@pytest.mark.slow
def test_a_cross_fitted_ensemble_is_calibrated_on_the_out_of_fold_predictions(cross_fitted):
    folder, trainer, _, manifest = cross_fitted
    labelled = trainer.splits["train"].num_videos + trainer.splits["val"].num_videos
    assert trainer.splits["val"].num_videos < MIN_CALIBRATION_VIDEOS <= labelled
    assert manifest["fitted_on"] == "out_of_fold"
    assert manifest["calibrated_on"] == f"out-of-fold, {labelled} videos"
    fitted = manifest["report"]["calibration"]["plain"]
    assert fitted["skipped"] is None, "out-of-fold predictions of train + val are enough to calibrate on"
    assert MIN_TEMPERATURE < manifest["temperature"] < MAX_TEMPERATURE and manifest["temperature"] != 1.0

    probs, labels, _ = out_of_fold(folder, trainer)
    assert len(labels) == labelled
    temperature, skipped = fit_calibration(probs, labels, "out-of-fold")
    assert skipped is None and manifest["temperature"] == pytest.approx(temperature, rel=1e-5)
    before = expected_calibration_error(probs, labels)
    after = expected_calibration_error(apply_temperature(probs, manifest["temperature"]), labels)
    assert after < before, "the temperature lowers the calibration error of the predictions it was fitted on"
    assert fitted["ece_before"] == pytest.approx(before, abs=1e-5)
    assert fitted["ece_after"] == pytest.approx(after, abs=1e-5)
    assert Ensemble.from_checkpoints(folder).settings.temperature == manifest["temperature"]


def member_files(folder):
    return [folder / checkpoint.best_checkpoint_name(checkpoint.member_name(i + 1)) for i in range(NUM_MODELS)]


def own_class_ratios_of_right_predictions(probs, labels, ratios):
    """The distance ratio of each correctly classified video to its class: the ratio inference computes for
    a right prediction, which the spread is fitted on."""
    return ratios.gather(1, labels[:, None])[:, 0][probs.argmax(-1) == labels]


@pytest.mark.slow
def test_the_assembly_stores_the_trust_spread_fitted_out_of_fold_and_loading_uses_it(cross_fitted):
    folder, trainer, _, manifest = cross_fitted
    probs, labels, ratios = out_of_fold(folder, trainer)
    factor = max(1.0, float(np.quantile(own_class_ratios_of_right_predictions(probs, labels, ratios).numpy(),
                                        DISTANCE_QUANTILE)))
    assert manifest["report"]["distance_spread"] == {"factor": pytest.approx(factor, rel=1e-5), "skipped": None}
    loaded = Ensemble.from_checkpoints(folder)
    for i, (path, stats) in enumerate(zip(member_files(folder), loaded.representation_stats)):
        trained = checkpoint.load_checkpoint(path)["representation_stats"]["distance_q95"]
        np.testing.assert_allclose(manifest["distance_q95"][i], trained.double().numpy() * factor, rtol=1e-5)
        # Loading the folder puts the stored spread in place of the checkpoint's.
        np.testing.assert_allclose(stats["distance_q95"].numpy(), manifest["distance_q95"][i], rtol=1e-6)


@pytest.mark.slow
def test_a_spread_tighter_than_the_unseen_videos_is_widened_and_the_threshold_fitted_with_it(cross_fitted):
    """Members whose own training videos cluster tighter than the videos they never saw (here: half the
    spread their checkpoints hold) would call unseen videos of a class far from it. The out-of-fold fit
    widens the spread until 95% of the right out-of-fold predictions lie within ratio 1, and fits the
    "uncertain" threshold on the ratios to the widened spread, which inference then computes."""
    folder, trainer, _, _ = cross_fitted
    probs, labels, ratios = out_of_fold(folder, trainer)
    ratios = ratios / 0.5
    tight = Ensemble.from_checkpoints(member_files(folder))  # files: no manifest, the checkpoints' spread
    tight.representation_stats = [{**s, "distance_q95": 0.5 * s["distance_q95"]} for s in tight.representation_stats]
    trained = [s["distance_q95"].double() for s in tight.representation_stats]
    folds = cross_fit_splits(trainer.splits, NUM_MODELS, trainer.training_config.seed)
    settings = fit_ensemble_settings_out_of_fold(tight, [fold["val"] for fold in folds], trainer.training_config)

    own = own_class_ratios_of_right_predictions(probs, labels, ratios)
    factor = settings.report["distance_spread"]["factor"]
    assert factor > 1.0 and factor == pytest.approx(float(np.quantile(own.numpy(), DISTANCE_QUANTILE)), rel=1e-5)
    # (to one video: the percentile interpolates between two of them)
    assert float((own / factor <= 1.0 + 1e-6).double().mean()) >= DISTANCE_QUANTILE - 1.0 / len(own)
    for fitted, spread in zip(settings.distance_q95, trained):
        np.testing.assert_allclose(fitted, spread.numpy() * factor, rtol=1e-5)
    # The threshold leaves 5% of the right out-of-fold predictions "uncertain", scored with the widened spread.
    calibrated = apply_temperature(probs, settings.temperature)
    predicted = calibrated.argmax(-1)
    scores = trust(calibrated[None], calibrated, ratios.gather(1, predicted[:, None])[:, 0] / factor)["score"]
    correct = (predicted == labels).numpy()
    expected = float(np.quantile(scores.numpy()[correct], UNCERTAIN_QUANTILE))
    assert settings.uncertain_below == pytest.approx(expected, abs=1e-4)
    # An ensemble given these settings divides by the widened spread.
    widened = Ensemble(tight.models, tight.category_mapping, representation_stats=tight.representation_stats,
                       settings=settings)
    for stats, fitted in zip(widened.representation_stats, settings.distance_q95):
        np.testing.assert_allclose(stats["distance_q95"].numpy(), fitted, rtol=1e-6)


@pytest.mark.slow
def test_scores_on_the_splits_a_cross_fitted_ensemble_learned_from_are_not_held_out(cross_fitted):
    folder, _, results, manifest = cross_fitted
    assert manifest["learned_from"] == ["train", "val"]
    assert results["held_out"] == {"train": False, "val": False, "test": True}
    assert results["calibrated_on"] == manifest["calibrated_on"]
    settings = Ensemble.from_checkpoints(folder).settings
    assert not settings.held_out("val") and settings.held_out("test")
    assert "not held out" in settings.scores_note("val") and settings.scores_note("test") is None


def test_the_report_says_which_scores_are_not_held_out(cross_fitted, labelled_set, tmp_path):
    from vidtempo.ensemble.evaluation import evaluate_ensemble, write_evaluation_report
    from vidtempo.features.store import read_split, split_path

    folder, _, _, manifest = cross_fitted
    ensemble = Ensemble.from_checkpoints(folder)
    splits = {name: read_split(split_path(labelled_set, name, MULTISCALE_SUFFIX)) for name in ("val", "test")}
    evaluation = evaluate_ensemble(ensemble, splits, tta=False)
    assert evaluation["held_out"]["test"] is None and "not held out" in evaluation["held_out"]["val"]
    report = write_evaluation_report(tmp_path / "report", evaluation, ensemble.class_names, splits["test"].labels)
    text = report.read_text()
    val_section = text[text.index("### val"):text.index("### test")]
    test_section = text[text.index("### test"):text.index("## ", text.index("### test") + 4)]
    assert "not held out" in val_section and "not held out" not in test_section
    assert f"Temperatures fitted on {manifest['calibrated_on']}" in text


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*collapsed:RuntimeWarning")  # one epoch: the members barely learn
def test_a_plain_ensemble_is_still_calibrated_on_validation(labelled_set, tmp_path):
    trainer, results, manifest = train(labelled_set, tmp_path, "seeds", epochs=1)
    val = trainer.splits["val"].num_videos
    assert manifest["fitted_on"] == "val" and manifest["calibrated_on"] == f"validation, {val} videos"
    # Too few validation videos: skipped, and said so, as before cross-fitting pooled train and val.
    assert manifest["temperature"] == 1.0
    skipped = manifest["report"]["calibration"]["plain"]["skipped"]
    assert f"{val} validation videos, fewer than {MIN_CALIBRATION_VIDEOS}" in skipped
    assert manifest["distance_q95"] is None, "the members' training spread is kept"
    assert manifest["learned_from"] == ["train"]
    assert results["held_out"] == {"train": False, "val": True, "test": True}


# ------------------------------------------------------------------------------------------ the parts
def test_calibration_reasons_name_the_data_they_were_fitted_on():
    probs = torch.softmax(torch.randn(40, 3, generator=torch.Generator().manual_seed(0)), -1)
    labels = torch.arange(40) % 3
    temperature, skipped = fit_calibration(probs, labels, "out-of-fold")
    assert temperature == 1.0 and "40 out-of-fold videos, fewer than 50" in skipped
    labels = torch.arange(60) % 3
    right = torch.full((60, 3), 0.2).scatter_(1, labels[:, None], 0.6)
    assert "no out-of-fold video is misclassified" in fit_calibration(right, labels, "out-of-fold")[1]


def test_the_distance_spread_is_the_out_of_fold_videos_95th_percentile_and_never_narrower():
    ratios = np.linspace(0.0, 4.0, 101)
    factor, skipped = fit_distance_spread(ratios)
    assert skipped is None and factor == pytest.approx(3.8)
    assert fit_distance_spread(np.full(50, 0.5)) == (1.0, None), "closer than the training videos is not unusual"
    factor, skipped = fit_distance_spread(np.full(MIN_SPREAD_VIDEOS - 1, 3.0))
    assert factor == 1.0 and f"{MIN_SPREAD_VIDEOS - 1} correctly classified out-of-fold videos" in skipped


def test_a_fitted_spread_replaces_the_training_one_without_changing_the_checkpoints_statistics():
    trained = {"centroids": torch.zeros(2, 3), "distance_q95": torch.tensor([1.0, 2.0])}
    settings = EnsembleSettings(distance_q95=[[1.5, 3.0], None])
    fitted = with_fitted_spread([trained, trained], settings)
    torch.testing.assert_close(fitted[0]["distance_q95"], torch.tensor([1.5, 3.0]))
    assert fitted[0]["centroids"] is trained["centroids"] and fitted[1] is trained
    torch.testing.assert_close(trained["distance_q95"], torch.tensor([1.0, 2.0]))
    assert with_fitted_spread([trained, None], EnsembleSettings()) == [trained, None]
    with pytest.raises(Exception, match="2 members"):
        with_fitted_spread([trained], settings)


def test_which_splits_are_held_out_follows_the_fit():
    assert EnsembleSettings(fitted_on="val", learned_from=["train"]).held_out("val")
    cross_fitted = EnsembleSettings(fitted_on="out_of_fold", learned_from=["train", "val"])
    assert not cross_fitted.held_out("val") and cross_fitted.held_out("test")
    assert "trained on" in cross_fitted.scores_note("val")
    # A manifest written before the splits were recorded: its fit says which they were.
    assert not EnsembleSettings(fitted_on="out_of_fold").held_out("val")
    assert EnsembleSettings(fitted_on="val").held_out("val") and EnsembleSettings().held_out("val")
