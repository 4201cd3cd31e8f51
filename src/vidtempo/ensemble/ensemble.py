"""An ensemble of trained temporal models: the mean of the members' softmax, optionally over TTA views."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..checkpoint import category_mapping_of, load_checkpoint
from ..config import INFERENCE_PRECISION, INFERENCE_PRECISIONS
from ..errors import CheckpointError, ConfigError, VidtempoError
from ..files import write_json
from ..model.temporal import TemporalModel, model_from_checkpoint
from ..runtime import autocast, resolve_device, resolve_precision
from ..features.store import MEDIAN_SECONDS_ATTR, FeatureSplit, class_names
from .trust import DEFAULT_UNCERTAIN_BELOW, class_distance_ratios, trust
from .tta import TTA_VIEWS, average_member_views, average_views, make_views

if TYPE_CHECKING:
    from ..features.extract.settings import ExtractionSettings

# Rows per forward pass at inference: bounds memory for long inputs and many TTA views.
INFERENCE_BATCH_ROWS = 64
# Written beside the members' checkpoints: which files form the ensemble and what was fitted for it.
MANIFEST_NAME = "ensemble.json"
MANIFEST_FORMAT_VERSION = 1


def inference_amp_dtype(device: str | torch.device, precision: str = INFERENCE_PRECISION) -> torch.dtype | None:
    """The autocast dtype inference uses on ``device`` for ``precision`` (None: float32)."""
    if precision not in INFERENCE_PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
    return resolve_precision(precision, torch.device(device))


@dataclass
class EnsembleSettings:
    """What is decided for an ensemble as a whole, on validation data, and stored in its manifest."""

    member_weights: list[float] | None = None  # None: equal weights (the seed's behaviour); 0 drops a member
    tta_views: list[str] = field(default_factory=lambda: list(TTA_VIEWS))  # the views TTA averages over
    # Calibration, fitted apart for plain and for TTA-averaged predictions (averaging views changes how sure
    # the ensemble is): the temperature that divides the log of the ensemble's probabilities, and the
    # trust-score threshold of the "uncertain" flag. A manifest without the TTA pair leaves TTA uncalibrated.
    temperature: float = 1.0
    uncertain_below: float = DEFAULT_UNCERTAIN_BELOW
    tta_temperature: float = 1.0
    tta_uncertain_below: float = DEFAULT_UNCERTAIN_BELOW
    fitted_on: str | None = None  # the split the settings were fitted on: "val" or "out_of_fold"
    # The predictions calibration (temperatures and trust thresholds) was fitted on, in words with their
    # count: "validation, 32 videos" or "out-of-fold, 128 videos" (None: written before it was recorded).
    calibrated_on: str | None = None
    # Per member, the trust score's distance spread per class (trust.py) fitted on out-of-fold videos, used
    # instead of the spread of the member's own training videos stored in its checkpoint (None: that one).
    distance_q95: list[list[float] | None] | None = None
    # The splits whose videos some member learned from: ["train"], or ["train", "val"] when cross-fitted
    # (None: written before it was recorded, see ``learned_from_splits``).
    learned_from: list[str] | None = None
    # When a video's early answer is final (early_exit.ExitRule as a dict), fitted for models trained on
    # prefixes of the coarse-to-fine order (TrainingConfig.prefix_lengths); None: every step is read.
    early_exit: dict[str, Any] | None = None
    report: dict[str, Any] = field(default_factory=dict)  # how they were chosen

    def calibration(self, tta: bool) -> tuple[float, float]:
        """``(temperature, uncertain_below)`` for plain or TTA-averaged predictions."""
        if tta:
            return self.tta_temperature, self.tta_uncertain_below
        return self.temperature, self.uncertain_below

    def learned_from_splits(self) -> list[str]:
        """The splits some member trained on; for a manifest that does not say, what its fit implies."""
        if self.learned_from is not None:
            return list(self.learned_from)
        return ["train", "val"] if self.fitted_on == "out_of_fold" else ["train"]

    def held_out(self, split: str) -> bool:
        """Whether no member learned from ``split``'s videos, so that scores on it are held-out scores."""
        return split not in self.learned_from_splits()

    def scores_note(self, split: str) -> str | None:
        """What a report should say beside scores on ``split`` when they are not held out (None: they are)."""
        if self.held_out(split):
            return None
        if split == "val" and self.fitted_on == "out_of_fold":
            return ("not held out: scores on data the members trained on (cross-fitted, every member but one "
                    "learned from each validation video); the test split's scores are the held-out ones")
        return "not held out: scores on data the members trained on"


