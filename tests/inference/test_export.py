"""Export to ONNX and inference with ONNX Runtime: the same numbers as PyTorch, a folder that checks itself,
and a client that needs neither torch nor vidtempo."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from vidtempo.ensemble import Ensemble  # noqa: E402
from vidtempo.errors import VidtempoError  # noqa: E402
from vidtempo.inference import VideoClassifier  # noqa: E402
from vidtempo.features.extract.video import decode_clip  # noqa: E402
from vidtempo.inference.export import CALIBRATION_FRAMES, _quantize_backbone, export_model  # noqa: E402
from vidtempo.inference.onnx_model import EXPORT_CACHE, OnnxBackbone, OnnxEnsemble  # noqa: E402

pytestmark = pytest.mark.slow  # trains a small model and exports it (about 20 s)
CLIENT = Path(__file__).resolve().parents[2] / "examples" / "onnx_client.py"


@pytest.fixture(scope="module")
def exported(video_model, tmp_path_factory):
    return export_model(video_model.checkpoints, tmp_path_factory.mktemp("onnx") / "model")


@pytest.fixture(scope="module")
def clips(video_model):
    return sorted((video_model.videos / "test").glob("*/*.mp4"))[:6]


def _frames(video_model, videos, count=CALIBRATION_FRAMES):
    """uint8 frames of each video, sampled as extraction and calibration sample them."""
    settings = video_model.settings
    return [decode_clip(video, count, settings.image_size, settings.sampling).frames for video in videos]


def test_the_folder_holds_both_graphs_and_a_manifest_of_them(exported, video_model):
    manifest = json.loads((exported / "model.json").read_text())
    ensemble = Ensemble.from_checkpoints(video_model.checkpoints)
    assert manifest["classes"] == ensemble.class_names and manifest["members"] == ensemble.names
    assert manifest["extraction"] == ensemble.extraction.to_dict()
    assert set(manifest["sha256"]) == {"backbone.onnx", "ensemble.onnx"}
    assert manifest["opset"] == 18 and manifest["tta"] is False
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")], "no staging folder left behind"


@pytest.mark.parametrize("batch, steps", [(1, 1), (3, 9), (8, 73), (2, 300)])
def test_ensemble_graph_equals_pytorch_on_batches_of_mixed_lengths(exported, video_model, batch, steps):
    torch_ensemble = Ensemble.from_checkpoints(video_model.checkpoints, precision="fp32")
    onnx_ensemble = OnnxEnsemble(exported)
    generator = torch.Generator().manual_seed(batch * 100 + steps)
    features = torch.randn(batch, steps, torch_ensemble.models[0].config.feature_dim, generator=generator)
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator)
    lengths[0] = steps
    expected, got = torch_ensemble.analyze(features, lengths), onnx_ensemble.analyze(features, lengths)
    for key in ("probs", "member_probs", "attention"):
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), atol=1e-4)
    assert torch.equal(got["probs"].argmax(-1), expected["probs"].argmax(-1))
    for key in ("score", "confidence", "agreement", "distance_ratio"):
        np.testing.assert_allclose(got["trust"][key].numpy(), expected["trust"][key].numpy(), atol=1e-4, rtol=1e-4)


def _declared(path):
    import onnx

    graph = onnx.load(str(path)).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*graph.input, *graph.output]}


def test_both_graphs_declare_batch_steps_and_frames_as_symbolic(exported, video_model):
    from vidtempo.features.extract.backbones import feature_dim

    ensemble, size = Ensemble.from_checkpoints(video_model.checkpoints), video_model.settings.image_size
    dim, classes = ensemble.models[0].config.feature_dim, ensemble.num_classes
    backbone_dim = feature_dim(video_model.settings.backbone)
    assert _declared(exported / "backbone.onnx") == {"frames": ["frames", 3, size, size],
                                                     "features": ["frames", backbone_dim]}
    assert _declared(exported / "ensemble.onnx") == {
        "features": ["batch", "steps", dim], "lengths": ["batch"], "probs": ["batch", classes],
        "member_probs": [len(ensemble), "batch", classes], "attention": ["batch", "steps"], "trust_score": ["batch"],
        "confidence": ["batch"], "agreement": ["batch"], "distance_ratio": ["batch"]}


@pytest.mark.parametrize("count", [1, 64])
def test_the_backbone_graph_equals_pytorch_at_other_frame_counts(exported, video_model, clips, count):
    from vidtempo.features.extract.backbones import build_backbone

    settings = video_model.settings
    frames = torch.cat(_frames(video_model, clips, 16))[:count]
    assert len(frames) == count
    want = build_backbone(settings.backbone, settings.weights, torch.device("cpu"))(frames)
    got = OnnxBackbone(exported / "backbone.onnx")(frames)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4, rtol=1e-3)


def test_video_files_get_the_same_results_in_both_runtimes(exported, video_model, clips):
    torch_results = VideoClassifier.from_checkpoints(video_model.checkpoints, precision="fp32").classify(clips)
    onnx_classifier = VideoClassifier.from_checkpoints(exported, runtime="onnx")
    assert onnx_classifier.runtime == "onnx"
    for want, got in zip(torch_results, onnx_classifier.classify(clips)):
        assert got["predicted_class"] == want["predicted_class"]
        assert got["trust"]["flag"] == want["trust"]["flag"]
        for name, p in want["probabilities"].items():
            assert got["probabilities"][name] == pytest.approx(p, abs=1e-4)


def test_runtime_onnx_on_checkpoints_exports_once_beside_them(video_model, tmp_path, clips):
    checkpoints = shutil.copytree(video_model.checkpoints, tmp_path / "checkpoints")
    first = VideoClassifier.from_checkpoints(checkpoints, runtime="onnx")
    [folder] = list((checkpoints / EXPORT_CACHE).iterdir())
    written = (folder / "ensemble.onnx").stat().st_mtime_ns
    second = VideoClassifier.from_checkpoints(checkpoints, runtime="onnx")
    assert (folder / "ensemble.onnx").stat().st_mtime_ns == written, "the kept export is reused"
    assert first.classify(clips[:1])[0]["probabilities"] == second.classify(clips[:1])[0]["probabilities"]


def test_a_graph_changed_after_export_is_refused(exported, tmp_path):
    copy = shutil.copytree(exported, tmp_path / "model")
    graph = copy / "ensemble.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(VidtempoError, match="ensemble.onnx: SHA-256 differs"):
        OnnxEnsemble(copy)


def test_bad_exports_are_refused_and_write_nothing(video_model, exported, tmp_path):
    with pytest.raises(VidtempoError, match="already exists"):
        export_model(video_model.checkpoints, exported)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(VidtempoError, match="cannot write"):
        export_model(video_model.checkpoints, blocker / "model")
    with pytest.raises(VidtempoError, match="--opset"):
        export_model(video_model.checkpoints, tmp_path / "model", opset=7)
    assert not (tmp_path / "model").exists()


def test_tta_needs_the_torch_runtime(exported):
    with pytest.raises(VidtempoError, match="TTA needs --runtime torch"):
        VideoClassifier.from_checkpoints(exported, runtime="onnx", tta=True)


def test_the_client_needs_neither_torch_nor_vidtempo(exported, video_model, clips):
    blocked = ("import runpy, sys\n"
               "for name in ('torch', 'vidtempo'):\n"
               "    sys.modules[name] = None  # any import of them fails\n"
               f"sys.argv = ['onnx_client.py', *sys.argv[1:]]\n"
               f"runpy.run_path({str(CLIENT)!r}, run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", blocked, str(exported), *map(str, clips)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    want = VideoClassifier.from_checkpoints(video_model.checkpoints, precision="fp32").classify(clips)
    assert [r["predicted_class"] for r in rows] == [w["predicted_class"] for w in want]
    for row, expected in zip(rows, want):
        for name, p in expected["probabilities"].items():
            assert row["probabilities"][name] == pytest.approx(p, abs=1e-4)
        assert row["trust"]["flag"] == expected["trust"]["flag"]


@pytest.fixture(scope="module")
def calibration(video_model):
    """The first training clip of each category: few enough to calibrate in seconds, all kinds of content."""
    return [sorted(folder.glob("*.mp4"))[0] for folder in sorted((video_model.videos / "train").iterdir())]


@pytest.fixture(scope="module")
def int8(video_model, calibration, tmp_path_factory):
    return export_model(video_model.checkpoints, tmp_path_factory.mktemp("int8") / "model", quantize="int8",
                        calibration_videos=calibration)


def _activation_scales(path):
    """The scale of every activation the int8 graph quantises, by name (the ranges calibration measured)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return {node.input[1]: float(constants[node.input[1]]) for node in graph.node
            if node.op_type == "QuantizeLinear" and constants.get(node.input[1], np.zeros(2)).size == 1}


