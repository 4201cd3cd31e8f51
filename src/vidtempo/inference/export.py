"""Export a trained ensemble as a self-contained ONNX model folder, for serving stacks without vidtempo.

The folder (``vidtempo export --checkpoints CK --output DIR``) holds:

- ``backbone.onnx``: uint8 frames ``[N, 3, S, S]`` (RGB, resized and centre-cropped as extraction does) in,
  per-frame CNN features ``[N, D]`` out; the backbone's normalisation is inside the graph. Absent when the
  checkpoints record no extraction settings (the seed's checkpoints): such a model classifies features only.
- ``ensemble.onnx``: ``features [B, T, D]`` float32 and ``lengths [B]`` int64 in (any B and T; steps past a
  video's length are masked exactly as in PyTorch); out ``probs [B, C]`` (the ensemble's, with the fitted
  member weights and temperature inside), ``member_probs [M, B, C]``, ``attention [B, T]`` (the members'
  weighted attention-pooling weights), and the trust signals ``trust_score``, ``confidence``,
  ``agreement``, ``distance_ratio`` ``[B]`` (trust.py; the class centroids are inside).
- ``model.json``: classes, the extraction settings, the trust flag thresholds, the opset, versions, the
  members' checkpoint ids, and the SHA-256 of each graph (checked when the folder is loaded).

With ``quantize="int8"`` the backbone is quantised statically (ONNX Runtime's QDQ format, int8 weights per
channel, uint8 activations) with ranges calibrated on frames of the given videos; ``model.json`` says so.
Its cost in agreement with float32 is measured in benchmarks/RESULTS.md (``benchmarks/onnx_int8.py``).

The plain prediction (no TTA) is exported; ``onnx_model.py`` runs the folder with ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .._version import __version__
from ..ensemble.ensemble import Ensemble
from ..ensemble.trust import OOD_DISTANCE_RATIO, trust
from ..errors import VidtempoError

MODEL_JSON = "model.json"
BACKBONE_ONNX = "backbone.onnx"
ENSEMBLE_ONNX = "ensemble.onnx"
FORMAT_VERSION = 1
DEFAULT_OPSET = 18
ENSEMBLE_OUTPUTS = ("probs", "member_probs", "attention", "trust_score", "confidence", "agreement", "distance_ratio")


class EnsembleGraph(nn.Module):
    """The ensemble's plain prediction as one module of fixed constants, for export: every member, their
    weighted mean, the temperature, the attention and the trust signals, as ``Ensemble.analyze`` computes
    them in float32."""

    def __init__(self, ensemble: Ensemble) -> None:
        super().__init__()
        self.members = nn.ModuleList(ensemble.models)
        self.register_buffer("weights", ensemble.member_weights.float())
        self.voting = [i for i, w in enumerate(ensemble.member_weights.tolist()) if w > 0]
        self.temperature = float(ensemble.settings.calibration(False)[0])
        num_classes = ensemble.num_classes
        stats = [s or {} for s in ensemble.representation_stats]
        self.has_stats = [bool(s) for s in stats]
        for i, s in enumerate(stats):
            if s:
                self.register_buffer(f"centroids_{i}", s["centroids"].float())
                self.register_buffer(f"distance_q95_{i}", s["distance_q95"].float())
        self.num_classes = num_classes

    def _distance_ratios(self, member: int, pooled: torch.Tensor) -> torch.Tensor:
        """``trust.class_distance_ratios``, with the distances written out (ONNX has no cdist)."""
        if not self.has_stats[member]:
            return torch.ones(pooled.shape[0], self.num_classes)
        centroids = getattr(self, f"centroids_{member}")
        distances = (pooled.unsqueeze(1) - centroids.unsqueeze(0)).square().sum(-1).sqrt()
        return distances / getattr(self, f"distance_q95_{member}").unsqueeze(0)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        member_probs, attention, ratios = [], [], []
        for i, model in enumerate(self.members):
            pooled, weights = model.encode(features, lengths)
            member_probs.append(torch.softmax(model.classifier(pooled).float(), dim=-1))
            attention.append(weights.float())
            ratios.append(self._distance_ratios(i, pooled.float()))
        member_probs_t = torch.stack(member_probs)
        probs = (member_probs_t * self.weights.reshape(-1, 1, 1)).sum(0)
        if self.temperature != 1.0:
            probs = torch.softmax(torch.log(probs.clamp_min(1e-30)) / self.temperature, dim=-1)
        mean_attention = (torch.stack(attention) * self.weights.reshape(-1, 1, 1)).sum(0)
        class_ratios = torch.stack(ratios)
        predicted = probs.argmax(-1)
        chosen = class_ratios.gather(2, predicted.reshape(1, -1, 1).expand(class_ratios.shape[0], -1, 1))[..., 0]
        signals = trust(member_probs_t[self.voting], probs, (chosen * self.weights.reshape(-1, 1)).sum(0))
        return (probs, member_probs_t, mean_attention, signals["score"], signals["confidence"], signals["agreement"],
                signals["distance_ratio"])


def export_model(checkpoints: Any, output: str | os.PathLike, opset: int = DEFAULT_OPSET,
                 overwrite: bool = False, quantize: str | None = None,
                 calibration_videos: Sequence[str | os.PathLike] = ()) -> Path:
    """Export the ensemble at ``checkpoints`` (a folder or ``best_*.pt`` files) into the folder ``output``,
    written under a temporary name and renamed when whole. Raises VidtempoError for bad input."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise VidtempoError(f"{output}: already exists (give --overwrite to replace it)")
    _check_exporter(opset)
    _check_quantize(quantize, calibration_videos)
    return export_ensemble(Ensemble.from_checkpoints(checkpoints, device="cpu", precision="fp32"), output, opset,
                           quantize, calibration_videos)