@dataclass
class ModelOutputs:
    """One model's outputs for a batch of videos."""

    probs: torch.Tensor  # [B, C] softmax, averaged over the TTA views when asked for
    pooled: torch.Tensor  # [B, W] attention-pooled representation of the original view
    attention: torch.Tensor  # [B, T] attention-pooling weights over the original view's steps
    view_probs: torch.Tensor  # [V, B, C] softmax of each view (V = 1 without TTA)
    applies: torch.Tensor  # [V, B] bool: whether each view applies to each video


@torch.no_grad()
def model_outputs(
    model: TemporalModel,
    features: torch.Tensor,
    lengths: torch.Tensor,
    tta: bool = False,
    amp_dtype: torch.dtype | None = None,
    max_rows: int = INFERENCE_BATCH_ROWS,
    views: Sequence[str] | None = None,
    separate_views: bool = False,
) -> ModelOutputs:
    """Run one model (in eval mode) on a batch; with TTA, on every view of every video.

    All views of all videos are stacked and run through the model in as few passes as ``max_rows`` allows,
    each padded to its longest row (the fewest passes: for classifying a few videos). With
    ``separate_views``, each view runs in passes of its own: the original view then runs in exactly the
    passes of ``tta=False`` and gives its numbers, and a view's numbers do not depend on the other views
    asked for, so that the scores of several view sets (plain and TTA, or TTA over different views) can be
    read off one call over their union (for scoring a split).
    ``views`` picks the TTA views (``tta=True`` means all of them); the original view must come first.
    """
    device = next(model.parameters()).device
    batch, max_len = features.shape[0], features.shape[1]
    views = tuple(views) if views is not None else (TTA_VIEWS if tta else None)
    if views is not None and views[0] != "original":
        raise ConfigError(f"TTA views must start with 'original', got {views}")
    tta = views is not None and len(views) > 1
    if tta:
        rows, row_lengths, applies = make_views(features, lengths, views)
    else:
        rows, row_lengths = features, lengths.to("cpu", torch.long)
        applies = torch.ones(1, batch, dtype=torch.bool)
    probs, pooled, attention = [], [], []
    for start, stop in _passes(applies.shape[0], batch, max_rows, separate_views):
        chunk_lengths = row_lengths[start:stop]
        chunk = rows[start:stop, : int(chunk_lengths.max())].to(device, torch.float32)
        with autocast(device, amp_dtype):
            chunk_pooled, weights = model.encode(chunk, chunk_lengths)
            logits = model.classifier(chunk_pooled)
        probs.append(torch.softmax(logits.float(), dim=-1).cpu())
        pooled.append(chunk_pooled.float().cpu())
        padded = weights.new_zeros((weights.shape[0], rows.shape[1]))
        padded[:, : weights.shape[1]] = weights
        attention.append(padded.float().cpu())
    all_probs = torch.cat(probs)
    # The original view is the first block of rows (see tta.make_views).
    return ModelOutputs(
        probs=average_views(all_probs, applies) if tta else all_probs,
        pooled=torch.cat(pooled)[:batch],
        attention=torch.cat(attention)[:batch, :max_len],
        view_probs=all_probs.reshape(applies.shape[0], batch, -1),
        applies=applies,
    )


def _passes(num_views: int, batch: int, max_rows: int, separate_views: bool) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of the passes over ``num_views`` blocks of ``batch`` rows: at most
    ``max_rows`` each, and with ``separate_views`` never across a view's block."""
    if not separate_views:
        return [(start, min(start + max_rows, num_views * batch)) for start in range(0, num_views * batch, max_rows)]
    return [(v * batch + start, v * batch + min(start + max_rows, batch))
            for v in range(num_views) for start in range(0, batch, max_rows)]


