"""One training run of one model: the epoch loop, what it decides after each epoch, and its checkpoints.

Weight averaging (``weight_averaging="ema"``): an exponential moving average of the weights is updated after
every optimiser step, with a decay per step such that an epoch's weights lose half their share in
``ema_half_life_epochs`` epochs. Each epoch scores both the raw and the averaged weights on validation and
keeps the better (by the run's selection rule); the history's validation numbers and a checkpoint's
``model_state_dict`` are those of the weights kept, so every reader of the seed's keys gets them. Such a
checkpoint also holds ``averaged_state_dict`` (the average, to continue it) and, when it kept the average,
``training_state_dict`` (the raw weights the optimiser continues from).

Randomness: the model is initialised right after seeding from ``training_config.seed``; every epoch then
reseeds torch, numpy, random and the loader's generators from ``(seed, epoch)``. An epoch is therefore a
function of the weights and optimiser state it starts from and its number, which is what makes a run
resumed from a checkpoint end bit-for-bit where the uncut run ends (on the CPU).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.optim import AdamW
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .. import checkpoint
from ..config import ModelConfig, TrainingConfig, make_config
from .data import mix_batch
from .session import TrainingSession
from ..errors import CheckpointError
from ..model.loss import FocalLoss
from ..ensemble.metrics import classification_metrics
from ..model.temporal import TemporalModel
from ..progress import progress_bar
from ..runtime import PrecisionPlan, autocast, seed_everything



@dataclass
class EpochRecord:
    """What one epoch measured; a run's history is the list of these (saved as one list per field)."""

    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    val_f1: float
    lr: float
    epoch_time: float


HISTORY_KEYS = tuple(f.name for f in dataclasses.fields(EpochRecord))


@dataclass
class Progress:
    """Where a run stands: the epochs done, the best one so far, and the patience used up."""

    records: list[EpochRecord] = field(default_factory=list)
    best_val_acc: float = -1.0
    best_val_loss: float = float("inf")
    best_epoch: int = -1  # 0-based, as the seed's checkpoints store it
    patience_counter: int = 0
    next_epoch: int = 0
    periodic_epochs: list[int] = field(default_factory=list)  # this run's periodic checkpoints on disk
    # A distilled student's best agreement with its teacher on validation (percent), which its epochs are
    # selected on before accuracy (training/distill.py); None for a model trained on labels alone.
    best_val_agreement: float | None = None

    def history(self) -> dict[str, list[float]]:
        return {key: [getattr(r, key) for r in self.records] for key in HISTORY_KEYS}

    def checkpoint_fields(self) -> dict[str, Any]:
        fields = {"history": self.history(), "best_val_acc": self.best_val_acc, "best_val_loss": self.best_val_loss,
                  "best_epoch": self.best_epoch, "patience_counter": self.patience_counter,
                  "periodic_epochs": list(self.periodic_epochs)}
        if self.best_val_agreement is not None:
            fields["best_val_agreement"] = self.best_val_agreement
        return fields

    @classmethod
    def from_checkpoint(cls, payload: Mapping[str, Any]) -> "Progress":
        history = payload["history"]
        epochs = len(history.get("val_acc", []))
        columns = {key: list(history.get(key, [float("nan")] * epochs)) for key in HISTORY_KEYS}
        records = [EpochRecord(**{key: float(columns[key][i]) for key in HISTORY_KEYS}) for i in range(epochs)]
        agreement = payload.get("best_val_agreement")
        return cls(records, float(payload["best_val_acc"]), float(payload.get("best_val_loss", float("inf"))),
                   int(payload["best_epoch"]), int(payload["patience_counter"]), int(payload["epoch"]) + 1,
                   [int(e) for e in payload.get("periodic_epochs", [])],
                   None if agreement is None else float(agreement))

    def improves(self, val_metrics: Mapping[str, Any], selection: str) -> bool:
        incumbent = {"accuracy": self.best_val_acc, "loss": self.best_val_loss}
        if "agreement" in val_metrics:
            incumbent["agreement"] = -1.0 if self.best_val_agreement is None else self.best_val_agreement
        return scores_better(val_metrics, incumbent, selection)

    def record(self, epoch: int, record: EpochRecord, improved: bool, agreement: float | None = None) -> None:
        self.records.append(record)
        self.next_epoch = epoch + 1
        if improved:
            self.best_val_acc, self.best_val_loss = record.val_acc, record.val_loss
            self.best_epoch, self.patience_counter = epoch, 0
            if agreement is not None:
                self.best_val_agreement = agreement
        else:
            self.patience_counter += 1


