"""An exported model folder (export.py) run by ONNX Runtime, in the places a PyTorch ensemble goes.

``OnnxEnsemble`` answers what ``VideoPredictor`` and the timeline ask of an ``Ensemble`` (``analyze``,
``predict_proba``, classes, extraction settings); ``OnnxBackbone`` stands in for the CNN of a
``FeatureExtractor``. ``resolve_runtime`` picks the runtime for ``--runtime auto|torch|onnx``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import VidtempoError
from ..features.extract.settings import ExtractionSettings
from .export import BACKBONE_ONNX, ENSEMBLE_ONNX, FORMAT_VERSION, MODEL_JSON, export_model

RUNTIMES = ("auto", "torch", "onnx")
# Where ``--runtime onnx`` keeps the export of a checkpoint folder, keyed by what the export depends on.
EXPORT_CACHE = ".onnx"
# Part of that key: a kept export written before a change of the exported graph is made again. 2: the graph
# takes any number of steps (earlier ones could hold the traced example's 5 steps in their shapes).
EXPORT_REVISION = 2


def is_exported_model(path: Any) -> bool:
    return isinstance(path, (str, os.PathLike)) and (Path(path) / MODEL_JSON).is_file()


def onnx_runtime_installed() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_runtime(runtime: str, checkpoints: Any, device: str) -> str:
    """``torch`` or ``onnx``. ``auto`` runs an exported folder with ONNX Runtime; checkpoints with PyTorch
    where it runs inference in bf16 (a GPU, or a CPU that multiplies bf16 in hardware: there PyTorch was the
    faster, benchmarks/RESULTS.md), else with ONNX Runtime when it is installed (1.28x PyTorch's float32)."""
    if runtime not in RUNTIMES:
        raise VidtempoError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if is_exported_model(checkpoints):
        if runtime == "torch":
            raise VidtempoError(f"{checkpoints}: an exported ONNX model runs with --runtime onnx (or auto)")
        return "onnx"
    if runtime == "auto":
        from ..ensemble.ensemble import inference_amp_dtype
        from ..runtime import resolve_device

        fast_in_torch = inference_amp_dtype(resolve_device(device)) is not None
        return "torch" if fast_in_torch or not onnx_runtime_installed() else "onnx"
    if runtime == "onnx" and not onnx_runtime_installed():
        raise VidtempoError("--runtime onnx needs the onnx extra: pip install 'vidtempo[onnx]'")
    return runtime


def exported_folder(checkpoints: Any) -> Path:
    """An exported folder for ``checkpoints``: itself when it is one, else the export kept beside the
    checkpoints under the members' checkpoint ids and the ensemble's fitted settings (made when missing)."""
    if is_exported_model(checkpoints):
        return Path(checkpoints)
    from ..ensemble.ensemble import Ensemble

    ensemble = Ensemble.from_checkpoints(checkpoints, device="cpu", precision="fp32")
    key = json.dumps({"ids": [m.get("checkpoint_id") for m in ensemble.metadata], "names": ensemble.names,
                      "settings": str(ensemble.settings), "format": FORMAT_VERSION, "revision": EXPORT_REVISION},
                     sort_keys=True)
    first = Path(ensemble.metadata[0]["path"]).parent
    folder = first / EXPORT_CACHE / hashlib.sha256(key.encode()).hexdigest()[:16]
    if not is_exported_model(folder):
        export_model(checkpoints, folder, overwrite=True)
    return folder


def read_manifest(folder: Path) -> dict[str, Any]:
    """``model.json``, after checking that each graph is the one it names."""
    try:
        manifest = json.loads((folder / MODEL_JSON).read_text())
        graphs = dict(manifest["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VidtempoError(f"{folder / MODEL_JSON}: not a readable model manifest ({exc})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise VidtempoError(f"{folder / MODEL_JSON}: format_version {manifest.get('format_version')!r}, this "
                            f"version reads {FORMAT_VERSION}")
    for name, digest in graphs.items():
        path = folder / name
        if not path.is_file():
            raise VidtempoError(f"{path}: missing (named in {MODEL_JSON})")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise VidtempoError(f"{path}: SHA-256 differs from the one in {MODEL_JSON} (changed after export)")
    return manifest


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=_providers(ort))


def _providers(ort) -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxBackbone:
    """``backbone.onnx`` as a callable of uint8 frames ``[N, 3, S, S]`` -> float32 features ``[N, D]``."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.session = _session(path, threads)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype != torch.uint8:
            raise ValueError("the exported backbone takes uint8 frames")
        return torch.from_numpy(self.session.run(None, {"frames": frames.cpu().numpy()})[0])


class OnnxEnsemble:
    """``ensemble.onnx`` with its manifest, answering as an ``Ensemble`` does for plain predictions."""

    amp_dtype = None
    device = torch.device("cpu")

    def __init__(self, folder: str | os.PathLike, threads: int | None = None) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.session = _session(self.folder / ENSEMBLE_ONNX, threads)
        extraction = self.manifest.get("extraction")
        self.extraction = ExtractionSettings.from_dict(extraction) if extraction else None
        self.names = list(self.manifest["members"])
        self.metadata = [{"median_video_seconds": self.manifest.get("median_video_seconds")} for _ in self.names]
        self.threads = threads

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def early_exit(self) -> dict[str, Any] | None:
        """The exported ensemble's early-exit rule (ensemble/early_exit.py), None when it has none."""
        return (self.manifest.get("settings") or {}).get("early_exit")

    def __len__(self) -> int:
        return len(self.names)

    def backbone(self) -> OnnxBackbone:
        if not (self.folder / BACKBONE_ONNX).is_file():
            raise VidtempoError(f"{self.folder}: exported without a backbone (the checkpoints record no extraction "
                                "settings), so it cannot classify video files")
        return OnnxBackbone(self.folder / BACKBONE_ONNX, self.threads)

    def run(self, features: Any, lengths: Any = None) -> dict[str, np.ndarray]:
        features = np.ascontiguousarray(torch.as_tensor(features).float().numpy())
        if lengths is None:
            lengths = np.full(features.shape[0], features.shape[1], dtype=np.int64)
        lengths = np.asarray(torch.as_tensor(lengths).numpy(), dtype=np.int64).reshape(-1)
        outputs = self.session.run(None, {"features": features, "lengths": lengths})
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, outputs))

    def _no_tta(self, tta: bool) -> None:
        if tta:
            raise VidtempoError("the ONNX runtime runs plain predictions: TTA needs --runtime torch")

    def predict_proba(self, features: Any, lengths: Any = None, tta: bool = False) -> torch.Tensor:
        self._no_tta(tta)
        return torch.from_numpy(self.run(features, lengths)["probs"])

    def analyze(self, features: Any, lengths: Any = None, tta: bool = False) -> dict[str, Any]:
        """What ``Ensemble.analyze`` returns, from one run of the graph."""
        self._no_tta(tta)
        steps = torch.as_tensor(features).shape[1]
        out = {k: torch.from_numpy(v) for k, v in self.run(features, lengths).items()}
        return {
            "probs": out["probs"],
            "member_probs": out["member_probs"],
            "attention": out["attention"][:, :steps],
            "trust": {"score": out["trust_score"], "confidence": out["confidence"], "agreement": out["agreement"],
                      "distance_ratio": out["distance_ratio"]},
            "uncertain_below": float(self.manifest["trust"]["uncertain_below"]),
        }


