"""Classifying with an early-exit rule: a video is embedded in stages of the coarse-to-fine order, each stage
embeds only the frames it adds, the answer of a settled stage is final, and the last stage is the full sample."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vidtempo.config import ModelConfig
from vidtempo.ensemble.early_exit import ExitRule
from vidtempo.ensemble.ensemble import Ensemble
from vidtempo.features.extract import ExtractionSettings
from vidtempo.features.extract.multiscale import multiscale_sequence, multiscale_steps, step_sources
from vidtempo.features.frame_order import prefix_steps
from vidtempo.inference.classify import VideoClassifier
from vidtempo.model.temporal import TemporalModel

SETTINGS = ExtractionSettings(frames_per_video=8, image_size=96)  # 8 frames, multi-scale: 9 steps


def rule(thresholds, stages=(3, 5)):
    return ExitRule(stages=list(stages), thresholds=list(thresholds), target_agreement=0.995, fitted_on="test",
                    agreement=1.0, mean_steps=0.0, full_steps=0.0).to_dict()


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    model = TemporalModel(ModelConfig(feature_dim=1280, num_classes=4, hidden_dim=16, num_lstm_layers=1,
                                      num_attention_heads=2))
    ensemble = Ensemble([model], {"a": 0, "b": 1, "c": 2, "d": 3}, extraction=SETTINGS, precision="fp32")
    classifier = VideoClassifier(ensemble)
    yield classifier
    classifier.extractor.close()


@pytest.fixture(scope="module")
def frames():
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (8, 3, 96, 96), dtype=torch.uint8, generator=generator)


def test_multiscale_steps_equal_the_rows_of_the_whole_sequence():
    rng = np.random.default_rng(0)
    for count in (1, 5, 8, 16, 64):
        features = rng.standard_normal((count, 6)).astype(np.float32)
        whole = multiscale_sequence(features)
        sources = step_sources(count, SETTINGS.scales)
        steps = prefix_steps(len(whole), 4)
        needed = {f for s in steps for f in sources[s]}
        part = multiscale_steps({f: features[f] for f in needed}, sources, steps, len(SETTINGS.scales))
        assert np.array_equal(part, whole[steps])


def test_a_settled_first_stage_embeds_only_its_frames(classifier, frames):
    classifier.ensemble.settings.early_exit = rule([0.0, 0.0])  # any confidence settles
    embedded = classifier.embed_video(frames)
    sources = step_sources(8, SETTINGS.scales)
    steps = prefix_steps(len(sources), 3)
    assert embedded.steps.tolist() == steps.tolist()
    assert embedded.frames == sorted({f for s in steps for f in sources[s]}) and len(embedded.frames) < 8
    full = classifier.embed(frames)
    assert np.allclose(embedded.features, full[steps], atol=1e-4)


def test_a_stage_that_is_never_settled_leads_to_the_full_sample(classifier, frames):
    classifier.ensemble.settings.early_exit = rule([1.01, None])
    embedded = classifier.embed_video(frames)
    assert embedded.frames == list(range(8)) and embedded.steps.tolist() == list(range(9))
    assert np.allclose(embedded.features, classifier.embed(frames), atol=1e-4)


def test_frames_all_and_tta_read_the_whole_sample(classifier, frames):
    classifier.ensemble.settings.early_exit = rule([0.0, 0.0])
    for predictor in (VideoClassifier(classifier.ensemble, classifier.extractor, frames="all"),
                      VideoClassifier(classifier.ensemble, classifier.extractor, tta=True)):
        assert predictor.exit_rule is None
        assert predictor.embed_video(frames).frames == list(range(8))
    with pytest.raises(Exception, match="--frames"):
        VideoClassifier(classifier.ensemble, classifier.extractor, frames="some")


def test_a_prepared_video_names_the_frames_it_read(classifier, frames):
    classifier.ensemble.settings.early_exit = rule([0.0, 0.0])
    prepared = classifier._prepared_frames(__import__("pathlib").Path("x.mp4"), frames)
    assert prepared.frames_sampled == 8 and len(prepared.frame_indices) < 8
    assert prepared.step_frames.shape == (len(prepared.features), len(prepared.frame_indices))
    assert np.allclose(prepared.step_frames.sum(axis=1), 1.0)
    result = classifier.classify_prepared([prepared])[0]
    assert result["frames_used"] == len(prepared.frame_indices) and result["frames_sampled"] == 8
    assert len(result["frames"]) == result["frames_used"]


@pytest.mark.slow
def test_predict_records_the_frames_each_video_used(video_model, tmp_path):
    """A library run on checkpoints given an early-exit rule: each row names its frames, the closing line the
    mean; --frames all reads every sampled frame."""
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(video_model.checkpoints, folder)
    manifest = json.loads((folder / "ensemble.json").read_text())
    manifest["settings"]["early_exit"] = rule([0.0, 0.0])
    (folder / "ensemble.json").write_text(json.dumps(manifest))
    command = [sys.executable, "-m", "vidtempo", "predict", "--videos-dir", str(video_model.videos / "test"),
               "--checkpoints", str(folder), "--quiet"]
    early = subprocess.run(command + ["--output", str(tmp_path / "early.jsonl")], capture_output=True, text=True,
                           timeout=600)
    assert early.returncode == 0, early.stderr
    rows = [json.loads(line) for line in (tmp_path / "early.jsonl").read_text().splitlines()]
    assert rows and all(0 < row["frames_used"] < video_model.settings.frames_per_video for row in rows)
    assert "frames embedded per video" in early.stderr
    every = subprocess.run(command + ["--output", str(tmp_path / "all.jsonl"), "--frames", "all"],
                           capture_output=True, text=True, timeout=600)
    assert every.returncode == 0, every.stderr
    rows = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert all(row["frames_used"] == video_model.settings.frames_per_video for row in rows)


@pytest.mark.slow
def test_an_exported_model_keeps_its_rule(video_model, tmp_path):
    """ONNX Runtime (and an int8 CNN) reads the stages an exported model's rule sets, as PyTorch does."""
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(video_model.checkpoints, folder)
    manifest = json.loads((folder / "ensemble.json").read_text())
    manifest["settings"]["early_exit"] = rule([0.0, 0.0])
    (folder / "ensemble.json").write_text(json.dumps(manifest))
    exported = subprocess.run([sys.executable, "-m", "vidtempo", "export", "--checkpoints", str(folder),
                               "--output", str(tmp_path / "onnx")], capture_output=True, text=True, timeout=600)
    assert exported.returncode == 0, exported.stderr
    clip = sorted((video_model.videos / "test").rglob("*.mp4"))[0]
    onnx = VideoClassifier.from_checkpoints(tmp_path / "onnx", runtime="onnx")
    torch_model = VideoClassifier.from_checkpoints(folder, precision="fp32")
    try:
        assert onnx.exit_rule == torch_model.exit_rule is not None
        onnx_result, torch_result = onnx.classify([clip])[0], torch_model.classify([clip])[0]
        assert onnx_result["frames_used"] == torch_result["frames_used"] < video_model.settings.frames_per_video
        assert onnx_result["predicted_class"] == torch_result["predicted_class"]
    finally:
        onnx.extractor.close()
        torch_model.extractor.close()