def test_an_int8_backbone_is_calibrated_on_videos_and_named_in_the_manifest(video_model, exported, int8, tmp_path):
    with pytest.raises(VidtempoError, match="--calibration-videos"):
        export_model(video_model.checkpoints, tmp_path / "no_calibration", quantize="int8")
    manifest = json.loads((int8 / "model.json").read_text())
    assert manifest["backbone_precision"] == "int8"
    assert (int8 / "backbone.onnx").stat().st_size < 0.5 * (exported / "backbone.onnx").stat().st_size


def test_int8_features_and_classes_follow_float32(video_model, exported, int8, clips):
    frames = torch.cat(_frames(video_model, clips))
    fp32, quantized = OnnxBackbone(exported / "backbone.onnx")(frames), OnnxBackbone(int8 / "backbone.onnx")(frames)
    cosine = torch.nn.functional.cosine_similarity(fp32, quantized, dim=1)
    # Measured: mean 0.994, min 0.978; with ranges calibrated on black frames instead, the mean is about 0.7.
    assert cosine.mean() > 0.97 and cosine.min() > 0.9, (cosine.mean(), cosine.min())
    want = VideoClassifier.from_checkpoints(exported, runtime="onnx").classify(clips)
    got = VideoClassifier.from_checkpoints(int8, runtime="onnx").classify(clips)
    assert [r["predicted_class"] for r in got] == [r["predicted_class"] for r in want]


