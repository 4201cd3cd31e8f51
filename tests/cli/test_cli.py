"""The command line: success paths, and bad input refused with one line and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import TINY_MODEL, TINY_TRAINING
from test_checkpoint import write_malicious_checkpoint
from helpers import _damage, assert_refused, vidtempo

pytestmark = pytest.mark.slow  # each test runs the command line in a new process, most of them train


@pytest.fixture(scope="module")
def trained(small_features, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "model.json").write_text(json.dumps(TINY_MODEL))
    (root / "training.json").write_text(json.dumps({**TINY_TRAINING, "checkpoint_every": 1}))
    result = vidtempo("train", "--features-dir", small_features, "--output-dir", root / "ckpt", "--num-models", 2,
                      "--epochs", 2, "--model-config", root / "model.json", "--training-config",
                      root / "training.json", "--quiet")
    assert result.returncode == 0, result.stderr
    return root


def test_train_writes_members_and_results(trained):
    assert (trained / "ckpt" / "best_ensemble_model_1.pt").is_file()
    assert (trained / "ckpt" / "best_ensemble_model_2.pt").is_file()
    assert (trained / "ckpt" / "results" / "ensemble_final_results.json").is_file()
    assert (trained / "ckpt" / "ensemble.json").is_file()
    report = (trained / "ckpt" / "results" / "report" / "report.md").read_text()
    assert "training_curves.png" in report and "reliability.png" in report


def test_resume_from_the_command_line(trained, small_features, tmp_path):
    import shutil

    ckpt = shutil.copytree(trained / "ckpt", tmp_path / "ckpt")  # retraining a member makes its manifest stale
    result = vidtempo("train", "--features-dir", small_features, "--output-dir", ckpt, "--epochs", 3,
                      "--resume", ckpt / "ensemble_model_1_checkpoint_epoch_1.pt", "--quiet")
    assert result.returncode == 0, result.stderr
    saved = json.loads((ckpt / "results" / "ensemble_model_1_results.json").read_text())
    assert len(saved["history"]["val_acc"]) == 3
    stale = vidtempo("evaluate", "--features-dir", small_features, "--checkpoints", ckpt)
    assert_refused(stale, "ensemble.json", "--assemble")


def test_evaluate_reports_members_and_ensemble(trained, small_features, tmp_path):
    out = tmp_path / "eval.json"
    result = vidtempo("evaluate", "--features-dir", small_features, "--checkpoints", trained / "ckpt", "--tta",
                      "--output", out)
    assert result.returncode == 0, result.stderr
    assert "ensemble" in result.stdout and "confusion matrix" in result.stdout
    report = json.loads(out.read_text())
    assert set(report["plain"]["members"]) == {"ensemble_model_1", "ensemble_model_2"}
    figures = tmp_path / "report_test"
    for name in ("confusion_matrix.png", "training_curves.png", "reliability.png", "report.md"):
        assert (figures / name).stat().st_size > 0, name
    markdown = (figures / "report.md").read_text()
    assert "confusion_matrix.png" in markdown and "precision" in markdown and "ECE" in markdown
    for mode in ("plain", "tta"):
        metrics = report[mode]["ensemble"]
        assert {"accuracy", "f1_weighted", "per_class_f1", "confusion_matrix"} <= set(metrics)
        assert np.array(metrics["confusion_matrix"]).sum() == 32


def test_evaluate_refuses_a_pickled_checkpoint(small_features, tmp_path):
    marker = tmp_path / "code_ran"
    write_malicious_checkpoint(tmp_path / "best_evil.pt", marker)
    result = vidtempo("evaluate", "--features-dir", small_features, "--checkpoints", tmp_path / "best_evil.pt")
    assert_refused(result, "best_evil.pt", "refused")
    assert not marker.exists()


def test_inspect_summarises(small_features):
    result = vidtempo("inspect", small_features / "train_features_multiscale.h5")
    assert result.returncode == 0, result.stderr
    assert "videos        96" in result.stdout and "order_AB" in result.stdout and "backbone" in result.stdout
    as_json = json.loads(vidtempo("inspect", "--json", small_features / "val_features_multiscale.h5").stdout)
    assert as_json["num_videos"] == 32 and as_json["feature_dim"] == 16


DAMAGES = ["nan", "inf", "label", "zero_frames", "too_many_frames", "no_mapping", "bad_mapping"]


@pytest.mark.parametrize("what", DAMAGES + ["corrupt", "truncated", "missing", "dim_mismatch"])
def test_bad_features_are_refused_before_any_checkpoint(features_copy, tmp_path, what):
    target = features_copy / "val_features_multiscale.h5"
    if what == "corrupt":
        target.write_bytes(b"garbage" * 1000)
    elif what == "truncated":
        target.write_bytes(target.read_bytes()[:2000])
    elif what == "missing":
        target.unlink()
    elif what == "dim_mismatch":
        with h5py.File(features_copy / "test_features_multiscale.h5", "r") as f:
            labels, frames = f["labels"][()], f["num_frames"][()]
            mapping = f.attrs["category_mapping"]
            shape = f["features"].shape
        target = features_copy / "test_features_multiscale.h5"
        target.unlink()
        with h5py.File(target, "w") as f:
            f["features"] = np.zeros((shape[0], shape[1], shape[2] + 1), np.float32)
            f["labels"], f["num_frames"] = labels, frames
            f.attrs["category_mapping"] = mapping
    else:
        _damage(target, what)
    out = tmp_path / "ckpt"
    result = vidtempo("train", "--features-dir", features_copy, "--output-dir", out, "--epochs", 1, "--quiet")
    assert_refused(result, target.name)
    assert not out.exists() or not list(out.glob("*.pt"))
    if what != "missing":
        assert_refused(vidtempo("inspect", target), target.name) if what != "dim_mismatch" else None


def test_usage_errors_exit_2(tmp_path, small_features):
    assert vidtempo("train").returncode == 2
    result = vidtempo("train", "--features-dir", tmp_path / "nowhere", "--output-dir", tmp_path / "o")
    assert_refused(result, "nowhere")
    (tmp_path / "bad.json").write_text("{")
    result = vidtempo("train", "--features-dir", small_features, "--output-dir", tmp_path / "o",
                      "--training-config", tmp_path / "bad.json")
    assert_refused(result, "bad.json")
    (tmp_path / "unknown.json").write_text('{"num_epoch": 3}')
    result = vidtempo("train", "--features-dir", small_features, "--output-dir", tmp_path / "o",
                      "--training-config", tmp_path / "unknown.json")
    assert_refused(result, "num_epoch")
    assert_refused(vidtempo("inspect", tmp_path / "missing.h5"), "missing.h5")


# ------------------------------------------------------------------------------- options and help text
def _options_by_command():
    import argparse

    from vidtempo.cli.commands import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {command: {(a.option_strings or [a.dest])[-1]: a for a in parser._actions if a.dest != "help"}
            for command, parser in sub.choices.items()}


def test_every_option_of_every_command_has_help_text():
    options = _options_by_command()
    assert {"extract", "train", "evaluate", "predict", "serve", "inspect", "demo"} <= set(options)
    missing = [f"{command} {name}" for command, actions in options.items() for name, a in actions.items() if not a.help]
    assert not missing


def test_every_command_that_runs_a_model_has_the_same_device_option():
    options = _options_by_command()
    with_device = {command for command, actions in options.items() if "--device" in actions}
    assert with_device == {"extract", "train", "tune", "distill", "evaluate", "predict", "serve"}
    assert {options[c]["--device"].default for c in with_device} == {"auto"}
    assert len({options[c]["--device"].help for c in with_device}) == 1


def test_help_defaults_are_read_from_where_the_defaults_are_defined(monkeypatch):
    from vidtempo.config import TrainingConfig
    from vidtempo.features.extract.settings import ExtractionSettings, RunOptions
    from vidtempo.serve.settings import ServiceSettings

    for cls, name, value in ((TrainingConfig, "num_epochs", 7), (ExtractionSettings, "frames_per_video", 9),
                             (RunOptions, "batch_size", 5), (ServiceSettings, "max_upload_mb", 11)):
        monkeypatch.setattr(cls.__dataclass_fields__[name], "default", value)
    options = _options_by_command()
    assert options["train"]["--epochs"].help.endswith("(default 7)")
    assert options["extract"]["--frames"].help.endswith("(default 9)") and options["extract"]["--frames"].default == 9
    assert options["extract"]["--batch-size"].help.endswith("(default 5)")
    assert options["serve"]["--max-upload-mb"].help.endswith("(default 11)")


def test_members_extracted_with_other_settings_are_refused_in_one_line(tmp_path):
    from helpers import _with_feature_settings, write_seed_checkpoint
    from vidtempo.features.extract.settings import ExtractionSettings

    for name, size in (("best_a.pt", 96), ("best_b.pt", 128)):
        write_seed_checkpoint(tmp_path / name, 0)
        _with_feature_settings(tmp_path / name, ExtractionSettings(image_size=size).to_dict())
    assert_refused(vidtempo("predict", tmp_path / "clip.mp4", "--checkpoints", tmp_path), "best_b.pt", "image_size")
