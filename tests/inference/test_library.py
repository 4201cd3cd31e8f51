"""Classifying a library: one row per video under a folder, written as it goes, resumable, sharded."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest

from vidtempo.inference.classify import VideoClassifier
from vidtempo.errors import VidtempoError
from vidtempo.inference.library import PredictionWriter, error_row, row_fields
from vidtempo.inference.timeline import DEFAULT_SWITCH_PENALTY

CLASSES = ["Animation", "Gaming"]


def _row(path: str) -> dict:
    row = error_row(path, "placeholder", CLASSES)
    row.update(predicted_class="Gaming", confidence=0.75, prob_Animation=0.25, prob_Gaming=0.75, trust_score=0.5,
               trust_flag="ok", error="")
    return row


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_writer_drops_a_half_written_last_row_and_knows_the_complete_ones(tmp_path, suffix):
    out = tmp_path / f"preds{suffix}"
    with PredictionWriter(out, CLASSES) as writer:
        writer.write(_row("a.mp4"))
        writer.write(_row("b.mp4"))
    complete = out.read_bytes()
    out.write_bytes(complete + b"c.mp4,Gam" if suffix == ".csv" else complete + b'{"path": "c.mp4", "pred')
    with PredictionWriter(out, CLASSES) as writer:
        assert writer.done == {"a.mp4", "b.mp4"}
        writer.write(_row("c.mp4"))
    text = out.read_text()
    if suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        assert text.count("path,predicted_class") == 1
    else:
        rows = [json.loads(line) for line in text.splitlines()]
    assert [r["path"] for r in rows] == ["a.mp4", "b.mp4", "c.mp4"]
    assert list(rows[0]) == row_fields(CLASSES)


def test_writer_refuses_a_file_of_other_classes_and_other_formats(tmp_path):
    out = tmp_path / "preds.csv"
    with PredictionWriter(out, CLASSES) as writer:
        writer.write(_row("a.mp4"))
    with pytest.raises(VidtempoError, match="other columns"):
        PredictionWriter(out, ["Animation", "Natural"])
    with pytest.raises(VidtempoError, match="must end in .csv or .jsonl"):
        PredictionWriter(tmp_path / "preds.txt", CLASSES)


def test_error_rows_keep_the_error_on_one_line():
    row = error_row("x.mp4", "first line\nsecond line", CLASSES)
    assert row["error"] == "first line second line" and row["predicted_class"] == ""


# ------------------------------------------------------------------------------------------ real videos
@pytest.fixture(scope="module")
def library(video_model, tmp_path_factory):
    """Five real clips in nested folders and a file that is not a video."""
    root = tmp_path_factory.mktemp("library")
    clips = sorted(video_model.videos.rglob("*.mp4"))[::3][:5]
    for i, clip in enumerate(clips):
        target = root / ("deep/er" if i % 2 else "top") / f"clip{i}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, target)
    (root / "top" / "broken.mp4").write_bytes(b"not a video at all")
    (root / "notes.txt").write_text("not listed: not a video file")
    return root


def _predict(video_model, library, output, *extra):
    return subprocess.run([sys.executable, "-m", "vidtempo", "predict", "--videos-dir", str(library), "--checkpoints",
                           str(video_model.checkpoints), "--output", str(output), "--quiet", *extra],
                          capture_output=True, text=True, timeout=600)


def _read(path):
    if path.suffix == ".csv":
        return list(csv.DictReader(path.read_text().splitlines()))
    return [json.loads(line) for line in path.read_text().splitlines()]


def _video_paths(library):
    return sorted(p.relative_to(library).as_posix() for p in library.rglob("*.mp4"))


@pytest.fixture(scope="module")
def first_run(video_model, library, tmp_path_factory):
    output = tmp_path_factory.mktemp("preds") / "preds.csv"
    result = _predict(video_model, library, output)
    assert result.returncode == 0, result.stderr
    return output


@pytest.mark.slow
def test_every_video_gets_one_row_and_a_broken_file_an_error_row(first_run, library, video_model):
    rows = _read(first_run)
    assert sorted(r["path"] for r in rows) == _video_paths(library)
    classes = VideoClassifier.from_checkpoints(video_model.checkpoints).categories
    for row in rows:
        if row["path"] == "top/broken.mp4":
            assert row["predicted_class"] == "" and "top/broken.mp4" in row["error"]
        else:
            assert row["error"] == "" and row["predicted_class"] in classes
            assert sum(float(row[f"prob_{c}"]) for c in classes) == pytest.approx(1.0, abs=1e-4)
            assert row["trust_flag"] in ("ok", "uncertain", "out_of_distribution")


@pytest.mark.slow
def test_rerun_after_a_kill_adds_only_the_missing_rows(first_run, library, video_model, tmp_path):
    output = tmp_path / "preds.csv"
    lines = first_run.read_text().splitlines(keepends=True)
    # As a kill leaves it: the last row gone, the one before it half written.
    output.write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2])
    result = _predict(video_model, library, output)
    assert result.returncode == 0, result.stderr
    assert "2 videos classified" in result.stderr and f"{len(lines) - 3} already there" in result.stderr
    rows = _read(output)
    assert sorted(r["path"] for r in rows) == _video_paths(library)
    again = _predict(video_model, library, output)
    assert again.returncode == 0 and "0 videos classified" in again.stderr
    assert len(_read(output)) == len(rows)


@pytest.mark.slow
def test_shards_together_cover_every_video_once(library, video_model, tmp_path):
    paths = []
    for shard in ("1/2", "2/2"):
        output = tmp_path / f"shard{shard[0]}.jsonl"
        result = _predict(video_model, library, output, "--shard", shard)
        assert result.returncode == 0, result.stderr
        paths += [r["path"] for r in _read(output)]
    assert sorted(paths) == _video_paths(library)


@pytest.mark.slow
def test_the_iterator_yields_the_rows_the_command_writes(first_run, library, video_model):
    classifier = VideoClassifier.from_checkpoints(video_model.checkpoints)
    rows = {r["path"]: r for r in classifier.classify_library(library)}
    written = {r["path"]: r for r in _read(first_run)}
    assert rows.keys() == written.keys()
    for path, row in rows.items():
        assert list(row) == list(written[path])
        assert row["predicted_class"] == written[path]["predicted_class"]
        assert row["error"] == written[path]["error"]
        if not row["error"]:
            assert row["confidence"] == pytest.approx(float(written[path]["confidence"]), abs=1e-5)


@pytest.mark.slow
def test_bf16_and_fp32_predict_the_same_classes(library, video_model):
    predicted = {}
    for precision in ("bf16", "fp32"):
        classifier = VideoClassifier.from_checkpoints(video_model.checkpoints, precision=precision)
        predicted[precision] = {r["path"]: r["predicted_class"] for r in classifier.classify_library(library)}
    assert predicted["bf16"] == predicted["fp32"]


@pytest.mark.slow  # a command line in a new process
def test_predict_usage_errors_are_one_line(tmp_path):
    for args in (["--videos-dir", str(tmp_path)], [str(tmp_path / "a.mp4"), "--videos-dir", str(tmp_path)]):
        result = subprocess.run([sys.executable, "-m", "vidtempo", "predict", *args, "--checkpoints", str(tmp_path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------- timelines
def _segments(start, end):
    return [{"start_s": start, "end_s": end, "class": "Gaming", "confidence": 0.75, "windows": 3}]


def _timeline_row(path: str) -> dict:
    row = _row(path)
    row.update(duration_s=4.0, window_seconds=2.0, hop_seconds=0.5, switch_penalty=3.0, segments=_segments(0.0, 4.0))
    return row


def test_timeline_writer_keeps_segments_and_resumes_like_plain_rows(tmp_path):
    out = tmp_path / "preds.jsonl"
    with PredictionWriter(out, CLASSES, timeline=True) as writer:
        writer.write(_timeline_row("a.mp4"))
        writer.write(error_row("b.mp4", "cannot decode", CLASSES, timeline=True))
    out.write_bytes(out.read_bytes() + b'{"path": "c.mp4", "segments": [{"sta')
    with PredictionWriter(out, CLASSES, timeline=True) as writer:
        assert writer.done == {"a.mp4", "b.mp4"}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert list(rows[0]) == row_fields(CLASSES, timeline=True)
    assert rows[0]["segments"] == _segments(0.0, 4.0)
    assert rows[1]["segments"] == [] and rows[1]["predicted_class"] == ""


def test_timeline_writer_refuses_csv_and_a_file_of_plain_rows(tmp_path):
    with pytest.raises(VidtempoError, match="--timeline.*jsonl"):
        PredictionWriter(tmp_path / "preds.csv", CLASSES, timeline=True)
    plain = tmp_path / "plain.jsonl"
    with PredictionWriter(plain, CLASSES) as writer:
        writer.write(_row("a.mp4"))
    with pytest.raises(VidtempoError, match="line 1 is not a prediction row"):
        PredictionWriter(plain, CLASSES, timeline=True)


@pytest.mark.slow  # a command line in a new process
def test_timeline_with_a_csv_output_is_refused_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vidtempo", "predict", "--videos-dir", str(tmp_path),
                             "--checkpoints", str(tmp_path / "none"), "--output", str(tmp_path / "preds.csv"),
                             "--timeline"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "--timeline" in result.stderr and "--output" in result.stderr
    assert not (tmp_path / "preds.csv").exists()


@pytest.fixture(scope="module")
def timeline_library(video_model, tmp_path_factory):
    """A video that changes class halfway (three Animation clips, then three Flat_Content), two single clips
    and a file that is not a video."""
    from vidtempo.demo.montage import concatenate_clips

    root = tmp_path_factory.mktemp("timeline_library")
    firsts, seconds = (sorted((video_model.videos / "test" / c).glob("*.mp4"))[:3]
                       for c in ("Animation", "Flat_Content"))
    (root / "long").mkdir()
    _, bounds = concatenate_clips(firsts + seconds, root / "long" / "two_classes.mp4")
    for i, clip in enumerate((firsts[0], seconds[0])):
        shutil.copy(clip, root / f"clip{i}.mp4")
    (root / "broken.mp4").write_bytes(b"not a video at all")
    return root, bounds[-1][1]


@pytest.fixture(scope="module")
def timeline_run(video_model, timeline_library, tmp_path_factory):
    library, _ = timeline_library
    output = tmp_path_factory.mktemp("timeline_preds") / "preds.jsonl"
    # fp32: bf16 results move a little with the shape of the batch, and a plain run batches several videos.
    result = _predict(video_model, library, output, "--timeline", "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    return output


@pytest.mark.slow
def test_timeline_rows_have_segments_that_cover_each_video(timeline_run, timeline_library, video_model):
    from vidtempo.features.extract.video import video_seconds

    library, long_seconds = timeline_library
    rows = {r["path"]: r for r in _read(timeline_run)}
    assert sorted(rows) == _video_paths(library)
    assert rows["broken.mp4"]["segments"] == [] and "broken.mp4" in rows["broken.mp4"]["error"]
    for path, row in rows.items():
        if path == "broken.mp4":
            continue
        segments = row["segments"]
        assert row["error"] == "" and segments, path
        assert segments[0]["start_s"] == 0 and all(a["end_s"] == b["start_s"] for a, b in zip(segments, segments[1:]))
        assert segments[-1]["end_s"] == row["duration_s"] == pytest.approx(video_seconds(library / path), abs=0.05)
        assert row["window_seconds"] == pytest.approx(16 / 25, abs=0.05)
        assert row["switch_penalty"] == DEFAULT_SWITCH_PENALTY
    assert rows["long/two_classes.mp4"]["duration_s"] == pytest.approx(long_seconds, abs=0.05)
    assert [s["class"] for s in rows["long/two_classes.mp4"]["segments"]] == ["Animation", "Flat_Content"]


@pytest.mark.slow
def test_timeline_rows_give_the_whole_video_result_of_a_plain_run(timeline_run, timeline_library, video_model):
    # The whole-video fields come from the frames the timeline decoded, embedded in the same precision.
    library, _ = timeline_library
    classifier = VideoClassifier.from_checkpoints(video_model.checkpoints, precision="fp32")
    plain = {r["path"]: r for r in classifier.classify_library(library)}
    timeline = {r["path"]: r for r in classifier.classify_library(library, timeline=True)}
    written = {r["path"]: r for r in _read(timeline_run)}
    assert timeline.keys() == plain.keys() == written.keys()
    for path, row in timeline.items():
        assert list(row) == list(written[path]) and row["segments"] == written[path]["segments"]
        assert row["predicted_class"] == plain[path]["predicted_class"]
        if not row["error"]:
            assert row["confidence"] == pytest.approx(plain[path]["confidence"], abs=1e-5)
            assert row["trust_score"] == pytest.approx(plain[path]["trust_score"], abs=1e-5)


@pytest.mark.slow
def test_timeline_rerun_after_a_kill_adds_only_the_missing_rows(timeline_run, timeline_library, video_model, tmp_path):
    library, _ = timeline_library
    output = tmp_path / "preds.jsonl"
    lines = timeline_run.read_text().splitlines(keepends=True)
    output.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    result = _predict(video_model, library, output, "--timeline", "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    assert "1 videos classified" in result.stderr and f"{len(lines) - 1} already there" in result.stderr
    rows = _read(output)
    assert sorted(r["path"] for r in rows) == _video_paths(library)
    assert rows[-1]["segments"] == json.loads(lines[-1])["segments"]


@pytest.mark.slow
def test_timeline_shards_together_cover_every_video_once(timeline_library, video_model, tmp_path):
    library, _ = timeline_library
    paths = []
    for shard in ("1/2", "2/2"):
        output = tmp_path / f"shard{shard[0]}.jsonl"
        result = _predict(video_model, library, output, "--timeline", "--shard", shard, "--window-seconds", "0.4")
        assert result.returncode == 0, result.stderr
        rows = _read(output)
        assert all(r["window_seconds"] == 0.4 for r in rows if not r["error"])
        paths += [r["path"] for r in rows]
    assert sorted(paths) == _video_paths(library)