def scores_better(candidate: Mapping[str, Any], incumbent: Mapping[str, Any], selection: str) -> bool:
    """A strictly better validation accuracy; with ``accuracy_then_loss``, also an equal accuracy at a
    strictly lower validation loss (small validation sets tie often, and the later epoch fits better).
    When both carry an ``agreement`` with a teacher (a distilled student), a higher agreement comes first and
    accuracy decides between equal agreements."""
    if "agreement" in candidate and "agreement" in incumbent and candidate["agreement"] != incumbent["agreement"]:
        return candidate["agreement"] > incumbent["agreement"]
    if candidate["accuracy"] > incumbent["accuracy"]:
        return True
    return (selection == "accuracy_then_loss" and candidate["accuracy"] == incumbent["accuracy"]
            and candidate["loss"] < incumbent["loss"])


class TrainingRun:
    """The model, loss, optimiser and schedule of one run, and the loop that trains them."""

    def __init__(self, session: TrainingSession, cfg: TrainingConfig, model_config: ModelConfig,
                 model_name: str, loaders) -> None:
        self.session, self.cfg, self.model_config, self.model_name = session, cfg, model_config, model_name
        self.train_loader, self.val_loader, self.test_loader = loaders
        self.device, self.dist = session.device, session.dist
        self.precision = PrecisionPlan.for_device(cfg.precision, self.device)
        self.precision.apply_float32_math()
        self.amp_dtype = self.precision.amp_dtype
        seed_everything(cfg.seed)
        self.model = TemporalModel(model_config).to(self.device)
        self.criterion = FocalLoss(session.class_weights, gamma=cfg.focal_gamma,
                                   smoothing=cfg.label_smoothing).to(self.device)
        self.optimizer = AdamW(self.model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.999),
                               weight_decay=cfg.weight_decay)
        self.scheduler = CosineAnnealingWarmRestarts(self.optimizer, T_0=cfg.scheduler_t0,
                                                     T_mult=cfg.scheduler_t_mult, eta_min=cfg.eta_min)
        self.averaged = self._averaged_model()
        self.keeps_averaged = False  # whether this epoch's kept weights are the average
        self.progress = Progress()
        self.best_val_metrics: dict[str, Any] | None = None  # the best epoch's, once training ends
        # (epoch, val metrics, train metrics) of a last epoch that improved: its best checkpoint is written
        # once, by the trainer, with what inference needs added (see ``fit``).
        self.unsaved_best: tuple[int, dict[str, Any], dict[str, Any]] | None = None
        # Checkpoints during training are written in the background while the next epoch runs.
        self.writer = checkpoint.CheckpointWriter()
        # Gradients are averaged across processes in a distributed run; the unwrapped model is saved.
        self.train_model = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)

    def _averaged_model(self) -> AveragedModel | None:
        if self.cfg.weight_averaging != "ema":
            return None
        steps_per_epoch = max(len(self.train_loader), 1)
        decay = 0.5 ** (1.0 / (self.cfg.ema_half_life_epochs * steps_per_epoch))
        return AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @property
    def kept_model(self) -> torch.nn.Module:
        """The weights this epoch keeps: the raw ones, or their average when it scored better."""
        return self.averaged.module if self.keeps_averaged else self.model

    @property
    def output_dir(self) -> Path:
        return self.session.output_dir

    @property
    def best_path(self) -> Path:
        return self.output_dir / checkpoint.best_checkpoint_name(self.model_name)

    def restore(self, payload: Mapping[str, Any], path) -> None:
        """Continue the run saved in ``payload`` exactly where it stopped."""
        saved_config = payload.get("model_config") or {}
        if saved_config and make_config(ModelConfig, saved_config) != self.model_config:
            raise CheckpointError(
                f"{path}: its model_config differs from this run's {dataclasses.asdict(self.model_config)}")
        if payload.get("category_mapping") not in (None, self.session.category_mapping):
            raise CheckpointError(f"{path}: its categories differ from the feature files'")
        checkpoint.check_resumable(payload, path)
        self.model.load_state_dict(payload.get("training_state_dict", payload["model_state_dict"]))
        if self.averaged is not None:
            if "averaged_state_dict" not in payload:
                raise CheckpointError(f"{path}: has no averaged weights (weight_averaging={self.cfg.weight_averaging!r} "
                                      "needs them to continue)")
            self.averaged.load_state_dict(payload["averaged_state_dict"])
        self.optimizer.load_state_dict(payload["optimizer_state_dict"])
        self.scheduler.load_state_dict(payload["scheduler_state_dict"])
        self.progress = Progress.from_checkpoint(payload)
        self.precision.load_checkpoint_entries(payload)
        if "periodic_epochs" not in payload:  # written before runs recorded their periodic checkpoints
            self.progress.periodic_epochs = [e for e, _ in checkpoint.periodic_checkpoints(
                self.output_dir, self.model_name) if e <= int(payload["epoch"])]

    # ----------------------------------------------------------------------------------------- loop
    def fit(self, board=None) -> bool:
        """Train until ``num_epochs`` or early stopping; returns whether it stopped early.

        The best checkpoint is written on each improvement, except when the last epoch improves and writes
        no periodic checkpoint: then ``unsaved_best`` says so, and the trainer writes it once when training
        ends, with the class centroids and run history it adds to the best checkpoint anyway. A periodic
        checkpoint is never newer than the best checkpoint on disk."""
        try:
            return self._fit_epochs(board)
        finally:
            self.writer.close()  # every checkpoint of the run is whole on disk before anything reads one

    def _fit_epochs(self, board) -> bool:
        cfg, progress = self.cfg, self.progress
        if cfg.checkpoint_every:
            self._warn_about_other_runs()
        first_epoch, clock = progress.next_epoch, EpochClock()
        for epoch in range(first_epoch, cfg.num_epochs):
            self.session.seed_epoch(cfg.seed, epoch)
            epoch_start = time.perf_counter()
            train_metrics = self.train_epoch(epoch)
            val_metrics = self._validate()
            record = EpochRecord(*map(float, (
                train_metrics["loss"], train_metrics["accuracy"], val_metrics["loss"], val_metrics["accuracy"],
                val_metrics["f1_weighted"], self.optimizer.param_groups[0]["lr"], time.perf_counter() - epoch_start)))
            (improved,) = self.dist.broadcast_decisions(progress.improves(val_metrics, cfg.selection))
            progress.record(epoch, record, improved, val_metrics.get("agreement"))
            if board is not None:
                _log_to_board(board, record, epoch)
            periodic = bool(cfg.checkpoint_every) and epoch > 0 and epoch % cfg.checkpoint_every == 0
            if improved and epoch == cfg.num_epochs - 1 and not periodic:
                self.unsaved_best = (epoch, val_metrics, train_metrics)
            elif improved:
                self._save(self.best_path, epoch, val_metrics, train_metrics)
            if periodic:
                self._save_periodic(epoch, val_metrics, train_metrics)
            clock.add(time.perf_counter() - epoch_start)
            self._log_epoch(epoch, record, clock.remaining_seconds(cfg.num_epochs - epoch - 1))
            if progress.patience_counter >= cfg.patience:
                self.session.log(f"{self.model_name}: no validation improvement for {cfg.patience} epochs; "
                                 "stopping early")
                return True
        return False

    def _validate(self) -> dict[str, Any]:
        """Validation metrics of the weights this epoch keeps (see ``kept_model``)."""
        val_metrics = evaluate_loss(self.model, self.val_loader, self.criterion, self.amp_dtype,
                                    self.session.class_names)
        self.keeps_averaged = False
        if self.averaged is not None:
            averaged = evaluate_loss(self.averaged.module, self.val_loader, self.criterion, self.amp_dtype,
                                     self.session.class_names)
            (self.keeps_averaged,) = self.dist.broadcast_decisions(
                scores_better(averaged, val_metrics, self.cfg.selection))
            if self.keeps_averaged:
                val_metrics = averaged
        return val_metrics

    def train_epoch(self, epoch: int) -> dict[str, float]:
        loader = self.train_loader
        self.model.train()
        num_batches = len(loader)
        total_loss, correct, seen = 0.0, 0, 0
        bar = progress_bar(loader, quiet=self.session.quiet or not self.dist.is_main, in_logs=False,
                           desc=f"{self.model_name} epoch {epoch + 1}", leave=False, unit="batch")
        for step, batch in enumerate(bar):
            logits, targets, loss = self.batch_loss(batch)
            self.optimise(loss, epoch + (step + 1) / num_batches)
            batch_loss = float(loss.detach())
            total_loss += batch_loss * targets.shape[0]
            correct += int((logits.detach().argmax(-1) == targets).sum())
            seen += targets.shape[0]
            bar.set_postfix(loss=f"{batch_loss:.4f}")
        if not math.isfinite(total_loss):
            raise FloatingPointError(f"{self.model_name}: the training loss became {total_loss} in epoch {epoch + 1}")
        return {"loss": total_loss / max(seen, 1), "accuracy": 100.0 * correct / max(seen, 1)}

    def batch_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, labels, loss)`` of one training batch ``(features, labels, lengths)``, mixed as the run's
        mixup and cutmix say."""
        features, targets, lengths = batch
        features, targets = features.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
        mixed = mix_batch(features, targets, lengths, self.cfg.mixup_alpha, self.cfg.cutmix_alpha)
        if mixed is not None:
            features, lengths = mixed.features, mixed.lengths
        with self.precision.autocast():
            logits = self.train_model(features, lengths)
        loss = (self.criterion(logits, targets) if mixed is None
                else mixed.loss(self.criterion.per_sample, logits, targets))
        return logits, targets, loss

    def optimise(self, loss: torch.Tensor, fractional_epoch: float) -> None:
        """One optimiser step on ``loss``, then the schedule (per batch, with the fractional epoch: restarts
        after 20, 40, 80 ... epochs) and the weight average."""
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        self.precision.step(self.optimizer, self.model.parameters(), self.cfg.grad_clip)
        self.scheduler.step(fractional_epoch)
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)

    def _save_periodic(self, epoch: int, val_metrics, train_metrics) -> None:
        """Write this epoch's periodic checkpoint and keep the run's ``keep_last_checkpoints`` latest. Only
        this run's files are pruned: another run's (of the same name, in the same folder) are left alone."""
        epochs = self.progress.periodic_epochs + [epoch]
        cut = max(len(epochs) - self.cfg.keep_last_checkpoints, 0)
        self.progress.periodic_epochs = epochs[cut:]
        pruned = [self.output_dir / checkpoint.periodic_checkpoint_name(self.model_name, old) for old in epochs[:cut]]

        def prune() -> None:  # the older checkpoints go once the new one is whole on disk
            for path in pruned:
                path.unlink(missing_ok=True)

        self._save(self.output_dir / checkpoint.periodic_checkpoint_name(self.model_name, epoch), epoch,
                   val_metrics, train_metrics, then=prune)

    def _warn_about_other_runs(self) -> None:
        others = [e for e, _ in checkpoint.periodic_checkpoints(self.output_dir, self.model_name)
                  if e not in self.progress.periodic_epochs]
        if others and self.dist.is_main:
            warnings.warn(
                f"{self.output_dir}: periodic checkpoints of an earlier run of {self.model_name} (epochs "
                f"{', '.join(map(str, others))}) are kept as they are and not pruned; one this run reaches is "
                "replaced", RuntimeWarning, stacklevel=3)

    def _save(self, path: Path, epoch: int, val_metrics, train_metrics,
              more: Mapping[str, Any] | None = None, then=None) -> None:
        """Start writing this epoch's checkpoint (on the main process), with ``more`` entries, in the
        background (see ``checkpoint.CheckpointWriter``); ``then`` runs once it is written."""
        if not self.dist.is_main:
            return
        session = self.session
        extra = dict(self.precision.checkpoint_entries())
        if self.averaged is not None:
            extra["averaged_state_dict"] = self.averaged.state_dict()
            extra["kept_weights"] = "averaged" if self.keeps_averaged else "raw"
            if self.keeps_averaged:
                extra["training_state_dict"] = self.model.state_dict()
        self.writer.write(checkpoint.build_checkpoint(
            epoch=epoch, model=self.kept_model, optimizer=self.optimizer, scheduler=self.scheduler,
            progress=self.progress.checkpoint_fields(), val_metrics=val_metrics, train_metrics=train_metrics,
            model_config=self.model_config, training_config=self.cfg, category_mapping=session.category_mapping,
            feature_settings=session.splits["train"].extraction_settings(), model_name=self.model_name,
            extra={**extra, **(more or {})}), path, then=then)

    def save_unsaved_best(self, more: Mapping[str, Any]) -> None:
        """Write the best checkpoint ``fit`` left to the end (``unsaved_best``), with ``more`` entries."""
        self._save(self.best_path, *self.unsaved_best, more=more)
        self.writer.close()

    def _log_epoch(self, epoch: int, r: EpochRecord, remaining_seconds: float) -> None:
        eta = format_duration(remaining_seconds)
        self.session.log(
            f"{self.model_name} epoch {epoch + 1}/{self.cfg.num_epochs} | train loss {r.train_loss:.4f} "
            f"acc {r.train_acc:.2f}% | val loss {r.val_loss:.4f} acc {r.val_acc:.2f}% f1 {r.val_f1:.2f}% | "
            f"lr {r.lr:.2e} | {r.epoch_time:.1f}s | ETA {eta}"
        )


@torch.no_grad()
def evaluate_loss(model, loader, criterion, amp_dtype, class_names) -> dict[str, Any]:
    """Validation loss and classification metrics of ``model`` over ``loader``."""
    model.eval()
    device = next(model.parameters()).device
    total_loss, preds, labels = 0.0, [], []
    for features, targets, lengths in loader:
        features, targets = features.to(device, non_blocking=True), targets.to(device)
        with autocast(device, amp_dtype):
            logits = model(features, lengths)
        total_loss += float(criterion(logits, targets)) * targets.shape[0]
        preds.append(logits.argmax(-1).cpu())
        labels.append(targets.cpu())
    labels_all = torch.cat(labels).numpy()
    return classification_metrics(labels_all, torch.cat(preds).numpy(), class_names,
                                  loss=total_loss / max(len(labels_all), 1))


def _log_to_board(board, r: EpochRecord, epoch: int) -> None:
    for tag, value in (("loss/train", r.train_loss), ("loss/val", r.val_loss), ("accuracy/train", r.train_acc),
                       ("accuracy/val", r.val_acc), ("f1_weighted/val", r.val_f1), ("learning_rate", r.lr)):
        board.add_scalar(tag, value, epoch)
    board.flush()


class EpochClock:
    """The time left in a run, from its recent epochs: when another process starts on the machine (or stops),
    the ETA follows within a few epochs instead of averaging the change away over the whole run."""

    RECENT_EPOCHS = 3

    def __init__(self) -> None:
        self.recent: list[float] = []

    def add(self, seconds: float) -> None:
        self.recent = [*self.recent, seconds][-self.RECENT_EPOCHS:]

    def remaining_seconds(self, epochs_left: int) -> float:
        if not self.recent:
            return 0.0
        return sum(self.recent) / len(self.recent) * epochs_left


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"

