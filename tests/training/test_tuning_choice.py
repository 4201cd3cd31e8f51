"""``vidtempo tune``: which trial's recipe is handed on when trials tie, what the report leaves out when the
trials differ only by noise, and what ``--timeout`` promises."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("optuna")

from vidtempo.training import tuning  # noqa: E402
from vidtempo.training.tuning import Recipe, choose_trial, run_tuning, write_outputs  # noqa: E402


def _distributions():
    import optuna

    return {"hidden_dim": optuna.distributions.CategoricalDistribution([64, 128, 256]),
            "num_epochs": optuna.distributions.IntDistribution(30, 200)}


def _study(trials, start="partial"):
    """A study of complete trials ``(accuracy %, validation loss, hidden_dim, num_epochs, parameters)``; the
    first is the starting recipe's (``start``: whole or partial)."""
    import optuna

    study = optuna.create_study(direction="maximize")
    for number, (accuracy, loss, hidden, epochs, parameters) in enumerate(trials):
        attrs = {"model_config": {"hidden_dim": hidden, "dropout": 0.1}, "val_loss": loss,
                 "training_config": {"num_epochs": epochs}}
        if parameters is not None:
            attrs["parameters"] = parameters
        if number == 0:
            attrs["starting_recipe"] = start
        study.add_trial(optuna.trial.create_trial(
            value=accuracy - 1e-6 * loss, params={"hidden_dim": hidden, "num_epochs": epochs},
            distributions=_distributions(), user_attrs=attrs))
    return study


# Six recipes that all classified every video: the largest, longest one has the lowest validation loss.
ALL_AT_100 = [(100.0, 0.09, 128, 150, 420_000), (100.0, 0.05, 64, 60, 110_000), (100.0, 0.002, 256, 138, 1_600_000),
              (100.0, 0.03, 128, 90, 420_000), (100.0, 0.04, 64, 140, 110_000), (100.0, 0.01, 256, 70, 1_600_000)]


def test_a_tie_hands_on_the_cheapest_recipe():
    trial, why = choose_trial(_study(ALL_AT_100), 40)
    assert (trial.params["hidden_dim"], trial.params["num_epochs"]) == (64, 60), why
    assert tuning.training_cost(trial) == 110_000 * 60
    assert "cheapest" in why


def test_a_cheaper_trial_that_ties_replaces_the_starting_recipe():
    # Over 67 videos the best, 98.5%, is within one standard error of 97% (2.1 points) and of 96.5% (2.2),
    # not of 90% (3.7).
    trials = [(97.0, 0.3, 256, 150, 1_600_000), (98.5, 0.2, 128, 150, 420_000), (96.5, 0.3, 64, 100, 110_000),
              (90.0, 0.5, 64, 30, 110_000)]
    trial, why = choose_trial(_study(trials, start="whole"), 67)
    assert trial.number == 2, why
    # The starting recipe still wins the tie against a trial that costs the same or more.
    trials[2] = (96.5, 0.3, 256, 150, 1_600_000)
    trial, why = choose_trial(_study(trials, start="whole"), 67)
    assert trial.number == 1, why  # 128 units for 150 epochs is cheaper than the recipe, and ahead
    trials[1] = (98.5, 0.2, 256, 160, 1_600_000)
    trial, why = choose_trial(_study(trials, start="whole"), 67)
    assert trial.number == 0 and why.startswith("the starting recipe"), why


def test_a_cheaper_trial_that_the_validation_can_tell_apart_does_not_win():
    # 24 points behind over 50 videos: far more than one standard error.
    trials = [(78.0, 0.4, 256, 150, 1_600_000), (54.0, 0.9, 64, 30, 110_000), (60.0, 0.8, 64, 40, 110_000)]
    trial, why = choose_trial(_study(trials), 50)
    assert trial.number == 0 and why == "the best trial"


def test_trials_without_a_recorded_cost_are_chosen_as_before():
    # A study whose trials were recorded before their cost was: the best, or the starting recipe it ties with.
    trials = [(100.0, 0.09, 256, 150, None), (100.0, 0.002, 64, 30, None)]
    assert choose_trial(_study(trials), 40)[0].number == 1
    assert choose_trial(_study(trials, start="whole"), 40)[0].number == 0