def export_ensemble(ensemble: Ensemble, output: str | os.PathLike, opset: int = DEFAULT_OPSET,
                    quantize: str | None = None, calibration_videos: Sequence[str | os.PathLike] = ()) -> Path:
    """Export a loaded (CPU, float32) ensemble into the folder ``output``, replacing it when whole."""
    output = Path(output)
    _check_exporter(opset)
    _check_quantize(quantize, calibration_videos)
    if quantize and ensemble.extraction is None:
        raise VidtempoError("--quantize needs a backbone: these checkpoints record no extraction settings")
    # Decoded before anything is exported: calibration videos that do not decode are refused at once.
    calibration = _calibration_frames(ensemble.extraction, calibration_videos) if quantize else []
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    except OSError as exc:
        raise VidtempoError(f"{output}: cannot write here ({exc.strerror or exc})") from None
    try:
        graphs = {ENSEMBLE_ONNX: _export_ensemble(ensemble, staging / ENSEMBLE_ONNX, opset)}
        if ensemble.extraction is not None:
            graphs[BACKBONE_ONNX] = _export_backbone(ensemble, staging / BACKBONE_ONNX, opset)
        if quantize:
            graphs[BACKBONE_ONNX] = _quantize_backbone(staging / BACKBONE_ONNX, calibration)
        manifest = {**_manifest(ensemble, graphs, opset), "backbone_precision": quantize or "fp32"}
        (staging / MODEL_JSON).write_text(json.dumps(manifest, indent=2))
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


QUANTIZATIONS = ("int8",)
# Frames per calibration video, and the most videos read for calibration.
CALIBRATION_FRAMES, CALIBRATION_VIDEOS = 8, 64


def _check_quantize(quantize: str | None, calibration_videos: Sequence[str | os.PathLike]) -> None:
    if quantize is None:
        return
    if quantize not in QUANTIZATIONS:
        raise VidtempoError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    if not calibration_videos:
        raise VidtempoError("--quantize int8 needs --calibration-videos: frames of training videos set its ranges")


def spread_evenly(items: Sequence[Any], count: int) -> list[Any]:
    """Up to ``count`` of ``items``, evenly spread from the first to the last, in order."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def _calibration_frames(settings: Any, videos: Sequence[str | os.PathLike]) -> list[torch.Tensor]:
    """uint8 frames ``[F, 3, S, S]`` of up to CALIBRATION_VIDEOS ``videos`` spread evenly over the list (so every
    class folder counts, not the first ones), sampled as extraction samples them, in a watched decoder
    process. Raises VidtempoError, naming the videos' folder, when none decodes."""
    import functools

    from ..features.extract.decoder_pool import DecoderPool
    from ..features.extract.settings import RunOptions
    from ..features.extract.video import decode_clip

    picked = spread_evenly(list(videos), CALIBRATION_VIDEOS)
    decode = functools.partial(decode_clip, num_frames=CALIBRATION_FRAMES, image_size=settings.image_size,
                               sampling=settings.sampling)
    batches, failures = [], []
    with DecoderPool(1, max_seconds=RunOptions.max_decode_seconds) as pool:
        for clip, error in pool.imap(decode, ((video,) for video in picked), ahead=2):
            (batches.append(clip.frames) if error is None else failures.append(error))
    if not batches:
        folder = os.path.commonpath([os.path.dirname(os.path.abspath(v)) for v in picked])
        raise VidtempoError(f"{folder}: none of the {len(picked)} calibration videos could be decoded, so no "
                            f"frames set the int8 ranges (first: {failures[0]})")
    return batches


