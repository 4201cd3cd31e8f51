"""``vidtempo tune``: a study on the cross-fitting folds, its outputs, its storage, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("optuna")

from conftest import TINY_MODEL  # noqa: E402
from vidtempo.errors import ConfigError  # noqa: E402
from vidtempo.training.tuning import Recipe, default_space, resolve_space, run_tuning  # noqa: E402

# A small, fast space: tiny models, a few epochs.
SMALL_SPACE = {
    "hidden_dim": {"type": "categorical", "choices": [16, 32]},
    "num_lstm_layers": {"type": "fixed", "value": 1},
    "num_attention_heads": {"type": "fixed", "value": TINY_MODEL["num_attention_heads"]},
    "num_epochs": {"type": "int", "low": 2, "high": 3},
    "batch_size": {"type": "fixed", "value": 32},
    "learning_rate": {"type": "float", "low": 1e-3, "high": 5e-3, "log": True},
    "weight_averaging": {"type": "fixed", "value": "none"},
    "mixup_alpha": {"type": "fixed", "value": 0.0},
}


def test_the_default_space_scales_with_the_number_of_videos():
    small, large = default_space(300), default_space(300_000)
    assert max(small["hidden_dim"]["choices"]) < max(large["hidden_dim"]["choices"]) == 768
    # Few videos make few steps per epoch: their schedules may run to more epochs, with more patience.
    assert small["num_epochs"]["high"] > large["num_epochs"]["high"]
    assert small["patience"]["high"] > large["patience"]["high"]
    assert max(default_space(40)["batch_size"]["choices"]) <= 10 < max(large["batch_size"]["choices"])


@pytest.mark.parametrize("space, words", [
    ({}, "empty search space"),
    ({"hidden_size": {"type": "int", "low": 1, "high": 2}}, "unknown setting 'hidden_size'"),
    ({"dropout": {"type": "float", "low": 0.5, "high": 0.1}}, "low 0.5 > high 0.1"),
    ({"dropout": {"type": "normal"}}, "needs a type"),
])
def test_a_bad_space_is_refused(space, words):
    with pytest.raises(ConfigError, match=words):
        resolve_space(100, space)


@pytest.mark.slow  # trains several small models
def test_a_study_writes_configs_that_train_takes_and_continues_when_rerun(small_features, tmp_path):
    best = run_tuning(small_features, tmp_path / "tune", "_multiscale", trials=3, space_overrides=SMALL_SPACE,
                      folds=2, quiet=True)
    training = json.loads((tmp_path / "tune" / "best_training_config.json").read_text())
    model = json.loads((tmp_path / "tune" / "best_model_config.json").read_text())
    assert {"num_epochs", "batch_size", "learning_rate"} <= set(training) and "hidden_dim" in model
    report = (tmp_path / "tune" / "report.md").read_text()
    assert f"Chosen trial {best['trial']}" in report and "optimization_history.png" in report
    assert "Trial 0 tried the recipe the trials start from" in report
    again = run_tuning(small_features, tmp_path / "tune", "_multiscale", trials=3, space_overrides=SMALL_SPACE,
                       folds=2, quiet=True)
    assert again["trials"] == best["trials"] == 3, "a rerun with the budget spent repeats nothing"
    result = subprocess.run([sys.executable, "-m", "vidtempo", "train", "--features-dir", str(small_features),
                             "--output-dir", str(tmp_path / "ckpt"), "--num-models", "1", "--quiet",
                             "--model-config", str(tmp_path / "tune" / "best_model_config.json"),
                             "--training-config", str(tmp_path / "tune" / "best_training_config.json")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow  # two processes
def test_two_processes_on_one_storage_share_the_trial_budget(small_features, tmp_path):
    code = ("import sys, json\nfrom vidtempo.training.tuning import run_tuning\n"
            f"space = json.loads({json.dumps(json.dumps(SMALL_SPACE))})\n"
            f"run_tuning({str(small_features)!r}, {str(tmp_path / 'out')!r} + sys.argv[1], '_multiscale', trials=4,"
            f" storage='sqlite:///{tmp_path / 'shared.db'}', space_overrides=space, folds=2, quiet=True)\n")
    processes = [subprocess.Popen([sys.executable, "-c", code, str(i)], stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
    for process in processes:
        assert process.wait(timeout=900) == 0, process.stderr.read()
    import optuna

    study = optuna.load_study(study_name="vidtempo", storage=f"sqlite:///{tmp_path / 'shared.db'}")
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)), "no trial twice"
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 4 <= len(finished) <= 5  # each process stops once 4 are finished; one may be in flight then


@pytest.mark.slow
def test_the_first_trial_tries_the_recipe_it_starts_from(small_features, tmp_path):
    recipe = Recipe(model={"hidden_dim": 32, "dropout": 0.1}, training={"learning_rate": 2e-3})
    run_tuning(small_features, tmp_path / "t", "_multiscale", trials=1, space_overrides=SMALL_SPACE, folds=2,
               quiet=True, recipe=recipe)
    import optuna

    (trial,) = optuna.load_study(study_name="vidtempo", storage=f"sqlite:///{tmp_path / 't' / 'study.db'}").trials
    assert trial.params["hidden_dim"] == 32 and trial.params["learning_rate"] == 2e-3
    assert trial.user_attrs["model_config"]["dropout"] == 0.1, "settings outside the space come from the recipe"
    saved = json.loads((tmp_path / "t" / "best_model_config.json").read_text())
    assert saved["dropout"] == 0.1 and saved["hidden_dim"] == 32


@pytest.mark.slow
def test_failing_trials_are_recorded_with_their_reason_and_the_study_goes_on(small_features, tmp_path, capsys):
    # A learning rate of 1e30 makes the loss NaN in the first epoch; 3 heads do not divide an LSTM width of 32.
    space = {**SMALL_SPACE, "learning_rate": {"type": "fixed", "value": 1e30}, "hidden_dim": {"type": "fixed", "value": 16}}
    with pytest.raises(ConfigError, match="no trial finished"):
        run_tuning(small_features, tmp_path / "nan", "_multiscale", trials=2, space_overrides=space, folds=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial ")]
    assert len(lines) == 2 and all("fail" in line and "FloatingPointError" in line for line in lines), lines
    heads = {**SMALL_SPACE, "num_attention_heads": {"type": "fixed", "value": 3}}
    with pytest.raises(ConfigError, match="no trial finished"):
        run_tuning(small_features, tmp_path / "heads", "_multiscale", trials=2, space_overrides=heads, folds=2,
                   quiet=True)
    import optuna

    study = optuna.load_study(study_name="vidtempo", storage=f"sqlite:///{tmp_path / 'heads' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert all("not divisible" in t.user_attrs["fail_reason"] for t in study.trials)


@pytest.mark.slow  # a tune process killed during its second trial, then run again
def test_a_killed_tune_continues_without_repeating_finished_trials(small_features, tmp_path):
    command = [sys.executable, "-m", "vidtempo", "tune", "--features-dir", str(small_features),
               "--output-dir", str(tmp_path / "t"), "--trials", "3", "--folds", "2",
               "--space", json.dumps(SMALL_SPACE)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()  # the line of the first finished trial
    process.kill()
    _, stderr = process.communicate(timeout=60)
    assert first.startswith("trial 0: complete"), first + stderr
    assert "trial 0" in stderr and "epoch" in stderr, "a progress bar per trial"
    import optuna

    storage = f"sqlite:///{tmp_path / 't' / 'study.db'}"
    before = optuna.load_study(study_name="vidtempo", storage=storage).trials[0]
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "trial 0:" not in rerun.stdout, "the finished trial is not run again"
    trials = optuna.load_study(study_name="vidtempo", storage=storage).trials
    assert trials[0].datetime_complete == before.datetime_complete and trials[0].value == before.value
    assert sum(t.state.is_finished() for t in trials) == 3
    assert "chosen trial" in rerun.stdout


@pytest.mark.slow  # several command lines in new processes, one short study
def test_bad_tune_input_is_one_line_and_writes_nothing(small_features, tmp_path):
    from helpers import assert_refused, vidtempo

    common = ["tune", "--features-dir", small_features, "--folds", "2"]
    for space, words in (("{}", "empty search space"), ('{"dropout": {"type": "float", "low": 0.5, "high": 0.1}}',
                                                         "low 0.5 > high 0.1"),
                         ('{"hidden_size": {"type": "fixed", "value": 3}}', "unknown setting 'hidden_size'")):
        assert_refused(vidtempo(*common, "--output-dir", tmp_path / "new", "--space", space), words)
    assert_refused(vidtempo(*common, "--output-dir", tmp_path / "new", "--storage", "nosuchdb://x",
                            "--space", json.dumps(SMALL_SPACE)), "--storage nosuchdb://x")
    assert not (tmp_path / "new").exists()

    study = tmp_path / "study"
    assert vidtempo(*common, "--output-dir", study, "--trials", "1", "--quiet", "--space",
                    json.dumps(SMALL_SPACE)).returncode == 0
    written = {p: p.stat().st_mtime_ns for p in study.iterdir()}
    other_space = {**SMALL_SPACE, "num_epochs": {"type": "fixed", "value": 2}}
    assert_refused(vidtempo(*common, "--output-dir", study, "--trials", "2", "--space", json.dumps(other_space)),
                   "another search space")
    # The same two refusals from the Python API, as the ConfigError the command line turns into its one line.
    with pytest.raises(ConfigError, match="another search space"):
        run_tuning(small_features, study, "_multiscale", trials=2, space_overrides=other_space, folds=2, quiet=True)
    with pytest.raises(ConfigError, match="--storage"):
        run_tuning(small_features, tmp_path / "new", "_multiscale", trials=1, storage="nosuchdb://x",
                   space_overrides=SMALL_SPACE, folds=2, quiet=True)
    from vidtempo.features.synthetic import write_synthetic_features

    other = tmp_path / "other_features"
    write_synthetic_features(other, videos_per_split={"train": 40, "val": 20, "test": 10}, feature_dim=16,
                             min_frames=12, max_frames=24)
    assert_refused(vidtempo("tune", "--features-dir", other, "--folds", "2", "--output-dir", study, "--trials", "2",
                            "--space", json.dumps(SMALL_SPACE)), "other feature files")
    assert {p: p.stat().st_mtime_ns for p in study.iterdir()} == written


def _study_with(values, first="whole"):
    import optuna

    study = optuna.create_study(direction="maximize")
    for number, value in enumerate(values):
        attrs = {"starting_recipe": first} if number == 0 else {}
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}, user_attrs=attrs))
    return study


def test_a_starting_recipe_the_sampler_completed_is_not_kept_by_the_rule():
    from vidtempo.training.tuning import choose_trial

    trial, why = choose_trial(_study_with([97.0, 98.5], first="partial"), 67)
    assert trial.number == 1 and why == "the best trial"


def test_the_starting_recipe_is_queued_again_when_its_trial_failed():
    import optuna

    from vidtempo.training.tuning import _enqueue_starting_recipe

    space = resolve_space(100, SMALL_SPACE)
    study = optuna.create_study(direction="maximize")
    _enqueue_starting_recipe(optuna, study, Recipe(model={"hidden_dim": 32}), space)
    _enqueue_starting_recipe(optuna, study, Recipe(model={"hidden_dim": 32}), space)
    assert [t.state.name for t in study.trials] == ["WAITING"], "queued once"
    trial = study.ask()
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    _enqueue_starting_recipe(optuna, study, Recipe(model={"hidden_dim": 32}), space)
    assert [t.state.name for t in study.trials] == ["FAIL", "WAITING"]
    assert study.trials[1].user_attrs["starting_recipe"] == "partial"  # the epochs and learning rate are sampled
    assert study.trials[1].system_attrs["fixed_params"]["hidden_dim"] == 32


@pytest.mark.parametrize("values, videos, chosen", [
    ([97.0, 98.5, 90.0], 67, 0),  # 1.5 points: less than one standard error (2.1) of 97% over 67 videos
    ([54.0, 78.0, 60.0], 50, 1),  # 24 points: far more than one standard error (7.0)
    ([100.0 - 1e-6, 100.0 - 1e-7], 40, 0),  # a tie in accuracy broken by the loss is less than one video
    ([80.0, 79.0], 1000, 0),  # the starting recipe is the best
])
def test_the_best_trial_replaces_the_starting_recipe_only_when_validation_can_tell(values, videos, chosen):
    from vidtempo.training.tuning import choose_trial

    trial, why = choose_trial(_study_with(values), videos)
    assert trial.number == chosen, why
    assert why.startswith("the starting recipe") == (chosen == 0 and max(values) != values[0])