def model_probabilities(
    model: TemporalModel, features: torch.Tensor, lengths: torch.Tensor, tta: bool = False,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Softmax probabilities ``[B, C]`` of one model; with TTA, averaged over the views."""
    return model_outputs(model, features, lengths, tta=tta, amp_dtype=amp_dtype).probs


def _as_tensors(features: Any, lengths: Any | None) -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.as_tensor(np.asarray(features, dtype=np.float32) if not torch.is_tensor(features) else features)
    if features.ndim == 2:
        features = features.unsqueeze(0)
    if features.ndim != 3:
        raise ValueError(f"features must be [B, T, D] or [T, D], got shape {tuple(features.shape)}")
    if lengths is None:
        lengths = torch.full((features.shape[0],), features.shape[1], dtype=torch.long)
    lengths = torch.as_tensor(lengths, dtype=torch.long).reshape(-1).cpu()
    if lengths.shape[0] != features.shape[0] or int(lengths.min()) < 1 or int(lengths.max()) > features.shape[1]:
        raise ValueError("lengths must hold one value in 1..T per video")
    return features.float(), lengths


class Ensemble:
    """Members of identical input and output; predictions are the mean of their softmax outputs."""

    def __init__(
        self,
        models: Sequence[torch.nn.Module],
        category_mapping: Mapping[str, int],
        names: Sequence[str] | None = None,
        extraction: ExtractionSettings | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        representation_stats: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
        settings: EnsembleSettings | None = None,
        precision: str = INFERENCE_PRECISION,
    ) -> None:
        if not models:
            raise ConfigError("an ensemble needs at least one model")
        self.models = [m.eval() for m in models]
        self.precision = precision
        self.amp_dtype = inference_amp_dtype(self.device, precision)
        self.category_mapping = dict(category_mapping)
        self.names = list(names) if names is not None else [f"member_{i + 1}" for i in range(len(models))]
        self.extraction = extraction  # how the training features were made from videos, if they were
        self.metadata = [dict(m) for m in metadata] if metadata is not None else [{} for _ in models]
        self.settings = settings or EnsembleSettings()
        self.representation_stats = with_fitted_spread(list(representation_stats or [None] * len(models)),
                                                       self.settings)

    @property
    def class_names(self) -> list[str]:
        return class_names(self.category_mapping)

    @property
    def num_classes(self) -> int:
        return len(self.category_mapping)

    @property
    def early_exit(self) -> dict[str, Any] | None:
        """The early-exit rule fitted for this model (ensemble/early_exit.py), None when it has none."""
        return self.settings.early_exit

    @property
    def device(self) -> torch.device:
        return next(self.models[0].parameters()).device

    def __len__(self) -> int:
        return len(self.models)

    @classmethod
    def from_checkpoints(
        cls, paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike], device: str | torch.device = "cpu",
        precision: str = INFERENCE_PRECISION,
    ) -> "Ensemble":
        """Load members from checkpoint files, or from a folder: the members its ``ensemble.json`` names
        (with the settings fitted for them), else every ``best_*.pt`` in it."""
        paths, manifest = _checkpoint_paths(paths_or_dir)
        device = resolve_device(device)
        members = [_load_member(path, device) for path in paths]
        _check_members_agree(members)
        if manifest is not None:
            _check_manifest_is_current(manifest, paths, [m.metadata for m in members])
        known = set(EnsembleSettings.__dataclass_fields__)
        fitted = EnsembleSettings(**{k: v for k, v in (manifest or {}).get("settings", {}).items() if k in known})
        return cls([m.model for m in members], members[0].category_mapping, names=[m.name for m in members],
                   extraction=members[0].extraction, metadata=[m.metadata for m in members],
                   representation_stats=[m.representation_stats for m in members], settings=fitted,
                   precision=precision)

    def save_manifest(self, folder: str | os.PathLike, member_files: Sequence[str]) -> Path:
        """Record the member files, the checkpoint each setting was fitted for, and the fitted settings in
        ``folder/ensemble.json``."""
        from dataclasses import asdict

        return write_json({"format_version": MANIFEST_FORMAT_VERSION, "members": list(member_files),
                           "checkpoint_ids": {f: m.get("checkpoint_id") for f, m in zip(member_files, self.metadata)},
                           "names": self.names, "settings": asdict(self.settings)}, Path(folder) / MANIFEST_NAME)

    def summary(self) -> dict[str, Any]:
        """Plain data about the model, for ``vidtempo inspect``: members and sizes, categories, extraction
        settings, calibration, and a distilled student's teacher and how well it agrees with it."""
        from dataclasses import asdict

        members = [{"name": name, "parameters": sum(p.numel() for p in model.parameters()),
                    "model_config": asdict(model.config), "best_epoch": meta.get("best_epoch"),
                    "checkpoint": meta.get("path")} for name, model, meta in zip(self.names, self.models, self.metadata)]
        settings = self.settings
        return {
            "members": members,
            "parameters": sum(m["parameters"] for m in members),
            "classes": self.class_names,
            "extraction": self.extraction.to_dict() if self.extraction is not None else None,
            "calibration": {"temperature": settings.temperature, "tta_temperature": settings.tta_temperature,
                            "calibrated_on": settings.calibrated_on, "learned_from": settings.learned_from_splits()},
            "tta_views": list(settings.tta_views),
            "distilled_from": next((m["distillation"] for m in self.metadata if m.get("distillation")), None),
            "early_exit": settings.early_exit,
        }

    def member_probabilities(self, features: Any, lengths: Any = None, tta: bool = False,
                             views: Sequence[str] | None = None) -> torch.Tensor:
        """``[M, B, C]``: each member's probabilities (with TTA, over the ensemble's chosen views)."""
        features, lengths = _as_tensors(features, lengths)
        views = self._views(tta, views)
        return torch.stack([model_outputs(m, features, lengths, views=views, amp_dtype=self.amp_dtype).probs
                            for m in self.models])

    def combine(self, member_probs: torch.Tensor, calibrated: bool = True, tta: bool = False) -> torch.Tensor:
        """``[M, B, C]`` -> ``[B, C]``: the (weighted) mean of the members, then the temperature fitted for
        plain (or, with ``tta``, TTA-averaged) predictions."""
        weights = self.member_weights.to(member_probs.dtype).reshape(-1, 1, 1)
        probs = (member_probs * weights).sum(0)
        temperature = self.settings.calibration(tta)[0]
        if calibrated and temperature != 1.0:
            from .calibration import apply_temperature

            probs = apply_temperature(probs, temperature).to(member_probs.dtype)
        return probs

    @property
    def member_weights(self) -> torch.Tensor:
        """Normalised weights of the members: equal unless fitted otherwise."""
        if self.settings.member_weights is None:
            return torch.full((len(self.models),), 1.0 / len(self.models))
        weights = torch.tensor(self.settings.member_weights, dtype=torch.float64)
        return (weights / weights.sum()).float()

    def _views(self, tta: bool, views: Sequence[str] | None) -> tuple[str, ...] | None:
        if views is not None:
            return tuple(views)
        return tuple(self.settings.tta_views) if tta else None

    def analyze(self, features: Any, lengths: Any = None, tta: bool = False) -> dict[str, Any]:
        """Everything a result reports: probabilities (ensemble and members), the members' mean
        attention-pooling weights over the original view ``[B, T]``, the trust signals and the threshold of
        the "uncertain" flag for this mode."""
        features, lengths = _as_tensors(features, lengths)
        outputs = [model_outputs(m, features, lengths, views=self._views(tta, None), amp_dtype=self.amp_dtype)
                   for m in self.models]
        member_probs = torch.stack([o.probs for o in outputs])
        probs = self.combine(member_probs, tta=tta)
        weights = self.member_weights.reshape(-1, 1)
        return {
            "probs": probs,
            "member_probs": member_probs,
            "attention": torch.stack([o.attention for o in outputs]).mul(weights.unsqueeze(-1)).sum(0),
            "trust": self.trust_signals(member_probs, probs, self.class_distance_ratios(outputs)),
            "uncertain_below": self.settings.calibration(tta)[1],
        }

    def class_distance_ratios(self, outputs: Sequence[ModelOutputs]) -> torch.Tensor:
        """``[M, B, C]``: each member's distance ratio (see trust.py) of every video to every class."""
        return torch.stack([class_distance_ratios(o.pooled, s, self.num_classes)
                            for o, s in zip(outputs, self.representation_stats)])

    def trust_signals(self, member_probs: torch.Tensor, probs: torch.Tensor,
                      class_ratios: torch.Tensor) -> dict[str, torch.Tensor]:
        """Trust signals of the ensemble's predictions ``probs`` (see trust.py)."""
        predicted = probs.argmax(-1)
        ratios = class_ratios.gather(2, predicted.reshape(1, -1, 1).expand(class_ratios.shape[0], -1, 1))[..., 0]
        weights = self.member_weights.reshape(-1, 1)
        return trust(member_probs[self.member_weights > 0], probs, (ratios * weights).sum(0))

    def predict_proba(self, features: Any, lengths: Any = None, tta: bool = False) -> torch.Tensor:
        """``[B, C]`` probabilities: the mean of the members' softmax (weighted and calibrated as fitted;
        with TTA, over the chosen views too)."""
        return self.combine(self.member_probabilities(features, lengths, tta=tta), tta=tta)

    def split_member_probabilities(self, split: FeatureSplit, tta: bool = False, views: Sequence[str] | None = None,
                                   batch_size: int = 256) -> torch.Tensor:
        """``[M, N, C]`` member probabilities over a whole feature split."""
        views = self._views(tta, views) or ("original",)
        return average_member_views(*self.split_view_probabilities(split, views, batch_size))

    def split_view_probabilities(self, split: FeatureSplit, views: Sequence[str],
                                 batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's probabilities of each of ``views`` over a whole feature split ``[M, V, N, C]``, and
        whether each view applies to each video ``[V, N]``. Views run in passes of their own (see
        ``model_outputs``): plain scores are the original view's, and any subset of ``views`` scores as if
        it had run alone."""
        probs, applies = [], []
        for outputs in self.split_view_outputs(split, views, batch_size):
            probs.append(torch.stack([o.view_probs for o in outputs]))
            applies.append(outputs[0].applies)
        return torch.cat(probs, dim=2), torch.cat(applies, dim=1)

    def split_view_outputs(self, split: FeatureSplit, views: Sequence[str],
                           batch_size: int = 256) -> Iterator[list[ModelOutputs]]:
        """Every member's outputs (``model_outputs`` with ``separate_views``) for each block of ``batch_size``
        videos of ``split``, in order: a streamed split is never read whole."""
        if split.category_mapping != self.category_mapping:
            raise ConfigError(
                f"{split.path}: categories {split.category_mapping} differ from the ensemble's {self.category_mapping}"
            )
        for start in range(0, split.num_videos, batch_size):
            feats = torch.from_numpy(split.features[start : start + batch_size])
            lengths = torch.from_numpy(split.num_frames[start : start + batch_size])
            yield [model_outputs(m, feats, lengths, views=views, amp_dtype=self.amp_dtype, separate_views=True)
                   for m in self.models]


def with_fitted_spread(stats: Sequence[Mapping[str, torch.Tensor] | None],
                       settings: EnsembleSettings) -> list[Mapping[str, torch.Tensor] | None]:
    """The members' representation statistics with the distance spread ``settings`` fitted (out-of-fold, see
    fit.py) in place of their training videos' spread; the statistics as they are when none was fitted.
    New dicts: the checkpoint's statistics are left as they were loaded."""
    fitted = settings.distance_q95
    if fitted is None:
        return list(stats)
    if len(fitted) != len(stats):
        raise CheckpointError(f"the ensemble's manifest has a distance spread for {len(fitted)} members, "
                              f"but it has {len(stats)}")
    return [s if s is None or q95 is None else {**s, "distance_q95": torch.tensor(q95, dtype=torch.float32)}
            for s, q95 in zip(stats, fitted)]


def _checkpoint_paths(paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[list[Path], dict | None]:
    """The member files to load and the folder's manifest, if any."""
    if isinstance(paths_or_dir, (str, os.PathLike)):
        path = Path(paths_or_dir)
        if path.is_dir():
            manifest = _read_manifest(path / MANIFEST_NAME)
            if manifest is not None:
                return [path / name for name in manifest["members"]], manifest
            found = sorted(path.glob("best_*.pt"))
            if not found:
                raise CheckpointError(f"{path}: no best_*.pt checkpoints in this folder")
            return found, None
        return [path], None
    paths = [Path(p) for p in paths_or_dir]
    if not paths:
        raise CheckpointError("no checkpoints given")
    return paths, None


def _check_manifest_is_current(manifest: Mapping[str, Any], paths: Sequence[Path],
                               metadata: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a manifest whose settings were fitted for other weights than its member files hold now."""
    folder = paths[0].parent
    fitted_for = manifest.get("checkpoint_ids")
    if fitted_for is None:
        warnings.warn(f"{folder / MANIFEST_NAME}: written by an older vidtempo, which did not record the member "
                      "checkpoints it was fitted for; cannot check that it matches them (run vidtempo train "
                      "... --assemble to refit it)", RuntimeWarning, stacklevel=3)
        return
    for path, member in zip(paths, metadata):
        if fitted_for.get(path.name) != member.get("checkpoint_id"):
            raise CheckpointError(
                f"{folder / MANIFEST_NAME}: its settings were fitted for other weights than {path.name} holds now "
                f"(retrained since); refit them with: vidtempo train --features-dir FEATURES --output-dir {folder} "
                f"--num-models {len(paths)} --assemble")


def _read_manifest(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest.get("members"), list) or not manifest["members"]:
            raise ValueError("no members listed")
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: not a readable ensemble manifest ({exc})") from None
    return manifest


@dataclass
class _Member:
    """One member as read from its checkpoint."""

    path: Path
    model: TemporalModel
    category_mapping: dict[str, int]
    extraction: ExtractionSettings | None
    name: str
    metadata: dict[str, Any]
    representation_stats: Mapping[str, torch.Tensor] | None


def _load_member(path: Path, device: torch.device) -> _Member:
    payload = load_checkpoint(path, mmap=True)  # the model copies the weights; the optimiser state stays unread
    model = model_from_checkpoint(payload, path)
    stats = payload.get("representation_stats")
    return _Member(
        path=path,
        model=model.to(device),
        category_mapping=category_mapping_of(payload, model.config.num_classes),
        extraction=extraction_settings_of(payload, path),
        name=str(payload.get("model_name") or Path(path).stem.removeprefix("best_")),
        metadata={
            "path": str(path),
            "best_epoch": payload.get("best_epoch"),
            "best_val_acc": payload.get("best_val_acc"),
            "history": payload.get("run_history") or payload.get("history"),
            "checkpoint_id": payload.get("checkpoint_id"),
            "distillation": payload.get("distillation"),  # a student's: its teacher and how well it agrees
            MEDIAN_SECONDS_ATTR: (payload.get("feature_settings") or {}).get(MEDIAN_SECONDS_ATTR),
        },
        representation_stats={k: v.clone() for k, v in stats.items()} if stats is not None else None,
    )


def _check_members_agree(members: Sequence[_Member]) -> None:
    """Members must read the same features: same categories, feature dimension and extraction settings."""
    first = members[0]
    for member in members[1:]:
        if (member.category_mapping != first.category_mapping
                or member.model.config.feature_dim != first.model.config.feature_dim):
            raise CheckpointError(f"{member.path}: categories or feature dimension differ from {first.path}")
        if member.extraction != first.extraction:
            raise CheckpointError(
                f"{member.path}: trained on features extracted with other settings than {first.path} "
                f"({describe_difference(member.extraction, first.extraction)})"
            )


def describe_difference(mine: ExtractionSettings | None, theirs: ExtractionSettings | None) -> str:
    if mine is None or theirs is None:
        return "one records extraction settings, the other none"
    return "; ".join(mine.differences(theirs))


def extraction_settings_of(payload: Mapping[str, Any], path: Path) -> ExtractionSettings | None:
    """How a member's training features were made from videos: None when they were not (the seed's files,
    generated features) or by a backbone this version does not know."""
    # Imported here: extraction brings PyAV and the backbones, which only classifying video files needs.
    from ..features.extract.backbone_table import BACKBONE_SPECS
    from ..features.extract.settings import ExtractionSettings

    recorded = payload.get("feature_settings") or {}
    if recorded.get("backbone") not in BACKBONE_SPECS:
        return None
    try:
        return ExtractionSettings.from_dict(recorded)
    except VidtempoError as exc:
        raise CheckpointError(f"{path}: feature_settings: {exc}") from None
