"""Classifying video files: same extraction as training, full results, batched passes, bad files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vidtempo.inference.classify import VideoClassifier
from vidtempo.inference.predictor import step_frame_matrix
from vidtempo.errors import VidtempoError
from vidtempo.features.store import read_split, split_path


@pytest.fixture(scope="module")
def classifier(video_model):
    return VideoClassifier.from_checkpoints(video_model.checkpoints)


@pytest.mark.slow
def test_settings_travel_from_features_to_checkpoints(classifier, video_model):
    assert classifier.settings.frames_per_video == 8 and classifier.settings.image_size == 96
    assert classifier.settings.multi_scale and classifier.settings.backbone == "efficientnet_lite0"
    test = read_split(split_path(video_model.features, "test", "_multiscale"))
    row = 0
    clip = video_model.videos / test.video_ids[row]
    # Extraction runs the CNN in fp32; so does a classifier asked for fp32, which then reproduces the features.
    fp32 = VideoClassifier.from_checkpoints(video_model.checkpoints, precision="fp32")
    features = fp32.prepare(clip).features
    np.testing.assert_allclose(features, test.features[row, : test.num_frames[row]], atol=1e-5)


@pytest.mark.slow
def test_a_result_has_everything(classifier, video_model):
    clip = sorted((video_model.videos / "test" / "Natural_Content").glob("*.mp4"))[0]
    result = classifier.classify_file(clip, thumbnails=True)
    assert result["predicted_class"] in classifier.categories
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-5
    assert result["confidence"] == max(result["probabilities"].values())
    assert set(result["members"]) == {"ensemble_model_1", "ensemble_model_2"}
    frames = result["frames"]
    assert len(frames) == 8, "8 frames sampled from a 16-frame clip"
    times = [f["time_s"] for f in frames]
    assert times == sorted(times) and times[0] == 0.0 and times[-1] == pytest.approx(15 / 25)
    assert abs(sum(f["attention"] for f in frames) - 1) < 1e-5
    assert frames[0]["thumbnail"].startswith("data:image/jpeg;base64,")
    assert set(result["trust"]) == {"score", "flag", "reasons", "confidence", "member_agreement", "distance_ratio"}
    assert (result["trust"]["flag"] == "ok") == (result["trust"]["reasons"] == [])
    assert result["trust"]["flag"] in ("ok", "uncertain", "out_of_distribution")
    assert {"decode_s", "cnn_s", "ensemble_s", "total_s"} <= set(result["timings_s"])


@pytest.mark.slow
def test_a_video_is_opened_once_per_classification(classifier, video_model, monkeypatch):
    import av

    clip = sorted((video_model.videos / "test" / "Natural_Content").glob("*.mp4"))[0]
    opened = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: opened.append(args[0]) or real_open(*args, **kwargs))
    result = classifier.classify_file(clip, thumbnails=True)
    assert opened == [], "the video is decoded in a decoder process, never in the caller's"
    # Decoded here instead (workers=0), the one decode can be watched: a single open of the container.
    monkeypatch.setattr(classifier.extractor, "workers", 0)
    here = classifier.classify_file(clip, thumbnails=True)
    assert opened == [str(clip)], "frame count, frames and frame rate come from one open of the container"
    assert result["frames"][-1]["time_s"] == pytest.approx(15 / 25)
    assert here["probabilities"] == pytest.approx(result["probabilities"], abs=1e-6)


@pytest.mark.slow
def test_every_view_of_every_video_in_one_pass_per_member(classifier, video_model, monkeypatch):
    clips = sorted((video_model.videos / "test" / "Animation").glob("*.mp4"))[:3]
    calls = []
    for model in classifier.ensemble.models:
        original = model.encode
        monkeypatch.setattr(model, "encode", lambda x, lengths, _o=original: calls.append(x.shape[0]) or _o(x, lengths))
    classifier.tta = True
    try:
        results = classifier.classify(clips)
    finally:
        classifier.tta = False
    assert len(results) == 3 and all("error" not in r for r in results)
    views = len(classifier.ensemble.settings.tta_views)  # the views chosen on validation
    assert calls == [3 * views] * 2, "every view of the 3 videos in a single pass through each of the 2 members"


@pytest.mark.slow
def test_unreadable_files_are_named_and_the_rest_classified(classifier, video_model, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01" * 5000)
    clip = sorted((video_model.videos / "test" / "Flat_Content").glob("*.mp4"))[0]
    results = classifier.classify([tmp_path / "missing.mp4", garbage, clip])
    assert "missing.mp4" in results[0]["error"] and "garbage.mp4" in results[1]["error"]
    assert results[2]["predicted_class"] in classifier.categories
    with pytest.raises(VidtempoError, match="garbage.mp4"):
        classifier.classify_file(garbage)


@pytest.mark.slow
def test_predict_command(video_model, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video")
    clip = sorted((video_model.videos / "test" / "Animation").glob("*.mp4"))[0]
    result = subprocess.run([sys.executable, "-m", "vidtempo", "predict", str(clip), str(tmp_path / "missing.mp4"),
                             str(garbage), "--checkpoints", str(video_model.checkpoints), "--json", "--tta"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and "missing.mp4" in errors[0] and "garbage.mp4" in errors[1]
    assert "Traceback" not in result.stderr
    printed = json.loads(result.stdout)
    assert len(printed) == 1 and printed[0]["video"] == str(clip) and printed[0]["tta"] is True


@pytest.mark.slow
def test_checkpoints_without_extraction_settings_cannot_classify_files(small_features, tmp_path):
    from conftest import TINY_MODEL, TINY_TRAINING
    from vidtempo import EnhancedTemporalModelTrainer

    trainer = EnhancedTemporalModelTrainer(small_features, tmp_path, device="cpu", model_config=TINY_MODEL,
                                           training_config=TINY_TRAINING, quiet=True)
    trainer.train_single_model(num_epochs=1, model_name="m", results_dir=tmp_path / "r")
    with pytest.raises(VidtempoError, match="extraction settings"):
        VideoClassifier.from_checkpoints(tmp_path)


def test_step_frame_matrix_spreads_multiscale_steps():
    matrix = step_frame_matrix(64, (1.0, 0.85, 1.15))
    assert matrix.shape == (73, 64)
    np.testing.assert_allclose(matrix.sum(1), 1.0, rtol=1e-6)
    assert matrix[72].nonzero()[0].tolist() == [63], "steps past 64 hold only the 1.15-scale frames"
    assert np.array_equal(step_frame_matrix(5, (1.0,)), np.eye(5, dtype=np.float32))