def _quantize_backbone(path: Path, batches: Sequence[torch.Tensor]) -> str:
    """Replace the float32 backbone at ``path`` by its int8 version, its activation ranges calibrated on the
    uint8 frame ``batches``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(batches)

        def get_next(self):
            batch = next(self.remaining, None)
            return None if batch is None else {"frames": batch.numpy()}

    prepared, quantized = path.with_suffix(".pre.onnx"), path.with_suffix(".int8.onnx")
    quant_pre_process(str(path), str(prepared))
    quantize_static(str(prepared), str(quantized), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    quantized.replace(path)
    prepared.unlink()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_exporter(opset: int) -> None:
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
        from onnxscript import opset18  # noqa: F401
    except ImportError:
        raise VidtempoError("exporting needs the onnx extra: pip install 'vidtempo[onnx]'") from None
    if not 18 <= opset <= 23:
        raise VidtempoError(f"--opset must be between 18 and 23 (what this exporter writes), got {opset}")


def _export(module: nn.Module, args: tuple, path: Path, opset: int, input_names: list[str],
            output_names: list[str], dynamic_shapes: dict) -> str:
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it notes registry entries it skips (torchvision's), not about this model
    with warnings.catch_warnings(), torch.no_grad(), _restore_level(quiet, level), _recurrence_as_loop():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), args, dynamo=True, input_names=input_names,
                                    output_names=output_names, dynamic_shapes=dynamic_shapes, opset_version=opset,
                                    verbose=False)
        program.save(str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _recurrence_as_loop() -> contextlib.AbstractContextManager:
    """The LSTM traced as one loop over the steps, for the whole export.

    torch's ONNX exporter uses this decomposition only while it captures the graph. Its later decomposition
    pass retraces ``aten.lstm`` with the default one, a Python loop over the example's steps, which either
    makes the steps a fixed input dimension (more than one layer) or leaves the example's step count in the
    declared shapes of what follows the LSTM (ONNX Runtime then fails at other lengths on reusing a buffer).
    The ONNX graph holds an LSTM node either way. A torch without this decomposition exports as it can, and
    ``_check_dynamic`` refuses a graph that came out fixed."""
    try:
        from torch.export._patches import register_lstm_while_loop_decomposition
    except ImportError:
        return contextlib.nullcontext()
    return register_lstm_while_loop_decomposition()


def _check_dynamic(path: Path, axes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a graph that declares a number where ``axes`` (input or output name -> axes) asked for a
    symbolic size: ONNX Runtime refuses other sizes there, or plans buffers for the example's and fails."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        fixed = [axis for axis in axes.get(value.name, ()) if not dims[axis].dim_param]
        if fixed:
            raise VidtempoError(f"{path.name}: torch {torch.__version__} exported '{value.name}' with axis {fixed[0]} "
                                f"fixed at {dims[fixed[0]].dim_value}, so the graph would run only at the size of "
                                "the example it was traced with")


@contextlib.contextmanager
def _restore_level(logger: logging.Logger, level: int):
    try:
        yield
    finally:
        logger.setLevel(level)


def _export_ensemble(ensemble: Ensemble, path: Path, opset: int) -> str:
    dim = ensemble.models[0].config.feature_dim
    batch, steps = torch.export.Dim("batch", min=1, max=65536), torch.export.Dim("steps", min=1, max=1 << 20)
    example = (torch.zeros(2, 5, dim), torch.tensor([5, 3]))
    digest = _export(EnsembleGraph(ensemble), example, path, opset, ["features", "lengths"], list(ENSEMBLE_OUTPUTS),
                     {"features": {0: batch, 1: steps}, "lengths": {0: batch}})
    _check_dynamic(path, {"features": (0, 1), "lengths": (0,), "member_probs": (1,), "attention": (0, 1),
                          **{name: (0,) for name in ENSEMBLE_OUTPUTS if name not in ("member_probs", "attention")}})
    return digest


def _export_backbone(ensemble: Ensemble, path: Path, opset: int) -> str:
    from ..features.extract.backbones import build_backbone

    settings = ensemble.extraction
    backbone = build_backbone(settings.backbone, settings.weights, torch.device("cpu"))
    size = settings.image_size
    frames = torch.export.Dim("frames", min=1, max=4096)
    example = (torch.zeros(2, 3, size, size, dtype=torch.uint8),)
    digest = _export(backbone, example, path, opset, ["frames"], ["features"], {"frames": {0: frames}})
    _check_dynamic(path, {"frames": (0,), "features": (0,)})
    return digest


def _manifest(ensemble: Ensemble, graphs: dict[str, str], opset: int) -> dict[str, Any]:
    import onnx
    import onnxruntime

    temperature, uncertain_below = ensemble.settings.calibration(False)
    return {
        "format_version": FORMAT_VERSION,
        "classes": ensemble.class_names,
        "members": ensemble.names,
        "checkpoint_ids": [m.get("checkpoint_id") for m in ensemble.metadata],
        "extraction": ensemble.extraction.to_dict() if ensemble.extraction is not None else None,
        "median_video_seconds": next((m.get("median_video_seconds") for m in ensemble.metadata
                                      if m.get("median_video_seconds")), None),
        "trust": {"uncertain_below": uncertain_below, "out_of_distribution_ratio": OOD_DISTANCE_RATIO},
        "member_weights": ensemble.member_weights.tolist(),
        "temperature": temperature,
        "tta": False,
        "opset": opset,
        "inputs": {"backbone": {"frames": "uint8 [N, 3, S, S], RGB"},
                   "ensemble": {"features": "float32 [B, T, D]", "lengths": "int64 [B]"}},
        "outputs": {"backbone": ["features"], "ensemble": list(ENSEMBLE_OUTPUTS)},
        "sha256": graphs,
        "versions": {"vidtempo": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "settings": dataclasses.asdict(ensemble.settings),
    }