def test_plots_that_could_show_only_noise_are_left_out(tmp_path):
    write_outputs(_study(ALL_AT_100), tmp_path / "tied", 40)
    report = (tmp_path / "tied" / "report.md").read_text()
    assert not list((tmp_path / "tied").glob("*.png")) and ".png" not in report
    sentence = next(line for line in report.splitlines() if line.startswith("No plots"))
    assert "all 6 finished trials" in sentence and "100.00%" in sentence, sentence
    # One video more or less is a difference in the score, not the tie-break's noise: the plots are drawn.
    differ = [(97.5, loss, hidden, epochs, cost) for _, loss, hidden, epochs, cost in ALL_AT_100[:3]] + ALL_AT_100[3:]
    write_outputs(_study(differ), tmp_path / "differ", 40)
    report = (tmp_path / "differ" / "report.md").read_text()
    assert "![param_importances.png](param_importances.png)" in report and "No plots" not in report
    assert (tmp_path / "differ" / "param_importances.png").exists()


def test_the_timeout_help_says_the_running_trial_finishes(capsys):
    from vidtempo.cli import main

    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    entry = re.search(r"--timeout \S+ (.*?) --storage", text.split("options:")[1]).group(1)
    assert entry.startswith("stop starting new trials after this many seconds"), entry
    assert "the trial running then finishes" in entry, entry


def _easy_features(folder):
    """Two classes that a few epochs of any small model tell apart on every video."""
    from vidtempo.features.store import write_split

    rng = np.random.default_rng(0)
    prototypes = 3 * np.eye(2, 8, dtype=np.float32)
    for split, count in (("train", 24), ("val", 12), ("test", 4)):
        labels = np.arange(count) % 2
        frames = prototypes[labels][:, None, :] + 0.1 * rng.standard_normal((count, 6, 8)).astype(np.float32)
        write_split(folder / f"{split}_features_multiscale.h5", frames, labels, np.full(count, 6), {"a": 0, "b": 1},
                    multi_scale=True)
    return folder


EASY_SPACE = {
    "hidden_dim": {"type": "categorical", "choices": [16, 64]},
    "num_epochs": {"type": "int", "low": 1, "high": 2},
    "num_lstm_layers": {"type": "fixed", "value": 1},
    "num_attention_heads": {"type": "fixed", "value": 2},
    "patience": {"type": "fixed", "value": 10},
    "batch_size": {"type": "fixed", "value": 8},
    "learning_rate": {"type": "fixed", "value": 5e-3},
    "weight_averaging": {"type": "fixed", "value": "none"},
    "mixup_alpha": {"type": "fixed", "value": 0.0},
}


@pytest.mark.slow  # trains a few tiny models
def test_a_real_study_whose_trials_tie_hands_on_the_cheapest_and_draws_no_plots(tmp_path):
    import optuna

    features = _easy_features(tmp_path / "features")
    recipe = Recipe(model={"hidden_dim": 64}, training={"num_epochs": 2, "precision": "fp32"})  # the costliest
    best = run_tuning(features, tmp_path / "t", "_multiscale", trials=2, space_overrides=EASY_SPACE, folds=2,
                      quiet=True, recipe=recipe)
    storage = f"sqlite:///{tmp_path / 't' / 'study.db'}"
    trials = optuna.load_study(study_name="vidtempo", storage=storage).trials
    assert [t.value > 99.99 for t in trials] == [True, True], "every trial classified every video"
    assert best["trial"] == 1, best["why"]
    costs = [tuning.training_cost(t) for t in trials]
    assert costs[0] > costs[1], costs
    saved = json.loads((tmp_path / "t" / "best_model_config.json").read_text())
    assert saved["hidden_dim"] == trials[1].params["hidden_dim"]
    report = (tmp_path / "t" / "report.md").read_text()
    assert "No plots" in report and ".png" not in report

    # --timeout stops starting trials; the one running when it passes finishes.
    run_tuning(features, tmp_path / "t", "_multiscale", trials=10, timeout_s=0.2, space_overrides=EASY_SPACE,
               folds=2, quiet=True, recipe=recipe)
    trials = optuna.load_study(study_name="vidtempo", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
