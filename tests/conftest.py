"""Shared fixtures: small generated feature sets and a tiny model configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidtempo.features.synthetic import write_synthetic_features

# A model small enough to train in seconds on a 2-core CPU; same architecture as the default.
TINY_MODEL = {"hidden_dim": 32, "num_lstm_layers": 1, "num_attention_heads": 2, "dropout": 0.1}
# float32 keeps the many short test runs independent of the CPU's bf16 support (tested on its own).
TINY_TRAINING = {"learning_rate": 3e-3, "batch_size": 32, "num_workers": 0, "precision": "fp32"}


@pytest.fixture(scope="session")
def small_features(tmp_path_factory) -> Path:
    """A generated temporal-order feature set (multi-scale suffix) shared by read-only tests."""
    folder = tmp_path_factory.mktemp("features")
    write_synthetic_features(folder, videos_per_split={"train": 96, "val": 32, "test": 32}, feature_dim=16,
                             min_frames=12, max_frames=24)
    return folder


@pytest.fixture
def features_copy(small_features, tmp_path) -> Path:
    """A private copy of the small feature set that a test may damage."""
    import shutil

    target = tmp_path / "features"
    shutil.copytree(small_features, target)
    return target


@pytest.fixture(scope="session")
def video_model(tmp_path_factory):
    """Real clips cut from the sample videos, their features, and a small ensemble trained on them."""
    from types import SimpleNamespace

    from vidtempo import EnhancedTemporalModelTrainer
    from vidtempo.demo.videos import build_demo_videos
    from vidtempo.features.extract import ExtractionSettings, RunOptions, extract_features

    root = tmp_path_factory.mktemp("video_model")
    videos = build_demo_videos(root / "videos")
    settings = ExtractionSettings(frames_per_video=8, image_size=96)
    extract_features(videos.root, root / "features", settings, RunOptions(device="cpu", quiet=True))
    trainer = EnhancedTemporalModelTrainer(root / "features", root / "checkpoints", device="cpu",
                                           model_config=TINY_MODEL, training_config={**TINY_TRAINING, "batch_size": 16},
                                           quiet=True)
    trainer.train_ensemble(num_models=2, num_epochs=8, results_dir=root / "results")
    return SimpleNamespace(root=root, videos=videos.root, features=root / "features",
                           checkpoints=root / "checkpoints", settings=settings)


@pytest.fixture(scope="module")
def server(video_model, tmp_path_factory):
    """``vidtempo serve`` on loopback with the small model and a 1 MB upload limit, one per test module."""
    from serve_helpers import Server

    running = Server(video_model.checkpoints, tmp_path_factory.mktemp("server"), "--max-upload-mb", "1")
    yield running
    running.stop()
