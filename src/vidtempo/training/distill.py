"""Distillation: one compact model (the student) trained to answer as an ensemble (its teacher) does.

Hinton et al. (2015): the ensemble's calibrated probabilities carry more than its hard labels (which classes a
video resembles, and how sure the ensemble is), and a model far smaller than any member can learn them. The
student is of the same architecture family as the members (``config.STUDENT_MODEL_CONFIG`` by default), and
its folder is an ensemble folder of one member: everything that takes an ensemble takes it.

What the student learns from (the test split is never read):

- the labelled videos, train + val pooled; one in ``selection_folds`` of them (stratified, by the seed) is
  held out to select the student's epoch (agreement with the teacher first, then accuracy, then loss) and to
  fit its temperature and trust threshold; it learns from the others;
- for each video, several views of its features: the TTA views (tta.py) and ``random_views`` random frame
  subsets. The teacher labels every view once, before training (its calibrated plain probabilities), and the
  labels are kept beside the checkpoints, so that a resumed run does not label again. Each epoch the student
  sees each drawn video in one of its views, chosen at random;
- the loss: ``soft_weight`` times the KL divergence from the teacher's distribution to the student's, both
  softened by ``temperature`` (times temperature squared, so that its gradients keep their scale), plus
  ``1 - soft_weight`` times the cross-entropy with the hard label. With ``mixup_alpha`` > 0 (TrainingConfig),
  pairs of videos are mixed and so are their teacher distributions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import checkpoint
from .._version import __version__
from ..config import STUDENT_MODEL_CONFIG, DistillConfig, ModelConfig, TrainingConfig, make_config
from ..ensemble.calibration import fit_temperature_to_distributions
from ..ensemble.ensemble import Ensemble, describe_difference, extraction_settings_of
from ..ensemble.fit import fit_ensemble_settings
from ..ensemble.metrics import classification_metrics
from ..ensemble.folds import fold_assignment, subset
from ..ensemble.tta import TTA_VIEWS, VIEW_INDICES
from ..errors import CheckpointError, ConfigError
from ..features.frame_order import prefix_steps
from ..features.store import MULTISCALE_SUFFIX, FeatureSplit, read_splits
from ..files import atomic_write, write_json
from ..progress import progress_bar
from ..runtime import autocast
from .data import MIN_AUGMENT_FRAMES, balanced_sampler, collate_features, mix_batch
from .run import TrainingRun, scores_better
from .single import SingleModelTrainer

STUDENT_NAME = "student"
DISTILL_RESULTS_NAME = "distill_results.json"
# The teacher's labels of every view, kept beside the student's checkpoints for a resumed run.
TEACHER_TARGETS_NAME = "teacher_targets.pt"
LABELLED_SPLITS = ("train", "val")


# ------------------------------------------------------------------------------------------------ views
def view_frames(length: int, view: int, seed: int, video: int, cfg: DistillConfig,
                prefix_lengths: Sequence[int] = ()) -> np.ndarray | None:
    """The steps of view ``view`` of a video of ``length`` steps (None: the view does not apply). Views
    0..3 are the TTA views; then, with prefix training on, one view per prefix length (the prefix of the
    coarse-to-fine order, features/frame_order.py); then random subsets of the steps in their order (at
    least one left out), drawn from ``(seed, video, view)`` alone, so any process rebuilds the same views."""
    if view < len(TTA_VIEWS):
        indices = VIEW_INDICES[TTA_VIEWS[view]](length)
        return None if indices is None else indices.numpy()
    view -= len(TTA_VIEWS)
    if view < len(prefix_lengths):
        return prefix_steps(length, prefix_lengths[view]) if prefix_lengths[view] < length else None
    if length <= MIN_AUGMENT_FRAMES:
        return None
    rng = np.random.default_rng([seed, video, view + len(TTA_VIEWS) + len(prefix_lengths)])
    ratio = rng.uniform(cfg.min_subset_ratio, 1.0)
    keep = min(max(int(round(length * ratio)), MIN_AUGMENT_FRAMES), length - 1)  # never the original again
    return np.sort(rng.choice(length, size=keep, replace=False))


def num_views(cfg: DistillConfig, prefix_lengths: Sequence[int] = ()) -> int:
    return len(TTA_VIEWS) + len(prefix_lengths) + int(cfg.random_views)


@dataclasses.dataclass
class TeacherTargets:
    """The teacher's calibrated probabilities of every view of every pooled video, ``[N, K, C]`` (NaN where a
    view does not apply), and what they were computed for (``key``)."""

    probs: np.ndarray
    key: dict[str, Any]


def label_views(teacher: Ensemble, pool: FeatureSplit, cfg: DistillConfig, seed: int, key: dict[str, Any],
                prefix_lengths: Sequence[int] = (), quiet: bool = False, batch_rows: int = 64) -> TeacherTargets:
    """Run the teacher once over every view of every video of ``pool``."""
    views = num_views(cfg, prefix_lengths)
    probs = np.full((pool.num_videos, views, teacher.num_classes), np.nan, dtype=np.float32)
    rows: list[tuple[int, int, np.ndarray]] = []

    def flush() -> None:
        feats = [torch.from_numpy(np.asarray(f)) for _, _, f in rows]
        lengths = torch.tensor([f.shape[0] for f in feats])
        padded = torch.zeros(len(feats), int(lengths.max()), feats[0].shape[1])
        for i, f in enumerate(feats):
            padded[i, : f.shape[0]] = f
        out = teacher.predict_proba(padded, lengths).float().numpy()
        for (video, view, _), p in zip(rows, out):
            probs[video, view] = p
        rows.clear()

    bar = progress_bar(range(pool.num_videos), quiet=quiet, desc="teacher labels views", unit="video")
    for video in bar:
        length = int(pool.num_frames[video])
        features = np.asarray(pool.features[video, :length], dtype=np.float32)
        for view in range(views):
            frames = view_frames(length, view, seed, video, cfg, prefix_lengths)
            if frames is not None:
                rows.append((video, view, features[frames]))
        if len(rows) >= batch_rows:
            flush()
    if rows:
        flush()
    return TeacherTargets(probs, key)


# --------------------------------------------------------------------------------------------- data
class DistillDataset(Dataset):
    """Items ``(features [T_i, D], label, length, teacher probs [C])``. For training (``random_view``), one
    item per video, in one of its views drawn at random (torch's default generator, seeded per epoch); for
    selection, one item per view of every video, so that the few held-out videos give many comparisons
    with the teacher."""

    def __init__(self, split: FeatureSplit, teacher_probs: np.ndarray, cfg: DistillConfig, seed: int,
                 pool_positions: np.ndarray, random_view: bool, prefix_lengths: Sequence[int] = ()) -> None:
        self.split, self.cfg, self.seed, self.random_view = split, cfg, seed, random_view
        self.prefix_lengths = tuple(prefix_lengths)
        self.teacher_probs = torch.from_numpy(teacher_probs)
        self.pool_positions = pool_positions  # each item's row in the pool, which its views are drawn from
        self.pairs = None if random_view else np.argwhere(~np.isnan(teacher_probs[:, :, 0]))  # (video, view)

    def __len__(self) -> int:
        return self.split.num_videos if self.pairs is None else len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, torch.Tensor]:
        view = 0
        if self.pairs is not None:
            index, view = (int(i) for i in self.pairs[index])
        length = int(self.split.num_frames[index])
        features = torch.from_numpy(np.asarray(self.split.features[index, :length], dtype=np.float32))
        probs = self.teacher_probs[index]
        if self.random_view:
            applicable = torch.nonzero(~torch.isnan(probs[:, 0]))[:, 0]
            view = int(applicable[torch.randint(len(applicable), ())])
        frames = view_frames(length, view, self.seed, int(self.pool_positions[index]), self.cfg, self.prefix_lengths)
        seq = features[torch.from_numpy(frames)]
        return seq, int(self.split.labels[index]), int(seq.shape[0]), probs[view]


def collate_distill(batch):
    features, labels, lengths = collate_features([item[:3] for item in batch])
    return features, labels, lengths, torch.stack([item[3] for item in batch])


# --------------------------------------------------------------------------------------------- loss
class DistillationLoss(nn.Module):
    """``soft_weight * T^2 * KL(teacher_T || student_T) + (1 - soft_weight) * CE(student, label)``, per video."""

    def __init__(self, temperature: float, soft_weight: float) -> None:
        super().__init__()
        self.temperature, self.soft_weight = float(temperature), float(soft_weight)

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        logits, t = logits.float(), self.temperature
        teacher_log = torch.log_softmax(torch.log(teacher_probs.float().clamp_min(1e-8)) / t, dim=-1)
        student_log = torch.log_softmax(logits / t, dim=-1)
        soft = (teacher_log.exp() * (teacher_log - student_log)).sum(-1) * t * t
        hard = F.cross_entropy(logits, targets, reduction="none")
        return self.soft_weight * soft + (1.0 - self.soft_weight) * hard

    def forward(self, logits, targets, teacher_probs) -> torch.Tensor:
        return self.per_sample(logits, targets, teacher_probs).mean()


# ---------------------------------------------------------------------------------------------- run
class DistillationRun(TrainingRun):
    """A ``TrainingRun`` whose loss is the distillation loss and whose epochs are selected by agreement with
    the teacher (then accuracy, then loss) on the held-out videos; its checkpoints carry the distillation's
    record (``distillation``: the teacher, the held-out videos, the distillation settings)."""

    def __init__(self, session: "StudentTrainer", cfg: TrainingConfig, model_config: ModelConfig, loaders,
                 distill_cfg: DistillConfig, record: Mapping[str, Any]) -> None:
        super().__init__(session, cfg, model_config, STUDENT_NAME, loaders)
        self.criterion = DistillationLoss(distill_cfg.temperature, distill_cfg.soft_weight)
        self.distill_cfg, self.record = distill_cfg, dict(record)
        self.last_agreement = float("nan")

    def batch_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The distillation loss of a batch ``(features, labels, lengths, teacher probabilities)``; with mixup,
        the teacher's distributions are mixed as the videos are, and the labels by their shares."""
        features, targets, lengths, soft = batch
        features, targets, soft = features.to(self.device), targets.to(self.device), soft.to(self.device)
        mixed = mix_batch(features, targets, lengths, self.cfg.mixup_alpha, 0.0)
        if mixed is not None:
            features, lengths = mixed.features, mixed.lengths
        with self.precision.autocast():
            logits = self.train_model(features, lengths)
        if mixed is None:
            return logits, targets, self.criterion(logits, targets, soft)
        share = mixed.own_share.to(self.device)
        soft = share[:, None] * soft + (1.0 - share[:, None]) * soft[mixed.partner.to(self.device)]
        own = self.criterion.per_sample(logits, targets, soft)
        other = self.criterion.per_sample(logits, mixed.partner_targets, soft)
        return logits, targets, (share * own + (1.0 - share) * other).mean()

    def _validate(self) -> dict[str, Any]:
        val_metrics = self._score(self.model)
        self.keeps_averaged = False
        if self.averaged is not None:
            averaged = self._score(self.averaged.module)
            if scores_better(averaged, val_metrics, self.cfg.selection):
                self.keeps_averaged, val_metrics = True, averaged
        self.last_agreement = val_metrics["agreement"]
        return val_metrics

    @torch.no_grad()
    def held_out_logits(self, model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(student logits, labels, teacher probabilities)`` of every view of every held-out video."""
        model.eval()
        logits, labels, teacher = [], [], []
        for features, targets, lengths, soft in self.val_loader:
            with autocast(self.device, self.amp_dtype):
                logits.append(model(features.to(self.device), lengths).float().cpu())
            labels.append(targets)
            teacher.append(soft)
        return torch.cat(logits), torch.cat(labels), torch.cat(teacher)

    def _score(self, model) -> dict[str, Any]:
        """Metrics of the labels, the distillation loss, and the agreement (percent) of the student's class
        with the teacher's, over every view of the held-out videos."""
        logits, labels, teacher = self.held_out_logits(model)
        loss = float(self.criterion(logits, labels, teacher))
        predicted, labels, teacher = logits.argmax(-1).numpy(), labels.numpy(), teacher.argmax(-1).numpy()
        metrics = classification_metrics(labels, predicted, self.session.class_names, loss=loss)
        metrics["agreement"] = 100.0 * float(np.mean(predicted == teacher))
        return metrics

    def _save(self, path: Path, epoch: int, val_metrics, train_metrics, more=None, then=None) -> None:
        more = {**(more or {}), "distillation": self.record}
        super()._save(path, epoch, val_metrics, train_metrics, more=more, then=then)

    def _log_epoch(self, epoch: int, r, remaining_seconds: float) -> None:
        super()._log_epoch(epoch, r, remaining_seconds)
        self.session.log(f"{self.model_name} epoch {epoch + 1}: agreement with the teacher {self.last_agreement:.2f}%")


# ------------------------------------------------------------------------------------------ session
class StudentTrainer(SingleModelTrainer):
    """Trains a student of a teacher ensemble on a feature folder's train and val splits (never its test)."""

    def __init__(self, features_dir: str | os.PathLike, output_dir: str | os.PathLike, device: str = "auto",
                 model_config: ModelConfig | Mapping[str, Any] | None = None,
                 training_config: TrainingConfig | Mapping[str, Any] | None = None,
                 distill_config: DistillConfig | Mapping[str, Any] | None = None, quiet: bool = False,
                 tensorboard_dir: str | os.PathLike | None = None) -> None:
        given = dataclasses.asdict(model_config) if isinstance(model_config, ModelConfig) else dict(model_config or {})
        super().__init__(features_dir, output_dir, device=device, model_config={**STUDENT_MODEL_CONFIG, **given},
                         training_config=training_config, quiet=quiet, tensorboard_dir=tensorboard_dir)
        self.distill_config = make_config(DistillConfig, distill_config)
        self._selection_loader: DataLoader | None = None

    def load_features(self, feature_file_suffix: str = MULTISCALE_SUFFIX) -> dict[str, FeatureSplit]:
        """The labelled splits only: a student never reads the test split."""
        if self._splits_suffix != feature_file_suffix:
            limit_gb = self.training_config.max_in_memory_gb
            self.labelled = read_splits(self.features_dir, feature_file_suffix, LABELLED_SPLITS,
                                        max_in_memory_bytes=None if limit_gb is None else int(limit_gb * 2**30))
            self._splits_suffix = feature_file_suffix
        return self.labelled

    def distill(self, teacher_source: str | os.PathLike, feature_file_suffix: str = MULTISCALE_SUFFIX,
                resume: bool = False, results_dir: str | os.PathLike | None = None) -> tuple[Ensemble, dict[str, Any]]:
        """Train the student (see the module's docstring), fit its calibration on the held-out videos, and
        write its folder: ``best_student.pt``, ``ensemble.json`` and the results. With ``resume``, a finished
        student is returned as it is, and an interrupted one continues from its latest periodic checkpoint."""
        if self.dist.enabled:
            raise ConfigError("vidtempo distill trains one small model in one process; start it without torchrun")
        results_path = Path(results_dir or self.output_dir / "results") / DISTILL_RESULTS_NAME
        best_path = self.output_dir / checkpoint.best_checkpoint_name(STUDENT_NAME)
        teacher_dir = Path(teacher_source)
        if teacher_dir.is_dir() and teacher_dir.resolve() == self.output_dir.resolve():
            raise ConfigError(f"{self.output_dir}: --output-dir is the teacher's folder; give the student a folder "
                              "of its own")
        if resume and (done := _finished(results_path, best_path, self.output_dir)):
            self.log(f"{STUDENT_NAME}: finished earlier; kept as it is")
            return Ensemble.from_checkpoints(self.output_dir, self.device), done
        teacher = Ensemble.from_checkpoints(teacher_source, self.device)
        labelled = self.load_features(feature_file_suffix)
        check_teacher_fits(teacher, labelled["train"], teacher_source)
        cfg, dcfg = self.training_config, self.distill_config
        pool = subset([labelled["train"], labelled["val"]], np.arange(sum(s.num_videos for s in labelled.values())))
        held_out = fold_assignment(pool.labels, dcfg.selection_folds, cfg.seed) == 0
        record = {
            "teacher": {"source": str(teacher_source), "files": [m["path"] for m in teacher.metadata],
                        "checkpoint_ids": [m.get("checkpoint_id") for m in teacher.metadata],
                        "members": len(teacher), "parameters": sum(_parameters(m) for m in teacher.models)},
            "features": {"dir": str(self.features_dir), "suffix": feature_file_suffix,
                         "fingerprint": pool_fingerprint(pool)},
            "learned_from": list(LABELLED_SPLITS),
            "selection_videos": int(held_out.sum()),
            "distill_config": dataclasses.asdict(dcfg),
        }
        resume_from = self._interrupted_run(record) if resume else None
        payload = checkpoint.load_checkpoint(resume_from) if resume_from else None
        if payload is not None:
            cfg = self._resumed_config(payload, resume_from, {})
        targets = self._teacher_targets(teacher, pool, cfg.seed, record)
        train_rows, selection_rows = np.flatnonzero(~held_out), np.flatnonzero(held_out)
        parts = [labelled["train"], labelled["val"]]
        self.splits = {"train": subset(parts, train_rows), "val": subset(parts, selection_rows)}
        loaders = self._loaders(cfg, targets.probs, train_rows, selection_rows)
        run = DistillationRun(self, cfg, self.resolve_model_config(payload.get("model_config") if payload else None),
                              loaders, dcfg, record)
        if payload is not None:
            run.restore(payload, resume_from)
        self._write_run_record(run, feature_file_suffix, resume_from)
        board = self._tensorboard(STUDENT_NAME)
        stopped_early = run.fit(board)
        if board is not None:
            board.close()
        # How well the kept epoch agrees with the teacher joins the record in the best checkpoint.
        selection = self.splits["val"]
        run.record.update(
            agreement=float(run.progress.best_val_agreement), accuracy=float(run.progress.best_val_acc),
            teacher_accuracy=100.0 * float(np.mean(targets.probs[selection_rows, 0].argmax(-1) == selection.labels)))
        self._reload_best(run, {"distillation": run.record})
        return self._finish(run, stopped_early, results_path)

    def _interrupted_run(self, record: Mapping[str, Any]) -> Path | None:
        """The latest periodic checkpoint of an interrupted student, checked to be of this teacher and these
        features; None when there is none."""
        found = [path for _, path in checkpoint.periodic_checkpoints(self.output_dir, STUDENT_NAME)]
        if not found:
            return None
        latest = max(found, key=lambda p: p.stat().st_mtime_ns)
        saved = checkpoint.load_checkpoint(latest, mmap=True).get("distillation") or {}
        for part, what in (("teacher", "teacher"), ("features", "feature files"), ("distill_config", "distill_config")):
            mine, theirs = _comparable(record, part), _comparable(saved, part)
            if mine != theirs:
                raise CheckpointError(f"{latest}: a student of another {what} than this run's ({part} differs); "
                                      "distill into a new --output-dir, or resume with the same teacher and features")
        return latest

    def _teacher_targets(self, teacher: Ensemble, pool: FeatureSplit, seed: int,
                         record: Mapping[str, Any]) -> TeacherTargets:
        """The teacher's labels of every view: read back from the student's folder when they were computed for
        this teacher, these features and these views, else computed and written there."""
        prefixes = tuple(self.training_config.prefix_lengths or ())
        key = {"teacher": record["teacher"]["checkpoint_ids"], "features": record["features"]["fingerprint"],
               "views": num_views(self.distill_config, prefixes), "prefix_lengths": list(prefixes),
               "min_subset_ratio": self.distill_config.min_subset_ratio, "seed": seed,
               "precision": teacher.precision, "vidtempo_version": __version__}
        path = self.output_dir / TEACHER_TARGETS_NAME
        if path.is_file():
            try:
                saved = torch.load(path, weights_only=True)
                if saved.get("key") == json.loads(json.dumps(key)):
                    self.log(f"{path}: the teacher's labels of an earlier run of this distillation, reused")
                    return TeacherTargets(saved["probs"].numpy(), key)
            except Exception:  # noqa: BLE001  a damaged file is computed again
                pass
        self.log(f"the teacher labels {pool.num_videos} videos in up to {key['views']} views each")
        targets = label_views(teacher, pool, self.distill_config, seed, key, prefixes, quiet=self.quiet)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: torch.save({"key": key, "probs": torch.from_numpy(targets.probs)}, tmp))
        return targets

    def _loaders(self, cfg: TrainingConfig, probs: np.ndarray, train_rows: np.ndarray,
                 selection_rows: np.ndarray) -> tuple[DataLoader, DataLoader, None]:
        """The training loader (class-balanced draws, a random view of each video) and the held-out one."""
        dcfg, train, selection = self.distill_config, self.splits["train"], self.splits["val"]
        prefixes = tuple(cfg.prefix_lengths or ())
        self._generator.manual_seed(cfg.seed)
        common = dict(num_workers=cfg.num_workers, collate_fn=collate_distill, generator=self._generator)
        train_loader = DataLoader(DistillDataset(train, probs[train_rows], dcfg, cfg.seed, train_rows, True, prefixes),
                                  batch_size=cfg.batch_size,
                                  sampler=balanced_sampler(train.labels, train.num_classes, self._generator), **common)
        held_out = DataLoader(DistillDataset(selection, probs[selection_rows], dcfg, cfg.seed, selection_rows, False, prefixes),
                              batch_size=cfg.batch_size, shuffle=False, **common)
        return train_loader, held_out, None

    def _finish(self, run: DistillationRun, stopped_early: bool,
                results_path: Path) -> tuple[Ensemble, dict[str, Any]]:
        """Fit the student's calibration on the held-out videos, and write its manifest and results."""
        selection, record = self.splits["val"], run.record
        student = Ensemble.from_checkpoints([run.best_path], self.device)
        settings = fit_ensemble_settings(student, selection, run.cfg,
                                         fallback_temperature=_held_out_temperature(run))
        settings.learned_from = list(LABELLED_SPLITS)
        settings.calibrated_on = f"held-out videos of train + val, {selection.num_videos} videos"
        if settings.early_exit:
            settings.early_exit["fitted_on"] = settings.calibrated_on
        student.settings = settings
        student.save_manifest(self.output_dir, [run.best_path.name])
        results = {
            "model_name": STUDENT_NAME,
            "distillation": record,
            "best_epoch": run.progress.best_epoch,
            "epochs_trained": run.progress.next_epoch,
            "stopped_early": stopped_early,
            "held_out": {"videos": selection.num_videos, "agreement": record["agreement"],
                         "accuracy": record["accuracy"], "teacher_accuracy": record["teacher_accuracy"]},
            "parameters": _parameters(student.models[0]),
            "teacher_parameters": run.record["teacher"]["parameters"],
            "ensemble_settings": dataclasses.asdict(settings),
            "history": run.progress.history(),
            "model_config": dataclasses.asdict(run.model_config),
            "training_config": dataclasses.asdict(run.cfg),
            "distill_config": dataclasses.asdict(self.distill_config),
        }
        write_json(results, results_path)
        self.log(f"{STUDENT_NAME}: best epoch {run.progress.best_epoch + 1}, on {selection.num_videos} held-out videos "
                 f"agreement with the teacher {results['held_out']['agreement']:.2f}%, accuracy "
                 f"{results['held_out']['accuracy']:.2f}% (teacher {record['teacher_accuracy']:.2f}%); "
                 f"{results['parameters']:,} parameters against the teacher's {results['teacher_parameters']:,}")
        return student, results


def _held_out_temperature(run: DistillationRun) -> tuple[float, str]:
    logits, _, teacher = run.held_out_logits(run.model)
    temperature = fit_temperature_to_distributions(logits, teacher)
    return temperature, f"fitted to the teacher's distributions on {len(teacher)} views of the held-out videos"


def distill(features_dir: str | os.PathLike, teacher: str | os.PathLike, output_dir: str | os.PathLike, *,
            model_config: ModelConfig | Mapping[str, Any] | None = None,
            training_config: TrainingConfig | Mapping[str, Any] | None = None,
            distill_config: DistillConfig | Mapping[str, Any] | None = None,
            feature_file_suffix: str = MULTISCALE_SUFFIX, device: str = "auto", quiet: bool = False,
            resume: bool = False, results_dir: str | os.PathLike | None = None,
            tensorboard_dir: str | os.PathLike | None = None) -> tuple[Ensemble, dict[str, Any]]:
    """Distil the ensemble in ``teacher`` (a checkpoint folder) into one student in ``output_dir``, from the
    train and val splits of ``features_dir``. Returns the student (an ``Ensemble`` of one) and its results."""
    trainer = StudentTrainer(features_dir, output_dir, device=device, model_config=model_config,
                             training_config=training_config, distill_config=distill_config, quiet=quiet,
                             tensorboard_dir=tensorboard_dir)
    return trainer.distill(teacher, feature_file_suffix, resume=resume, results_dir=results_dir)


# ------------------------------------------------------------------------------------------- checks
def check_teacher_fits(teacher: Ensemble, split: FeatureSplit, teacher_source: Any) -> None:
    """Refuse, in one line, a teacher of other categories, feature dimension or extraction settings than the
    feature files the student would learn from."""
    if teacher.category_mapping != split.category_mapping:
        raise ConfigError(f"{teacher_source}: the teacher's categories {teacher.category_mapping} differ from "
                          f"{split.path}'s {split.category_mapping}")
    dim = teacher.models[0].config.feature_dim
    if dim != split.feature_dim:
        raise ConfigError(f"{teacher_source}: the teacher reads {dim} features per frame, {split.path} has "
                          f"{split.feature_dim}")
    store = extraction_settings_of({"feature_settings": split.extraction_settings()}, split.path)
    if store != teacher.extraction:
        raise ConfigError(f"{teacher_source}: the teacher learned from features extracted with other settings than "
                          f"{split.path} ({describe_difference(teacher.extraction, store)})")


def pool_fingerprint(pool: FeatureSplit) -> str:
    """Names the labelled videos a student learns from (labels, frame counts, ids, categories, extraction
    settings), without reading their features."""
    digest = hashlib.sha256()
    for array in (pool.labels.astype(np.int64), pool.num_frames.astype(np.int64)):
        digest.update(array.tobytes())
    digest.update(json.dumps([pool.video_ids, pool.category_mapping, pool.feature_dim,
                              {k: str(v) for k, v in pool.extraction_settings().items()}], sort_keys=True,
                             default=str).encode())
    return digest.hexdigest()[:16]


def _comparable(record: Mapping[str, Any], part: str) -> Any:
    value = record.get(part)
    if part == "teacher" and value:
        return value.get("checkpoint_ids")
    if part == "features" and value:
        return value.get("fingerprint")
    return value


def _finished(results_path: Path, best_path: Path, folder: Path) -> dict[str, Any] | None:
    from ..ensemble.ensemble import MANIFEST_NAME

    if not (best_path.is_file() and (folder / MANIFEST_NAME).is_file()):
        return None
    try:
        return json.loads(results_path.read_text())
    except (OSError, ValueError):
        return None


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