def evaluate_exported(model: OnnxEnsemble, split, batch_size: int = 256) -> dict[str, Any]:
    """What ``vidtempo evaluate`` reports for plain predictions, from an exported model run by ONNX Runtime
    over a feature split: each member's scores and the ensemble's (weights and temperature are inside the
    graph), and the ensemble's calibration error."""
    from ..ensemble.calibration import expected_calibration_error
    from ..ensemble.metrics import classification_metrics

    names = model.class_names
    if split.category_mapping != {name: index for index, name in enumerate(names)}:
        raise VidtempoError(f"{split.path}: categories {split.category_mapping} differ from the model's {names}")
    probs, member_probs = [], []
    for start in range(0, split.num_videos, batch_size):
        out = model.run(split.features[start : start + batch_size], split.num_frames[start : start + batch_size])
        probs.append(out["probs"])
        member_probs.append(out["member_probs"])
    combined, members = np.concatenate(probs), np.concatenate(member_probs, axis=1)  # [N, C], [M, N, C]
    return {
        "plain": {
            "members": {member: classification_metrics(split.labels, p.argmax(-1), names)
                        for member, p in zip(model.names, members)},
            "ensemble": classification_metrics(split.labels, combined.argmax(-1), names),
        },
        "calibration": {"ece_after": expected_calibration_error(combined, split.labels)},  # the graph's: calibrated
    }
