"""Threads from the cores a process may really use: its affinity and its cgroup's CPU limit, or --threads."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAINING
from vidtempo.cli.options import use_threads
from vidtempo.errors import ConfigError
from vidtempo.runtime import cgroup_cpu_limit, thread_plan, usable_cores


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("files, limit", [
    ({"cpu.max": "100000 100000\n"}, 1.0),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_the_cgroup_cpu_limit_is_read_from_v2_and_v1_files(tmp_path, files, limit):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(tmp_path) == limit


def test_a_cgroup_limit_below_the_affinity_sets_the_cores(tmp_path):
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    cores, reason = usable_cores(tmp_path)
    assert cores == 1 and "cgroup" in reason


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset")
def test_a_process_pinned_to_one_core_plans_one_thread():
    code = "from vidtempo.runtime import thread_plan; print(thread_plan().torch_threads)"
    result = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "1", result.stderr


def test_threads_flag_sets_the_models_threads(restore_threads):
    use_threads(argparse.Namespace(threads=1))
    assert torch.get_num_threads() == 1
    with pytest.raises(ConfigError, match="--threads must be at least 1"):
        thread_plan(0)


def test_the_run_record_says_how_many_threads_and_why(small_features, tmp_path, restore_threads):
    from vidtempo import EnhancedTemporalModelTrainer

    use_threads(argparse.Namespace(threads=1))
    trainer = EnhancedTemporalModelTrainer(small_features, tmp_path, device="cpu", model_config=TINY_MODEL,
                                           training_config=TINY_TRAINING, quiet=True)
    trainer.train_single_model(num_epochs=1, model_name="m", results_dir=tmp_path / "results")
    record = json.loads((tmp_path / "m_config.json").read_text())
    assert record["threads"] == 1 and record["threads_reason"] == "--threads"


@pytest.mark.parametrize("preset, policy", [
    # Even on a quiet machine: another process may start later (a second vidtempo, say), and threads that
    # spin while they wait then hold the cores it needs (benchmarks/two_runs.py: 10-20x slower epochs).
    (None, "PASSIVE"),
    ("ACTIVE", "ACTIVE"),  # a policy the environment sets is kept
])
def test_threads_sleep_while_they_wait_unless_the_environment_says_otherwise(monkeypatch, restore_threads, preset,
                                                                             policy):
    import os

    if preset is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", preset)
    use_threads(argparse.Namespace(threads=None))  # as a command calls it
    assert os.environ.get("OMP_WAIT_POLICY") == policy
