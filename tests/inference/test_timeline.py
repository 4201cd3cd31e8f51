"""Content timeline: window placement, segments, change placement and smoothing; one real-video run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vidtempo.errors import VidtempoError
from vidtempo.inference.timeline import build_timeline, merge_segments, plan_windows, smooth_labels, window_spans

NAMES = ["A", "B", "C"]


def _probs(labels, confidence=0.9):
    probs = np.full((len(labels), len(NAMES)), (1 - confidence) / (len(NAMES) - 1))
    probs[np.arange(len(labels)), labels] = confidence
    return probs


def test_windows_sample_like_training_and_share_frames():
    # 10 s at 25 fps, 2 s windows of 16 frames, hop 0.5 s.
    plan = plan_windows(250, 25.0, 2.0, 0.5, 16)
    assert plan.rows.shape[1] == 16
    spans = plan.grid[plan.rows]
    # Each window spans about the window's 50 frames, evenly (training: linspace(0, 49, 16) -> steps of 3.27).
    assert np.all(np.abs((spans[:, -1] - spans[:, 0]) - 49) <= 1)
    assert np.all(np.diff(spans, axis=1) >= 3) and np.all(np.diff(spans, axis=1) <= 4)
    # Hop: whole grid steps close to 0.5 s; consecutive windows overlap on the same frames.
    assert np.all(np.abs(np.diff(spans[:-1, 0]) - 12.5) <= 2)
    assert set(spans[0]) & set(spans[1])
    # The grid is each frame once, and far fewer frames than windows x 16.
    assert len(np.unique(plan.grid)) == len(plan.grid) < plan.rows.size / 3
    # Windows run from the first frame to the last.
    bounds = plan.window_bounds()
    assert bounds[0, 0] == 0.0 and bounds[-1, 1] == pytest.approx(10.0, abs=0.05)


def test_short_video_is_one_window_sampled_as_a_training_video():
    plan = plan_windows(30, 25.0, 2.0, 0.5, 16)
    assert plan.rows.shape == (1, 16)
    assert plan.grid.tolist() == np.linspace(0, 29, 16).astype(int).tolist()


def test_window_shorter_than_its_frames_samples_every_frame():
    plan = plan_windows(100, 10.0, 0.8, 0.2, 16)
    assert plan.rows.shape[1] == 8
    assert plan.grid.tolist() == list(range(100))


@pytest.mark.parametrize("window, hop", [(0, 1), (1, 0), (-2, 1)])
def test_bad_window_or_hop_is_refused(window, hop):
    with pytest.raises(VidtempoError, match="window-seconds and --hop-seconds"):
        plan_windows(100, 25.0, window, hop, 16)


def test_segments_tile_the_video_and_changes_fall_between_disagreeing_windows():
    bounds = np.array([[0, 2], [1, 3], [2, 4], [3, 5], [4, 6]], dtype=float)
    spans = window_spans(bounds, 6.5)
    assert spans[0, 0] == 0 and spans[-1, 1] == 6.5
    assert np.array_equal(spans[1:, 0], spans[:-1, 1])
    segments = merge_segments(np.array([0, 0, 1, 1, 1]), _probs([0, 0, 1, 1, 1]), spans, NAMES)
    assert [(s["class"], s["start_s"], s["end_s"], s["windows"]) for s in segments] == [
        ("A", 0.0, 2.5, 2), ("B", 2.5, 6.5, 3)]
    # The change sits halfway between the centres of windows 1 (2 s) and 2 (3 s).
    assert segments[0]["confidence"] == pytest.approx(0.9)


def test_segment_confidence_is_the_mean_probability_of_its_class():
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1]])
    segments = merge_segments(np.array([0, 0]), probs, window_spans(np.array([[0, 1], [1, 2]], float), 2), NAMES)
    assert segments[0]["confidence"] == pytest.approx(0.75)


def test_smoothing_removes_a_single_window_flicker_but_keeps_real_changes():
    labels = [0, 0, 0, 1, 0, 0, 2, 2, 2, 2]
    probs = _probs(labels, confidence=0.8)
    assert smooth_labels(probs, 0).tolist() == labels
    assert smooth_labels(probs, 3.0).tolist() == [0] * 6 + [2] * 4


def test_smoothing_keeps_a_flicker_confident_enough_to_pay_for_two_changes():
    labels = [0, 0, 0, 1, 0, 0]
    probs = _probs(labels, confidence=0.8)
    probs[3] = [1e-4, 1 - 2e-4, 1e-4]
    assert smooth_labels(probs, 3.0).tolist() == labels


def test_timeline_reports_smoothed_and_raw_segments_and_window_probabilities():
    labels = [0, 0, 1, 0, 0]
    bounds = np.array([[i, i + 2] for i in range(5)], dtype=float)
    timeline = build_timeline(_probs(labels, 0.7), bounds, 6.0, NAMES, switch_penalty=3.0)
    assert [s["class"] for s in timeline["segments"]] == ["A"]
    assert [s["class"] for s in timeline["raw_segments"]] == ["A", "B", "A"]
    assert timeline["segments"][0]["start_s"] == 0 and timeline["segments"][0]["end_s"] == 6.0
    assert len(timeline["windows"]) == 5
    assert timeline["windows"][2]["probabilities"]["B"] == pytest.approx(0.7)


def test_selected_frames_are_decoded_and_the_duration_read_from_the_header(tmp_path):
    from vidtempo.demo.videos import write_clip
    from vidtempo.features.extract.video import decode_selected, video_seconds

    frames = [np.full((64, 64, 3), 8 * i, dtype=np.uint8) for i in range(20)]
    write_clip(tmp_path / "ramp.mp4", frames, fps=25)
    assert video_seconds(tmp_path / "ramp.mp4") == pytest.approx(0.8, abs=0.05)
    seen = []
    clip = decode_selected(tmp_path / "ramp.mp4", lambda total, rate: seen.append((total, rate)) or [0, 7, 19], 32)
    assert seen == [(20, 25.0)] and clip.indices == [0, 7, 19] and clip.frames.shape == (3, 3, 32, 32)
    # Frames are a brightness ramp: the decoded ones are the ones asked for.
    assert clip.frames[1].float().mean() == pytest.approx(56, abs=6)
    assert video_seconds(tmp_path / "missing.mp4") is None


# ------------------------------------------------------------------------------------------- real videos
def _concatenate(clips, output):
    from vidtempo.demo.montage import concatenate_clips

    return concatenate_clips(clips, output)


@pytest.mark.slow
def test_timeline_of_two_classes_finds_the_change(video_model, tmp_path):
    from vidtempo.inference.classify import VideoClassifier

    classifier = VideoClassifier.from_checkpoints(video_model.checkpoints)
    firsts, seconds = (sorted((video_model.videos / "test" / c).glob("*.mp4"))[:3]
                       for c in ("Animation", "Flat_Content"))
    video, bounds = _concatenate(firsts + seconds, tmp_path / "two.mp4")
    change = bounds[3][0]
    result = classifier.timeline(video)
    timeline = result["timeline"]
    window = timeline["window_seconds"]
    assert window == pytest.approx(16 / 25, abs=0.05)  # the demo clips' duration, recorded at extraction
    segments = timeline["segments"]
    assert segments[0]["start_s"] == 0 and segments[-1]["end_s"] == pytest.approx(bounds[-1][1], abs=0.05)
    assert all(a["end_s"] == b["start_s"] for a, b in zip(segments, segments[1:]))
    assert [s["class"] for s in segments] == ["Animation", "Flat_Content"]
    assert abs(segments[0]["end_s"] - change) <= window
    # Each frame is embedded once, however many windows use it.
    assert timeline["frames_embedded"] <= bounds[-1][1] * 25 + 1

    plot = tmp_path / "timeline.png"
    run = subprocess.run([sys.executable, "-m", "vidtempo", "predict", str(video), "--checkpoints",
                          str(video_model.checkpoints), "--timeline", "--json", "--plot", str(plot)],
                         capture_output=True, text=True, env=os.environ)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)[0]["timeline"]
    assert [s["class"] for s in printed["segments"]] == ["Animation", "Flat_Content"]
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_timeline_gives_the_plain_result_in_the_same_precision(video_model):
    from vidtempo.inference.classify import VideoClassifier

    classifier = VideoClassifier.from_checkpoints(video_model.checkpoints, precision="bf16")
    clip = sorted((video_model.videos / "test" / "Animation").glob("*.mp4"))[0]
    plain, timeline = classifier.classify_file(clip), classifier.timeline(clip)
    # The same frames through the CNN in the same precision: the same whole-video probabilities.
    for name, p in plain["probabilities"].items():
        assert timeline["probabilities"][name] == pytest.approx(p, abs=1e-6)


@pytest.mark.parametrize("flags, message", [
    (["--timeline", "--window-seconds", "0"], "--window-seconds must be positive, got 0.0"),
    (["--timeline", "--hop-seconds", "-1"], "--hop-seconds must be positive, got -1.0"),
    (["--timeline", "--switch-penalty", "-1"], "--switch-penalty must be 0 or more"),
    (["--plot", "t.png"], "--plot needs --timeline"),
])
@pytest.mark.slow  # a command line in a new process
def test_bad_timeline_options_are_refused_in_one_line(tmp_path, flags, message):
    run = subprocess.run([sys.executable, "-m", "vidtempo", "predict", "clip.mp4", "--checkpoints",
                          str(tmp_path / "none"), *flags], capture_output=True, text=True, env=os.environ, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.startswith(f"vidtempo: error: {message}") and run.stderr.count("\n") == 1
    assert "Traceback" not in run.stderr and not (tmp_path / "t.png").exists()
