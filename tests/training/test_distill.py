"""`vidtempo distill`: a student of an ensemble learns from its calibrated labels of many views of each labelled
video, never reads the test split, resumes exactly, refuses a teacher that does not fit the features, and its
folder is a model folder like any other."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAINING
from vidtempo.config import DistillConfig
from vidtempo.ensemble.ensemble import Ensemble
from vidtempo.errors import CheckpointError, ConfigError
from vidtempo.features.store import split_path
from vidtempo.training.distill import (DISTILL_RESULTS_NAME, TEACHER_TARGETS_NAME, DistillationLoss, distill,
                                       num_views, view_frames)
from vidtempo.training.run import scores_better

SUFFIX = "_multiscale"
STUDENT = {"hidden_dim": 16, "num_lstm_layers": 1, "num_attention_heads": 2, "dropout": 0.1}
STUDENT_TRAINING = {**TINY_TRAINING, "num_epochs": 6, "checkpoint_every": 1, "collapse_retries": 0}


@pytest.fixture(scope="module")
def teacher(small_features, tmp_path_factory):
    from vidtempo import EnhancedTemporalModelTrainer

    folder = tmp_path_factory.mktemp("teacher")
    trainer = EnhancedTemporalModelTrainer(small_features, folder, device="cpu", model_config=TINY_MODEL,
                                           training_config={**TINY_TRAINING, "collapse_retries": 0}, quiet=True)
    trainer.train_ensemble(num_models=2, num_epochs=10, results_dir=folder / "results")
    return folder


def labelled_only(small_features, tmp_path):
    """The feature folder without its test split."""
    folder = tmp_path / "labelled"
    folder.mkdir()
    for split in ("train", "val"):
        shutil.copy(split_path(small_features, split, SUFFIX), folder)
    return folder


def weights(path):
    return torch.load(path, weights_only=True)["model_state_dict"]


def test_a_student_learns_without_the_test_split_and_records_its_teacher(small_features, teacher, tmp_path):
    features = labelled_only(small_features, tmp_path)
    # With mixup, the teacher's distributions are mixed with the videos (the resume test runs without it).
    student, results = distill(features, teacher, tmp_path / "student", model_config=STUDENT,
                               training_config={**STUDENT_TRAINING, "mixup_alpha": 0.4}, feature_file_suffix=SUFFIX,
                               device="cpu", quiet=True)
    assert all(np.isfinite(results["history"]["train_loss"]))
    teacher_ensemble = Ensemble.from_checkpoints(teacher)
    loaded = Ensemble.from_checkpoints(tmp_path / "student")
    assert len(loaded) == 1 and loaded.names == ["student"]
    record = loaded.metadata[0]["distillation"]
    assert record["teacher"]["checkpoint_ids"] == [m["checkpoint_id"] for m in teacher_ensemble.metadata]
    assert record["learned_from"] == ["train", "val"]
    held_out = results["held_out"]
    # One in five labelled videos (stratified by class) is held out from the student's training.
    assert held_out["videos"] == record["selection_videos"]
    assert abs(held_out["videos"] - (96 + 32) / DistillConfig().selection_folds) <= 4
    assert record["agreement"] == held_out["agreement"] and 0.0 <= record["agreement"] <= 100.0
    # Selection, calibration and the trust threshold were fitted on the held-out videos; every labelled split
    # is marked as learned from, so no report shows scores on them as held-out ones.
    assert loaded.settings.calibrated_on == f"held-out videos of train + val, {held_out['videos']} videos"
    assert not loaded.settings.held_out("val") and not loaded.settings.held_out("train")
    assert loaded.settings.held_out("test")
    # Too few held-out videos to fit a temperature on labels: the student's comes from its teacher's
    # distributions on every view of them.
    plain = loaded.settings.report["calibration"]["plain"]
    assert plain["skipped"] is None and "fitted to the teacher's distributions" in plain["fallback"]
    assert loaded.settings.temperature == plain["temperature"] != 1.0
    assert results["parameters"] == sum(p.numel() for p in loaded.models[0].parameters())
    assert results["parameters"] < results["teacher_parameters"]
    assert json.loads((tmp_path / "student" / "results" / DISTILL_RESULTS_NAME).read_text())["held_out"] == held_out
    # The student's features are read as the teacher's: the same categories and inputs.
    assert loaded.category_mapping == teacher_ensemble.category_mapping


@pytest.mark.slow
def test_the_same_seed_gives_the_same_student_and_an_interrupted_one_ends_as_an_uncut_one(small_features, teacher,
                                                                                        tmp_path):
    common = dict(model_config=STUDENT, feature_file_suffix=SUFFIX, device="cpu", quiet=True)
    distill(small_features, teacher, tmp_path / "uncut", training_config=STUDENT_TRAINING, **common)
    # The cut run stopped after 3 of the 6 epochs: its periodic checkpoints are there, nothing it writes at the end.
    distill(small_features, teacher, tmp_path / "cut", training_config={**STUDENT_TRAINING, "num_epochs": 3}, **common)
    for name in (DISTILL_RESULTS_NAME,):
        (tmp_path / "cut" / "results" / name).unlink()
    (tmp_path / "cut" / "ensemble.json").unlink()
    labels_written = (tmp_path / "cut" / TEACHER_TARGETS_NAME).stat().st_mtime_ns
    _, resumed = distill(small_features, teacher, tmp_path / "cut", training_config=STUDENT_TRAINING, resume=True,
                         **common)
    assert (tmp_path / "cut" / TEACHER_TARGETS_NAME).stat().st_mtime_ns == labels_written, "labels are reused"
    expected, actual = weights(tmp_path / "uncut" / "best_student.pt"), weights(tmp_path / "cut" / "best_student.pt")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    uncut = json.loads((tmp_path / "uncut" / "results" / DISTILL_RESULTS_NAME).read_text())
    assert resumed["held_out"] == uncut["held_out"]
    for key, values in uncut["history"].items():
        if key != "epoch_time":
            assert resumed["history"][key] == values, key
    # A finished student is kept as it is.
    kept_at = (tmp_path / "cut" / "best_student.pt").stat().st_mtime_ns
    distill(small_features, teacher, tmp_path / "cut", training_config=STUDENT_TRAINING, resume=True, **common)
    assert (tmp_path / "cut" / "best_student.pt").stat().st_mtime_ns == kept_at


@pytest.mark.slow
def test_resuming_with_another_teacher_is_refused(small_features, teacher, tmp_path):
    from vidtempo import EnhancedTemporalModelTrainer

    common = dict(model_config=STUDENT, feature_file_suffix=SUFFIX, device="cpu", quiet=True)
    distill(small_features, teacher, tmp_path / "cut", training_config={**STUDENT_TRAINING, "num_epochs": 2}, **common)
    (tmp_path / "cut" / "results" / DISTILL_RESULTS_NAME).unlink()
    other = tmp_path / "other_teacher"
    EnhancedTemporalModelTrainer(small_features, other, device="cpu", model_config=TINY_MODEL,
                                 training_config={**TINY_TRAINING, "collapse_retries": 0, "seed": 5},
                                 quiet=True).train_ensemble(num_models=2, num_epochs=1, results_dir=other / "results")
    with pytest.raises(CheckpointError, match="a student of another teacher"):
        distill(small_features, other, tmp_path / "cut", training_config=STUDENT_TRAINING, resume=True, **common)


def test_a_teacher_of_other_categories_or_extraction_settings_is_refused_in_one_line(small_features, teacher,
                                                                                    tmp_path):
    renamed = tmp_path / "renamed"
    shutil.copytree(small_features, renamed)
    for split in ("train", "val", "test"):
        with h5py.File(split_path(renamed, split, SUFFIX), "r+") as f:
            mapping = json.loads(f.attrs["category_mapping"])
            f.attrs["category_mapping"] = json.dumps({f"other_{k}": v for k, v in mapping.items()})
    with pytest.raises(ConfigError, match="the teacher's categories"):
        distill(renamed, teacher, tmp_path / "s1", model_config=STUDENT, training_config=STUDENT_TRAINING,
                feature_file_suffix=SUFFIX, device="cpu", quiet=True)

    extracted = tmp_path / "extracted"
    shutil.copytree(small_features, extracted)
    for split in ("train", "val", "test"):
        with h5py.File(split_path(extracted, split, SUFFIX), "r+") as f:
            f.attrs.update({"backbone": "efficientnet_lite0", "image_size": 224, "frames_per_video": 16})
    result = subprocess.run([sys.executable, "-m", "vidtempo", "distill", "--features-dir", str(extracted),
                             "--teacher", str(teacher), "--output-dir", str(tmp_path / "s2"), "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "other settings than" in result.stderr, result.stderr
    assert not (tmp_path / "s2" / "best_student.pt").exists()


def test_views_are_the_tta_views_and_reproducible_random_subsets():
    cfg = DistillConfig(random_views=3, min_subset_ratio=0.5)
    assert num_views(cfg) == 7
    assert view_frames(20, 0, 1, 0, cfg).tolist() == list(range(20))
    assert view_frames(20, 1, 1, 0, cfg).tolist() == list(range(19, -1, -1))
    assert view_frames(8, 2, 1, 0, cfg) is None  # speed_up needs more than 10 frames
    subsets = [view_frames(40, view, 1, video, cfg) for video in range(3) for view in range(4, 7)]
    for frames in subsets:
        assert 20 <= len(frames) < 40 and np.all(np.diff(frames) > 0)
    assert len({tuple(f) for f in subsets}) == len(subsets)
    assert np.array_equal(view_frames(40, 5, 1, 2, cfg), view_frames(40, 5, 1, 2, cfg))
    assert not np.array_equal(view_frames(40, 5, 1, 2, cfg), view_frames(40, 5, 2, 2, cfg))


def test_the_loss_mixes_the_teachers_distribution_and_the_label():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    same = torch.softmax(logits, -1)
    assert torch.allclose(DistillationLoss(1.0, 1.0).per_sample(logits, labels, same), torch.zeros(2), atol=1e-6)
    hard = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(DistillationLoss(3.0, 0.0).per_sample(logits, labels, same), hard)
    other = torch.tensor([[0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    soft = DistillationLoss(2.0, 1.0).per_sample(logits, labels, other)
    assert torch.all(soft > 0)


def test_agreement_with_the_teacher_selects_before_accuracy():
    incumbent = {"accuracy": 80.0, "loss": 0.5, "agreement": 90.0}
    assert scores_better({"accuracy": 70.0, "loss": 0.9, "agreement": 95.0}, incumbent, "accuracy_then_loss")
    assert not scores_better({"accuracy": 90.0, "loss": 0.1, "agreement": 85.0}, incumbent, "accuracy_then_loss")
    assert scores_better({"accuracy": 85.0, "loss": 0.9, "agreement": 90.0}, incumbent, "accuracy_then_loss")
    # Without a teacher, accuracy first, as before.
    assert scores_better({"accuracy": 81.0, "loss": 0.9}, {"accuracy": 80.0, "loss": 0.1}, "accuracy_then_loss")


def test_bad_distill_arguments_are_one_line_and_status_2(small_features, teacher, tmp_path):
    base = [sys.executable, "-m", "vidtempo", "distill", "--features-dir", str(small_features), "--quiet"]
    cases = [
        (["--teacher", str(tmp_path / "none"), "--output-dir", str(tmp_path / "s")], "--teacher"),
        (["--teacher", str(teacher), "--output-dir", str(teacher)], "the teacher's folder"),
        (["--teacher", str(teacher), "--output-dir", str(tmp_path / "s"), "--soft-weight", "2"], "soft_weight"),
        (["--teacher", str(teacher), "--output-dir", str(tmp_path / "s"), "--distill-config", '{"views": 3}'],
         "unknown key"),
    ]
    for extra, expected in cases:
        result = subprocess.run(base + extra, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, (extra, result.stderr)
        assert result.stderr.count("\n") == 1 and expected in result.stderr, (extra, result.stderr)


@pytest.mark.slow
def test_a_student_is_a_model_like_any_other(video_model, tmp_path):
    """Distilled from the real-clip ensemble: evaluate, predict (files and a library), export, inspect, serve
    and the Python API take the student's folder as they take an ensemble's."""
    from serve_helpers import Server

    from vidtempo.inference.classify import VideoClassifier

    student = tmp_path / "student"
    run = lambda *args: subprocess.run([sys.executable, "-m", "vidtempo", *map(str, args)], capture_output=True,
                                       text=True, timeout=600)
    made = run("distill", "--features-dir", video_model.features, "--teacher", video_model.checkpoints,
               "--output-dir", student, "--epochs", "10", "--batch-size", "16", "--precision", "fp32", "--quiet")
    assert made.returncode == 0, made.stderr
    assert "agreement with the teacher" in made.stdout

    evaluated = run("evaluate", "--features-dir", video_model.features, "--checkpoints", student)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "student" in evaluated.stdout

    clip = sorted((video_model.videos / "test" / "Animation").glob("*.mp4"))[0]
    predicted = run("predict", clip, "--checkpoints", student, "--json")
    assert predicted.returncode == 0, predicted.stderr
    row = json.loads(predicted.stdout)[0]
    classifier = VideoClassifier.from_checkpoints(student)
    assert classifier.ensemble.extraction == Ensemble.from_checkpoints(video_model.checkpoints).extraction
    assert row["predicted_class"] == classifier.classify([clip])[0]["predicted_class"]
    classifier.extractor.close()

    library = run("predict", "--videos-dir", video_model.videos / "test", "--checkpoints", student,
                  "--output", tmp_path / "rows.jsonl")
    assert library.returncode == 0, library.stderr
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == len(list((video_model.videos / "test").rglob("*.mp4")))

    exported = run("export", "--checkpoints", student, "--output", tmp_path / "exported")
    assert exported.returncode == 0, exported.stderr
    onnx = run("predict", clip, "--checkpoints", tmp_path / "exported", "--runtime", "onnx", "--json")
    assert onnx.returncode == 0, onnx.stderr
    assert json.loads(onnx.stdout)[0]["predicted_class"] == row["predicted_class"]

    inspected = run("inspect", student)
    assert inspected.returncode == 0, inspected.stderr
    assert "distilled from" in inspected.stdout

    server = Server(student, tmp_path / "serve")
    try:
        import httpx

        with open(clip, "rb") as f:
            response = httpx.post(server.url + "/predict", files={"file": (clip.name, f, "video/mp4")}, timeout=120)
        assert response.status_code == 200, response.text
        assert response.json()["predicted_class"] == row["predicted_class"]
    finally:
        server.stop()
