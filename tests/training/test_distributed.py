"""Multi-process training with torchrun (2 CPU processes, gloo) and members trained in parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAINING

pytestmark = pytest.mark.slow  # torchrun and parallel training processes


def run(args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def test_torchrun_trains_one_member_with_two_processes(small_features, tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(TINY_MODEL))
    (tmp_path / "training.json").write_text(json.dumps({**TINY_TRAINING, "checkpoint_every": 2}))
    result = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                  "-m", "vidtempo", "train", "--features-dir", str(small_features), "--output-dir", "ckpt",
                  "--num-models", "1", "--epochs", "3", "--model-config", "model.json",
                  "--training-config", "training.json", "--quiet"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "ckpt" / "ensemble_model_1_config.json").read_text())
    assert config["processes"] == 2
    best = torch.load(tmp_path / "ckpt" / "best_ensemble_model_1.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in best["model_state_dict"]), "plain state-dict keys"
    results = json.loads((tmp_path / "ckpt" / "results" / "ensemble_model_1_results.json").read_text())
    assert len(results["history"]["train_loss"]) == 3
    # The distributed checkpoint resumes in a single process, in the same format, and trains on from it.
    start = torch.load(tmp_path / "ckpt" / "ensemble_model_1_checkpoint_epoch_2.pt", weights_only=True)
    assert start["epoch"] == 2 and start["history"] == results["history"]
    resumed = run([sys.executable, "-m", "vidtempo", "train", "--features-dir", str(small_features),
                   "--output-dir", "ckpt", "--epochs", "5", "--quiet",
                   "--resume", "ckpt/ensemble_model_1_checkpoint_epoch_2.pt"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((tmp_path / "ckpt" / "ensemble_model_1_config.json").read_text())["processes"] == 1
    end = torch.load(tmp_path / "ckpt" / "ensemble_model_1_checkpoint_epoch_4.pt", weights_only=True)
    assert end["epoch"] == 4 and end["model_state_dict"].keys() == start["model_state_dict"].keys()
    for key, values in end["history"].items():
        assert len(values) == 5 and values[:3] == start["history"][key], f"history {key} continues the run"
    assert any(not torch.equal(end["model_state_dict"][k], start["model_state_dict"][k])
               for k in start["model_state_dict"]), "the resumed run trained the weights on"
    resumed_results = json.loads((tmp_path / "ckpt" / "results" / "ensemble_model_1_results.json").read_text())
    assert resumed_results["epochs_trained"] == 5
    assert resumed_results["history"]["train_loss"][:3] == results["history"]["train_loss"]
    assert len(resumed_results["history"]["train_loss"]) == 5


def test_members_train_in_parallel_then_assemble(small_features, tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(TINY_MODEL))
    (tmp_path / "training.json").write_text(json.dumps({**TINY_TRAINING, "collapse_retries": 0}))
    common = [sys.executable, "-m", "vidtempo", "train", "--features-dir", str(small_features), "--output-dir",
              "ckpt", "--num-models", "2", "--epochs", "2", "--model-config", "model.json", "--training-config",
              "training.json", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    workers = [subprocess.Popen(common + ["--member", str(i)], cwd=tmp_path, env=env, stderr=subprocess.PIPE,
                                text=True) for i in (1, 2)]
    try:
        for worker in workers:
            _, err = worker.communicate(timeout=600)
            assert worker.returncode == 0, err[-3000:]
    finally:  # a failed or hung worker must not leave the other one running
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=30)
    assembled = run(common + ["--assemble"], cwd=tmp_path)
    assert assembled.returncode == 0, assembled.stderr[-3000:]
    manifest = json.loads((tmp_path / "ckpt" / "ensemble.json").read_text())
    assert manifest["members"] == ["best_ensemble_model_1.pt", "best_ensemble_model_2.pt"]
    seeds = [json.loads((tmp_path / "ckpt" / "results" / f"ensemble_model_{i}_results.json").read_text())
             ["training_config"]["seed"] for i in (1, 2)]
    assert seeds == [42, 43]
