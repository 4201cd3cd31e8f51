"""An ensemble killed mid-run continues with `vidtempo train ... --resume auto` and ends where an uncut run
ends; a resumed run keeps the settings that change its math."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAINING


def train_command(features, root, output, *extra):
    return [sys.executable, "-m", "vidtempo", "train", "--features-dir", str(features), "--output-dir",
            str(root / output), "--num-models", "2", "--epochs", "6", "--model-config", str(root / "model.json"),
            "--training-config", str(root / "training.json"), "--quiet", *extra]


def weights(path):
    return torch.load(path, weights_only=True)["model_state_dict"]


@pytest.mark.slow
def test_a_killed_ensemble_resumes_and_ends_as_an_uncut_run(small_features, tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(TINY_MODEL))
    (tmp_path / "training.json").write_text(json.dumps({**TINY_TRAINING, "checkpoint_every": 2,
                                                        "collapse_retries": 0}))
    uncut = subprocess.run(train_command(small_features, tmp_path, "uncut"), capture_output=True, text=True,
                           timeout=600)
    assert uncut.returncode == 0, uncut.stderr

    cut = subprocess.Popen(train_command(small_features, tmp_path, "cut"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    # Kill it once member 2 has written its first periodic checkpoint (member 1 is finished by then).
    marker = tmp_path / "cut" / "ensemble_model_2_checkpoint_epoch_2.pt"
    deadline = time.monotonic() + 600
    while not marker.exists() and cut.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists() and cut.poll() is None, "the run ended before it could be cut"
    cut.send_signal(signal.SIGKILL)
    cut.wait(timeout=60)
    assert not (tmp_path / "cut" / "ensemble.json").exists()
    member_1 = tmp_path / "cut" / "best_ensemble_model_1.pt"
    finished_at = member_1.stat().st_mtime_ns

    resumed = subprocess.run(train_command(small_features, tmp_path, "cut", "--resume", "auto"), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert member_1.stat().st_mtime_ns == finished_at, "a finished member is kept, not retrained"
    for name in ("best_ensemble_model_1.pt", "best_ensemble_model_2.pt"):
        expected, actual = weights(tmp_path / "uncut" / name), weights(tmp_path / "cut" / name)
        for key in expected:
            assert torch.equal(expected[key], actual[key]), (name, key)
    uncut_results = json.loads((tmp_path / "uncut" / "results" / "ensemble_final_results.json").read_text())
    cut_results = json.loads((tmp_path / "cut" / "results" / "ensemble_final_results.json").read_text())
    assert cut_results["ensemble"] == uncut_results["ensemble"]
    assert not list((tmp_path / "cut").glob(".*")), "no attempt records or put-aside weights are left"


@pytest.mark.slow
def test_resume_refuses_a_setting_that_changes_the_math(small_features, tmp_path):
    from vidtempo import EnhancedTemporalModelTrainer
    from vidtempo.errors import ConfigError

    training = {**TINY_TRAINING, "checkpoint_every": 1}
    first = EnhancedTemporalModelTrainer(small_features, tmp_path / "ckpt", device="cpu", model_config=TINY_MODEL,
                                         training_config=training, quiet=True)
    first.train_single_model(num_epochs=2, model_name="m", results_dir=tmp_path / "r")
    checkpoint = tmp_path / "ckpt" / "m_checkpoint_epoch_1.pt"
    other_seed = EnhancedTemporalModelTrainer(small_features, tmp_path / "ckpt", device="cpu", model_config=TINY_MODEL,
                                              training_config={**training, "seed": 7}, quiet=True)
    with pytest.raises(ConfigError, match="seed=42, not 7"):
        other_seed.train_single_model(num_epochs=3, model_name="m", results_dir=tmp_path / "r",
                                      resume_from=checkpoint)
    # Loader workers do not change the math: they follow the new call.
    more_workers = EnhancedTemporalModelTrainer(small_features, tmp_path / "ckpt", device="cpu",
                                                model_config=TINY_MODEL, training_config={**training, "num_workers": 1},
                                                quiet=True)
    _, results = more_workers.train_single_model(num_epochs=3, model_name="m", results_dir=tmp_path / "r",
                                                 resume_from=checkpoint)
    assert results["training_config"]["num_workers"] == 1 and results["epochs_trained"] == 3
