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
from vidtempo.inference.export import export_model  # noqa: E402
from vidtempo.inference.onnx_model import EXPORT_CACHE, OnnxEnsemble  # noqa: E402

pytestmark = pytest.mark.slow  # trains a small model and exports it (about 20 s)
CLIENT = Path(__file__).resolve().parents[2] / "examples" / "onnx_client.py"


@pytest.fixture(scope="module")
def exported(video_model, tmp_path_factory):
    return export_model(video_model.checkpoints, tmp_path_factory.mktemp("onnx") / "model")


@pytest.fixture(scope="module")
def clips(video_model):
    return sorted((video_model.videos / "test").glob("*/*.mp4"))[:6]


def test_the_folder_holds_both_graphs_and_a_manifest_of_them(exported, video_model):
    manifest = json.loads((exported / "model.json").read_text())
    ensemble = Ensemble.from_checkpoints(video_model.checkpoints)
    assert manifest["classes"] == ensemble.class_names and manifest["members"] == ensemble.names
    assert manifest["extraction"] == ensemble.extraction.to_dict()
    assert set(manifest["sha256"]) == {"backbone.onnx", "ensemble.onnx"}
    assert manifest["opset"] == 18 and manifest["tta"] is False
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")], "no staging folder left behind"


@pytest.mark.parametrize("batch, steps", [(1, 1), (3, 9), (8, 73)])
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


def test_an_int8_backbone_is_calibrated_on_videos_and_named_in_the_manifest(video_model, exported, tmp_path, clips):
    with pytest.raises(VidtempoError, match="--calibration-videos"):
        export_model(video_model.checkpoints, tmp_path / "no_calibration", quantize="int8")
    calibration = sorted((video_model.videos / "train").glob("*/*.mp4"))
    folder = export_model(video_model.checkpoints, tmp_path / "int8", quantize="int8", calibration_videos=calibration)
    manifest = json.loads((folder / "model.json").read_text())
    assert manifest["backbone_precision"] == "int8"
    assert (folder / "backbone.onnx").stat().st_size < 0.5 * (exported / "backbone.onnx").stat().st_size
    int8_results = VideoClassifier.from_checkpoints(folder, runtime="onnx").classify(clips)
    assert all("error" not in r and abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in int8_results)


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
