"""A command whose optional extra is not installed says which extra, with its pip line, in one line and exits
with status 2: no traceback.

Each case runs the real command line in a new process where the extra's package cannot be imported (its name
set to None in ``sys.modules``, which is what Python does for a package that is not there: ModuleNotFoundError).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import assert_refused

# Blocks the named modules, then runs the command line as ``python -m vidtempo`` does.
WITHOUT = ("import sys\n"
           "for name in sys.argv[1].split(','):\n"
           "    sys.modules[name] = None\n"
           "from vidtempo.cli import main\n"
           "sys.exit(main(sys.argv[2:]))\n")


def without(modules: str, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT, modules, *map(str, argv)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def tiny_features(tmp_path):
    from vidtempo.features.synthetic import write_synthetic_features

    write_synthetic_features(tmp_path / "features", videos_per_split={"train": 8, "val": 4, "test": 4},
                             feature_dim=4, min_frames=4, max_frames=6)
    return tmp_path / "features"


def test_tune_without_optuna(tiny_features, tmp_path):
    result = without("optuna", "tune", "--features-dir", tiny_features, "--output-dir", tmp_path / "tune",
                     "--quiet")
    assert_refused(result, "vidtempo tune needs the tune extra", "pip install 'vidtempo[tune]'")
    assert not (tmp_path / "tune").exists(), "refused before anything is written"


@pytest.mark.parametrize("modules, argv, pip", [
    ("onnxscript", ["export", "--output", "{tmp}/exported"], "pip install 'vidtempo[onnx]'"),
    ("onnxruntime", ["evaluate", "--features-dir", "{features}", "--runtime", "onnx"], "pip install 'vidtempo[onnx]'"),
    ("uvicorn", ["serve", "--port", "0"], "pip install 'vidtempo[serve]'"),
])
def test_the_other_extras(tiny_features, tmp_path, modules, argv, pip):
    # The checks run before any checkpoint is read: any existing path passes --checkpoints' own check.
    argv = [a.format(tmp=tmp_path, features=tiny_features) for a in argv] + ["--checkpoints", tiny_features]
    assert_refused(without(modules, *argv), pip)


@pytest.mark.slow  # loads the feature files and builds the model before the writer is made
def test_train_tensorboard_without_tensorboard(tiny_features, tmp_path):
    result = without("tensorboard", "train", "--features-dir", tiny_features, "--output-dir", tmp_path / "ckpt",
                     "--num-models", "1", "--epochs", "1", "--tensorboard", tmp_path / "tb", "--quiet")
    assert_refused(result, "pip install 'vidtempo[tensorboard]'")
