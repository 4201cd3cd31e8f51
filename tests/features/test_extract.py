"""Extraction end to end on real videos: the feature files, multi-scale, failures, resume, determinism."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from extract_fixtures import (
    BIKES,
    BUNNY,
    CARPHONE,
    cut_clip,
    link,
    run_cli,
    run_python,
    sample,
    write_audio_only,
    write_random_bytes,
)
from vidtempo.features.extract import extractor as extractor_module
from vidtempo.features.extract.catalog import VideoItem
from vidtempo.features.extract.extractor import FeatureExtractor, extract_features
from vidtempo.features.extract.multiscale import DEFAULT_SCALES, multiscale_length, multiscale_sequence, scale_indices
from vidtempo.features.extract.resume import PartialSplit, partial_dir
from vidtempo.features.extract.settings import ExtractionSettings, RunOptions
from vidtempo.features.extract.video import decode_clip
from vidtempo.features.store import EXTRACTION_ATTRS, read_split, split_path

SMALL = ["--frames", "8", "--image-size", "64", "--batch-size", "8"]


# ----------------------------------------------------------------------------------------- multi-scale


def test_scale_lengths_match_the_seed_files():
    assert len(scale_indices(64, 1.0)) == 64
    assert len(scale_indices(64, 0.85)) == 54
    assert len(scale_indices(64, 1.15)) == 73
    assert multiscale_length(64) == 73
    assert multiscale_length(8) == 9
    assert multiscale_length(3) == 5 and multiscale_length(1) == 5  # at least 5 steps per scale
    assert np.array_equal(scale_indices(64, 0.85), np.linspace(0, 63, 54).astype(int))


def test_multiscale_averages_zero_padded_scales_including_the_padding():
    a, b = 1.0, 10.0
    features = np.array([[a], [b]], dtype=np.float32)
    # scale 1: [a, b]; 0.85 and 1.15: 5 steps at linspace(0, 1, 5) -> [0, 0, 0, 0, 1]
    expected = np.array([[3 * a], [b + 2 * a], [2 * a], [2 * a], [2 * b]], dtype=np.float32) / 3
    np.testing.assert_allclose(multiscale_sequence(features), expected, rtol=1e-6)
    torch.testing.assert_close(multiscale_sequence(torch.from_numpy(features)), torch.from_numpy(expected))


@pytest.fixture(scope="module")
def bikes_64_frames():
    return decode_clip(sample(BIKES), 64, 64).frames


@pytest.mark.slow
def test_multiscale_fast_path_equals_running_the_cnn_on_each_scale(bikes_64_frames):
    extractor = FeatureExtractor(ExtractionSettings(image_size=64, frames_per_video=64), batch_size=16, workers=0)
    calls = []
    original = extractor.backbone.forward
    extractor.backbone.forward = lambda x: calls.append(x.shape[0]) or original(x)
    fast = extractor.sequence_features(bikes_64_frames)
    del extractor.backbone.forward
    assert sum(calls) == 64  # the CNN ran once per sampled frame
    assert fast.shape == (73, 1280)

    # The seed's way: re-sample the frames for each scale and run the CNN on each scale's frames.
    per_scale = [extractor.backbone(bikes_64_frames[scale_indices(64, s)]).numpy() for s in DEFAULT_SCALES]
    longest = max(len(p) for p in per_scale)
    reference = np.mean([np.pad(p, ((0, longest - len(p)), (0, 0))) for p in per_scale], axis=0)
    assert np.abs(fast - reference).max() < 1e-5


# ---------------------------------------------------------------------------------- a full CLI run


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    link(sample(BUNNY), root / "train/Animation/bunny.mp4")
    write_random_bytes(root / "train/Animation/random_bytes.mp4")
    link(sample(BIKES), root / "train/Natural_Content/bikes.mp4")
    link(sample(CARPHONE), root / "train/Natural_Content/carphone.mp4")
    (root / "train/Natural_Content/zero_bytes.mp4").write_bytes(b"")
    write_audio_only(root / "train/Natural_Content/audio_only.mp4")
    cut_clip(sample(CARPHONE), root / "train/Natural_Content/short/five.mp4", 5)
    (root / "train/Natural_Content/notes.txt").write_text("not a video")
    link(sample(BUNNY), root / "val/Animation/bunny.mkv")
    link(sample(CARPHONE), root / "val/Natural_Content/carphone.mp4")
    link(sample(BIKES), root / "test/Gaming/bikes.mp4")  # a category only the test split has
    return root


@pytest.fixture(scope="module")
def extracted(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("features")
    result = run_cli("--videos-dir", videos, "--output-dir", out, *SMALL)
    return out, result


@pytest.mark.slow
def test_run_succeeds_and_names_the_broken_files(extracted):
    out, result = extracted
    assert result.returncode == 0, result.stderr
    assert "train: 4/7 videos done, 3 failed" in result.stdout
    for name in ("random_bytes.mp4", "zero_bytes.mp4", "audio_only.mp4"):
        assert f"train/Natural_Content/{name}" in result.stdout or f"train/Animation/{name}" in result.stdout
    failures = json.loads((out / "train_failures_multiscale.json").read_text())
    assert sorted(f["video"] for f in failures["failed"]) == [
        "train/Animation/random_bytes.mp4",
        "train/Natural_Content/audio_only.mp4",
        "train/Natural_Content/zero_bytes.mp4",
    ]
    assert not (out / "val_failures_multiscale.json").exists()
    assert not list(out.glob(".*"))  # no temporary or partial files left behind


@pytest.mark.slow
def test_files_load_with_the_store_and_carry_the_extraction_attrs(extracted):
    out, _ = extracted
    splits = {s: read_split(split_path(out, s, "_multiscale")) for s in ("train", "val", "test")}
    mapping = {"Animation": 0, "Gaming": 1, "Natural_Content": 2}  # sorted union over all splits
    for split in splits.values():
        assert split.category_mapping == mapping
        assert split.multi_scale and split.feature_dim == 1280
        assert set(EXTRACTION_ATTRS) <= set(split.attrs)
        assert split.attrs["backbone"] == "efficientnet_lite0"
        assert split.attrs["image_size"] == 64 and split.attrs["frames_per_video"] == 8
        assert split.attrs["scales"] == [1.0, 0.85, 1.15]
    train = splits["train"]
    assert train.video_ids == [
        "train/Animation/bunny.mp4",
        "train/Natural_Content/bikes.mp4",
        "train/Natural_Content/carphone.mp4",
        "train/Natural_Content/short/five.mp4",
    ]
    assert train.labels.tolist() == [0, 2, 2, 2]
    # 8 sampled frames -> 9 multi-scale steps; the 5-frame clip uses its 5 frames -> 5 steps
    assert train.num_frames.tolist() == [9, 9, 9, 5]
    assert train.max_frames == 9
    assert np.all(train.features[3, 5:] == 0)  # zero padding after the short video's steps
    assert splits["test"].labels.tolist() == [1]


@pytest.mark.slow
def test_same_video_gives_the_same_features_in_every_split(extracted):
    out, _ = extracted
    train = read_split(split_path(out, "train", "_multiscale"))
    val = read_split(split_path(out, "val", "_multiscale"))
    test = read_split(split_path(out, "test", "_multiscale"))
    assert np.array_equal(train.features[1], test.features[0])  # bikes
    assert np.array_equal(train.features[2], val.features[1])  # carphone
    assert np.array_equal(train.features[0], val.features[0])  # bunny (as .mkv)


@pytest.mark.slow
def test_a_single_video_is_extracted_as_the_files_were(extracted):
    out, _ = extracted
    train = read_split(split_path(out, "train", "_multiscale"))
    extractor = FeatureExtractor.from_settings(train.extraction_settings(), batch_size=8, workers=0)
    assert extractor.settings.image_size == 64 and extractor.settings.multi_scale
    features = extractor.extract_video(sample(BIKES))
    assert features.shape == (9, 1280)
    np.testing.assert_allclose(features, train.features[1, :9], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_finished_split_is_not_redone_without_overwrite(extracted, videos):
    out, _ = extracted
    before = {s: split_path(out, s, "_multiscale").stat().st_mtime_ns for s in ("train", "val", "test")}
    again = run_cli("--videos-dir", videos, "--output-dir", out, *SMALL)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already extracted") == 3
    assert {s: split_path(out, s, "_multiscale").stat().st_mtime_ns for s in before} == before

    redo = run_cli("--videos-dir", videos, "--output-dir", out, *SMALL, "--overwrite", "--splits", "test")
    assert redo.returncode == 0, redo.stderr
    assert split_path(out, "test", "_multiscale").stat().st_mtime_ns != before["test"]
    assert split_path(out, "train", "_multiscale").stat().st_mtime_ns == before["train"]


@pytest.mark.slow
def test_other_settings_on_a_finished_split_need_overwrite(extracted, videos):
    out, _ = extracted
    result = run_cli("--videos-dir", videos, "--output-dir", out, "--frames", "4", "--image-size", "64")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("vidtempo: error:") and "--overwrite" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------- exit statuses


@pytest.mark.slow
def test_strict_stops_with_exit_1_and_writes_no_file(tmp_path):
    videos = tmp_path / "videos"
    link(sample(CARPHONE), videos / "train/Natural_Content/carphone.mp4")
    write_random_bytes(videos / "train/Natural_Content/broken.mp4")
    result = run_cli("--videos-dir", videos, "--output-dir", tmp_path / "out", *SMALL, "--strict", "--quiet")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("vidtempo: error: train/Natural_Content/broken.mp4")
    assert "Traceback" not in result.stderr
    assert not split_path(tmp_path / "out", "train", "_multiscale").exists()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["nothing", "splits_without_videos"])
def test_a_folder_without_videos_exits_2_with_one_line(tmp_path, layout):
    videos = tmp_path / "videos"
    videos.mkdir()
    if layout == "splits_without_videos":
        (videos / "train/Animation").mkdir(parents=True)
        (videos / "train/Animation/readme.txt").write_text("no videos here")
    result = run_cli("--videos-dir", videos, "--output-dir", tmp_path / "out", *SMALL)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("vidtempo: error:")
    assert str(videos) in result.stderr


@pytest.mark.slow
def test_without_multi_scale_the_plain_file_is_written(tmp_path):
    videos = tmp_path / "videos"
    link(sample(CARPHONE), videos / "train/Natural_Content/carphone.mp4")
    cut_clip(sample(CARPHONE), videos / "train/Natural_Content/five.mp4", 5)
    result = run_cli("--videos-dir", videos, "--output-dir", tmp_path / "out", *SMALL, "--no-multi-scale", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    split = read_split(split_path(tmp_path / "out", "train"))
    assert not split.multi_scale and split.attrs["scales"] == [1.0]
    assert split.num_frames.tolist() == [8, 5]  # sampled frames; the short clip uses all 5 of its frames


# ------------------------------------------------------------------------------------------- resume


def test_saved_progress_survives_a_torn_write(tmp_path):
    videos = tmp_path / "videos"
    items = [
        VideoItem(link(sample(name), videos / f"train/C/{i}.mp4"), f"train/C/{i}.mp4", "C", 0)
        for i, name in enumerate((BIKES, CARPHONE))
    ]
    final = tmp_path / "out" / "train_features.h5"
    final.parent.mkdir()
    partial = PartialSplit(final, {"x": 1}, feature_dim=4)
    partial.add_features(items[0], np.ones((3, 4), np.float32))
    partial.add_failure(items[1], "cannot decode")
    partial.close()
    # A run killed half-way through its next video: some of its features and half a progress line.
    folder = partial_dir(final)
    with open(folder / "features.f32", "ab") as f:
        f.write(b"\x00" * 20)
    with open(folder / "progress.jsonl", "ab") as f:
        f.write(b'{"video_id": "train/C/2.mp4", "si')
    reopened = PartialSplit(final, {"x": 1}, feature_dim=4)
    assert np.array_equal(reopened.features(reopened.finished(items[0])), np.ones((3, 4)))
    assert reopened.finished(items[1]).error == "cannot decode"
    assert (folder / "features.f32").stat().st_size == 3 * 4 * 4
    reopened.close()
    # Other settings: the progress is of no use and is dropped.
    assert PartialSplit(final, {"x": 2}, feature_dim=4).records == {}


KILL_AT_THIRD_VIDEO = """
import os, signal, sys
from vidtempo.cli import extract as cli
from vidtempo.features.extract import extractor
original = extractor.FeatureExtractor.sequence_features
calls = []
def dies_during_the_third_video(self, frames):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, frames)
extractor.FeatureExtractor.sequence_features = dies_during_the_third_video
sys.exit(cli.main({argv!r}))
"""


@pytest.mark.slow
def test_killed_extraction_resumes_without_recomputing_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    videos = tmp_path / "videos"
    for i, name in enumerate((BUNNY, BIKES, CARPHONE, BIKES, CARPHONE)):
        link(sample(name), videos / f"train/{'Animation' if name == BUNNY else 'Natural_Content'}/{i}_{name}")
    write_random_bytes(videos / "train/Animation/9_broken.mp4")
    settings = ExtractionSettings(image_size=64, frames_per_video=8)
    options = RunOptions(batch_size=8, workers=1, quiet=True)

    uninterrupted = tmp_path / "uninterrupted"
    extract_features(videos, uninterrupted, settings, options)

    out = tmp_path / "out"
    argv = ["--videos-dir", str(videos), "--output-dir", str(out), *SMALL, "--quiet"]
    killed = run_python(KILL_AT_THIRD_VIDEO.format(argv=argv))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    final = split_path(out, "train", "_multiscale")
    assert not final.exists()  # nothing that looks complete
    assert partial_dir(final).is_dir()

    computed = []
    original = extractor_module.FeatureExtractor.sequence_features
    monkeypatch.setattr(
        extractor_module.FeatureExtractor,
        "sequence_features",
        lambda self, frames: computed.append(1) or original(self, frames),
    )
    report = extract_features(videos, out, settings, options)
    train = report.splits["train"]
    # Sorted order: bunny, broken, bikes | killed during carphone. Resumed: two videos and the broken file's
    # recorded failure; computed again: only the three videos that had not finished.
    assert train.resumed == 3 and train.extracted == 3 and len(train.failed) == 1
    assert len(computed) == 3
    assert not partial_dir(final).exists()

    with h5py.File(final, "r") as resumed, h5py.File(split_path(uninterrupted, "train", "_multiscale"), "r") as ref:
        for name in ("features", "labels", "num_frames", "video_ids"):
            assert np.array_equal(resumed[name][()], ref[name][()]), name
        assert dict(resumed.attrs).keys() == dict(ref.attrs).keys()
        for key in ref.attrs:
            assert np.array_equal(resumed.attrs[key], ref.attrs[key]), key


@pytest.mark.slow
def test_extraction_is_deterministic_across_runs(tmp_path):
    videos = tmp_path / "videos"
    link(sample(BIKES), videos / "train/Natural_Content/bikes.mp4")
    link(sample(BUNNY), videos / "train/Animation/bunny.mp4")
    settings = ExtractionSettings(image_size=64, frames_per_video=8)
    for name in ("a", "b"):
        extract_features(videos, tmp_path / name, settings, RunOptions(batch_size=8, workers=1, quiet=True))
    a = read_split(split_path(tmp_path / "a", "train", "_multiscale"))
    b = read_split(split_path(tmp_path / "b", "train", "_multiscale"))
    assert np.array_equal(a.features, b.features)
    assert a.video_ids == b.video_ids