def test_int8_ranges_are_those_of_the_calibration_frames(video_model, exported, int8, calibration, clips, tmp_path):
    """Quantising the float32 graph again on the frames of the calibration videos gives the export's scales;
    on frames of other videos, other scales: the export's ranges came from those videos' frames."""
    same, other = tmp_path / "same.onnx", tmp_path / "other.onnx"
    for path in (same, other):
        shutil.copy(exported / "backbone.onnx", path)
    _quantize_backbone(same, _frames(video_model, calibration))
    _quantize_backbone(other, _frames(video_model, clips[:2]))
    scales, same_scales, other_scales = (_activation_scales(p) for p in (int8 / "backbone.onnx", same, other))
    assert scales and scales.keys() == same_scales.keys() == other_scales.keys()
    np.testing.assert_allclose([same_scales[k] for k in scales], list(scales.values()), rtol=1e-5)
    assert any(abs(other_scales[k] - v) > 0.01 * v for k, v in scales.items())


def test_calibration_videos_are_spread_over_the_whole_folder():
    from vidtempo.inference.export import spread_evenly

    names = [f"{category}/{i:03d}.mp4" for category in "ABCD" for i in range(50)]
    picked = spread_evenly(names, 64)
    assert len(set(picked)) == 64 and picked[0] == names[0] and picked[-1] == names[-1]
    assert {name[0] for name in picked} == set("ABCD") and sum(name[0] == "D" for name in picked) >= 15
    assert spread_evenly(names[:5], 64) == names[:5]


def test_calibration_videos_that_do_not_decode_are_refused_in_one_line(video_model, tmp_path):
    from helpers import assert_refused, vidtempo

    folder = tmp_path / "calibration"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (folder / name).write_text("not a video\n")
    result = vidtempo("export", "--checkpoints", video_model.checkpoints, "--output", tmp_path / "model",
                      "--quantize", "int8", "--calibration-videos", folder)
    assert_refused(result, str(folder), "none of the 2 calibration videos")
    assert not (tmp_path / "model").exists()
    for bad, says in ((tmp_path / "missing", "is not a folder"), (tmp_path / "empty", "holds no video files")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        refused = vidtempo("export", "--checkpoints", video_model.checkpoints, "--output", tmp_path / "model",
                           "--quantize", "int8", "--calibration-videos", bad)
        assert_refused(refused, f"{bad}: --calibration-videos {says}")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left behind"


def test_evaluate_scores_the_exported_model_as_pytorch_scores_the_checkpoints(exported, video_model, tmp_path):
    from helpers import assert_refused, vidtempo

    common = ["evaluate", "--features-dir", video_model.features, "--split", "test"]
    onnx = vidtempo(*common, "--checkpoints", exported, "--runtime", "onnx", "--output", tmp_path / "onnx.json")
    assert onnx.returncode == 0, onnx.stderr
    torch_run = vidtempo(*common, "--checkpoints", video_model.checkpoints, "--precision", "fp32",
                         "--output", tmp_path / "torch.json")
    assert torch_run.returncode == 0, torch_run.stderr
    ours, theirs = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("onnx", "torch"))
    assert ours["runtime"] == "onnx" and ours["classes"] == theirs["classes"]
    assert ours["plain"]["ensemble"] == theirs["plain"]["ensemble"]
    assert ours["plain"]["members"] == theirs["plain"]["members"]
    assert abs(ours["calibration"]["ece_after"] - theirs["calibration"]["ece_after"]) < 1e-4
    assert_refused(vidtempo(*common, "--checkpoints", exported, "--runtime", "onnx", "--tta"), "--tta")
