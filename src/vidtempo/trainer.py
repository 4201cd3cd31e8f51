"""EnhancedTemporalModelTrainer: the seed system's training API, exact, resumable and safe.

Randomness: the model is initialised right after seeding from ``training_config.seed``; every epoch then
reseeds torch, numpy, random and the loader's generator from ``(seed, epoch)``. An epoch is therefore a
function of the weights and optimiser state it starts from and its number, which is what makes a run
resumed from a checkpoint end bit-for-bit where the uncut run ends (on the CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.optim import AdamW
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import CHECKPOINT_FORMAT_VERSION, load_checkpoint, save_checkpoint, write_json
from .config import ModelConfig, TrainingConfig, make_config
from .data import class_weights, make_loader
from .ensemble import Ensemble, model_outputs, model_probabilities
from .ensemble_fit import collapse_reason, fit_ensemble_settings
from .evaluation import evaluate_ensemble, write_evaluation_report
from .errors import CheckpointError, ConfigError
from .loss import FocalLoss
from .metrics import classification_metrics
from .model import SuperEnhancedTemporalModel
from .distributed import init_distributed
from .runtime import PrecisionPlan, autocast, derive_seed, resolve_device, seed_everything
from .store import FeatureSplit, read_splits
from .trust import representation_stats

HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_f1", "lr", "epoch_time")


@dataclass
class _RunState:
    """What changes from epoch to epoch besides weights, optimiser and scheduler."""

    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})
    best_val_acc: float = -1.0
    best_val_loss: float = float("inf")
    best_epoch: int = -1
    patience_counter: int = 0
    next_epoch: int = 0


class EnhancedTemporalModelTrainer:
    def __init__(
        self,
        features_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        device: str = "cuda",
        model_config: ModelConfig | Mapping[str, Any] | None = None,
        training_config: TrainingConfig | Mapping[str, Any] | None = None,
        quiet: bool = False,
        tensorboard_dir: str | os.PathLike | None = None,
    ) -> None:
        self.features_dir = Path(features_dir)
        self.tensorboard_dir = Path(tensorboard_dir) if tensorboard_dir else None
        self.output_dir = Path(output_dir)
        self.dist = init_distributed(device)
        self.device = resolve_device(device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.training_config = make_config(TrainingConfig, training_config)
        self._model_overrides = dataclasses.asdict(model_config) if isinstance(model_config, ModelConfig) else dict(
            model_config or {}
        )
        make_config(ModelConfig, self._model_overrides)  # fail early on unknown keys
        self.quiet = quiet
        self.splits: dict[str, FeatureSplit] = {}
        self._splits_suffix: str | None = None
        self._generator = torch.Generator()  # the loader's: worker seeds (augmentation), and draws
        self._sampler_generator = torch.Generator()  # draws in distributed runs: alike in every process

    # ----------------------------------------------------------------------------------------- data
    def load_features(self, feature_file_suffix: str = "_multiscale") -> dict[str, FeatureSplit]:
        """Read and cross-check the three splits once; later calls reuse them."""
        if self._splits_suffix != feature_file_suffix:
            limit_gb = self.training_config.max_in_memory_gb
            self.splits = read_splits(self.features_dir, feature_file_suffix,
                                      max_in_memory_bytes=None if limit_gb is None else int(limit_gb * 2**30))
            self._splits_suffix = feature_file_suffix
        return self.splits

    @property
    def category_mapping(self) -> dict[str, int]:
        return self.splits["train"].category_mapping

    @property
    def class_names(self) -> list[str]:
        return self.splits["train"].class_names

    @property
    def class_weights(self) -> torch.Tensor:
        train = self.splits["train"]
        return class_weights(train.labels, train.num_classes)

    @property
    def model_config(self) -> ModelConfig:
        return self._model_config()

    def _model_config(self, saved: Mapping[str, Any] | None = None) -> ModelConfig:
        """The model for these files: a resumed checkpoint's settings, then this trainer's overrides."""
        train = self.splits["train"]
        overrides = {**(saved or {}), **self._model_overrides}
        for key, actual in (("feature_dim", train.feature_dim), ("num_classes", train.num_classes)):
            if key in overrides and int(overrides[key]) != actual:
                raise ConfigError(f"model_config.{key}={overrides[key]} but the feature files have {actual}")
            overrides[key] = actual
        return make_config(ModelConfig, overrides)

    def create_dataloaders(
        self, batch_size: int | None = None, num_workers: int | None = None, feature_file_suffix: str = "_multiscale"
    ):
        """Train (class-balanced sampling, augmented), validation and test loaders."""
        cfg = make_config(TrainingConfig, self.training_config, batch_size=batch_size, num_workers=num_workers)
        return self._loaders_for(cfg, feature_file_suffix)

    def _loaders_for(self, cfg: TrainingConfig, feature_file_suffix: str):
        splits = self.load_features(feature_file_suffix)
        batch_size, num_workers = cfg.batch_size, cfg.num_workers
        self._generator.manual_seed(cfg.seed)
        self._sampler_generator.manual_seed(cfg.seed)
        train = make_loader(splits["train"], batch_size, num_workers, train=True, generator=self._generator,
                            bucket_by_length=cfg.bucket_by_length, rank=self.dist.rank,
                            world_size=self.dist.world_size, sampler_generator=self._sampler_generator)
        val = make_loader(splits["val"], batch_size, num_workers)
        test = make_loader(splits["test"], batch_size, num_workers)
        return train, val, test

    # ------------------------------------------------------------------------------------- training
    def train_single_model(
        self,
        num_epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        model_name: str = "model",
        feature_file_suffix: str = "_multiscale",
        results_dir: str | os.PathLike = "results",
        resume_from: str | os.PathLike | None = None,
        seed: int | None = None,
    ) -> tuple[SuperEnhancedTemporalModel, dict[str, Any]]:
        """Train one model; returns it with its best weights, and its results (also written as JSON)."""
        resume = load_checkpoint(resume_from) if resume_from else None
        base = resume["training_config"] if resume and resume.get("training_config") else self.training_config
        cfg = make_config(
            TrainingConfig, base, num_epochs=num_epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed
        )
        train_loader, val_loader, test_loader = self._loaders_for(cfg, feature_file_suffix)
        model_config = self._model_config(resume.get("model_config") if resume else None)
        plan = PrecisionPlan.for_device(cfg.precision, self.device)
        plan.apply_float32_math()
        amp_dtype = plan.amp_dtype

        seed_everything(cfg.seed)
        model = SuperEnhancedTemporalModel.from_config(model_config).to(self.device)
        criterion = FocalLoss(self.class_weights, gamma=cfg.focal_gamma, smoothing=cfg.label_smoothing).to(self.device)
        optimizer = AdamW(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
        scheduler = CosineAnnealingWarmRestarts(optimizer, T_0=cfg.scheduler_t0, T_mult=cfg.scheduler_t_mult,
                                                eta_min=cfg.eta_min)
        state = _RunState()
        if resume is not None:
            state = self._restore(resume, resume_from, model, optimizer, scheduler, model_config)
            plan.load_checkpoint_entries(resume)

        main = self.dist.is_main
        self.output_dir.mkdir(parents=True, exist_ok=True)
        run_record = {
            "model_name": model_name,
            "features_dir": str(self.features_dir),
            "feature_file_suffix": feature_file_suffix,
            "device": str(self.device),
            **plan.record(),
            "resumed_from": str(resume_from) if resume_from else None,
            "model_config": dataclasses.asdict(model_config),
            "training_config": dataclasses.asdict(cfg),
            "vidtempo_version": __version__,
            "torch_version": torch.__version__,
            "processes": self.dist.world_size,
        }
        if main:
            write_json(run_record, self.output_dir / f"{model_name}_config.json")

        context = _EpochContext(self, model, criterion, optimizer, scheduler, cfg, plan, model_name, model_config)
        board = self._tensorboard(model_name) if main else None
        stopped_early = False
        started = time.perf_counter()
        for epoch in range(state.next_epoch, cfg.num_epochs):
            self._seed_epoch(cfg.seed, epoch)
            epoch_start = time.perf_counter()
            train_metrics = context.train_epoch(train_loader, epoch)
            val_metrics = self._evaluate_loss(model, val_loader, criterion, amp_dtype)
            lr = optimizer.param_groups[0]["lr"]
            epoch_time = time.perf_counter() - epoch_start
            for key, value in (("train_loss", train_metrics["loss"]), ("train_acc", train_metrics["accuracy"]),
                               ("val_loss", val_metrics["loss"]), ("val_acc", val_metrics["accuracy"]),
                               ("val_f1", val_metrics["f1_weighted"]), ("lr", lr), ("epoch_time", epoch_time)):
                state.history[key].append(float(value))
            state.next_epoch = epoch + 1
            if board is not None:
                for tag, value in (("loss/train", train_metrics["loss"]), ("loss/val", val_metrics["loss"]),
                                   ("accuracy/train", train_metrics["accuracy"]), ("accuracy/val", val_metrics["accuracy"]),
                                   ("f1_weighted/val", val_metrics["f1_weighted"]), ("learning_rate", lr)):
                    board.add_scalar(tag, value, epoch)
                board.flush()
            if _improves(val_metrics, state, cfg.selection):
                state.best_val_acc, state.best_val_loss = val_metrics["accuracy"], val_metrics["loss"]
                state.best_epoch, state.patience_counter = epoch, 0
                if main:
                    context.save(self.output_dir / f"best_{model_name}.pt", epoch, state, val_metrics, train_metrics)
            else:
                state.patience_counter += 1
            if main and cfg.checkpoint_every and epoch > 0 and epoch % cfg.checkpoint_every == 0:
                context.save(self.output_dir / f"{model_name}_checkpoint_epoch_{epoch}.pt", epoch, state,
                             val_metrics, train_metrics)
                self._prune_checkpoints(model_name, cfg.keep_last_checkpoints)
            self._log_epoch(model_name, epoch, cfg.num_epochs, train_metrics, val_metrics, lr, epoch_time,
                            (time.perf_counter() - started) / (epoch + 1 - (resume["epoch"] + 1 if resume else 0)))
            if state.patience_counter >= cfg.patience:
                stopped_early = True
                self._log(f"{model_name}: no validation improvement for {cfg.patience} epochs; stopping early")
                break

        if board is not None:
            board.close()
        self.dist.barrier()  # rank 0 has written the best checkpoint
        best_path = self.output_dir / f"best_{model_name}.pt"
        best = load_checkpoint(best_path, map_location=self.device)
        model.load_state_dict(best["model_state_dict"])
        model.eval()
        if main:
            best["representation_stats"] = self._representation_stats(model, cfg.batch_size, amp_dtype)
            best["run_history"] = state.history  # the whole run; "history" stops at the best epoch
            save_checkpoint(best, best_path)
        self.dist.barrier()
        results = {
            "model_name": model_name,
            "best_epoch": state.best_epoch,
            "best_val_acc": state.best_val_acc,
            "best_val_metrics": best.get("metrics"),
            "stopped_early": stopped_early,
            "epochs_trained": state.next_epoch,
            "test": self._evaluate_probs(model, test_loader, tta=False, amp_dtype=amp_dtype),
            "test_tta": self._evaluate_probs(model, test_loader, tta=True, amp_dtype=amp_dtype),
            "history": state.history,
            "model_config": dataclasses.asdict(model_config),
            "training_config": dataclasses.asdict(cfg),
        }
        if main:
            write_json(results, Path(results_dir) / f"{model_name}_results.json")
        self._log(
            f"{model_name}: best epoch {state.best_epoch} (val acc {state.best_val_acc:.2f}%), "
            f"test acc {results['test']['accuracy']:.2f}% (TTA {results['test_tta']['accuracy']:.2f}%)"
        )
        return model, results

    def train_ensemble(
        self,
        num_models: int = 3,
        num_epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        feature_file_suffix: str = "_multiscale",
        results_dir: str | os.PathLike = "results",
    ) -> tuple[Ensemble, dict[str, Any]]:
        """Train members ``ensemble_model_1..N``, member i (0-based) seeded with ``seed + i``."""
        if num_models < 1:
            raise ConfigError(f"num_models must be at least 1, got {num_models}")
        for index in range(1, num_models + 1):
            self.train_member(index, num_models, num_epochs=num_epochs, batch_size=batch_size,
                              learning_rate=learning_rate, feature_file_suffix=feature_file_suffix,
                              results_dir=results_dir)
        return self.assemble_ensemble(num_models, feature_file_suffix=feature_file_suffix, results_dir=results_dir)

    def train_member(
        self,
        index: int,
        num_models: int,
        num_epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        feature_file_suffix: str = "_multiscale",
        results_dir: str | os.PathLike = "results",
    ) -> dict[str, Any]:
        """Train member ``index`` (1-based) of an ensemble of ``num_models``: seed ``seed + index - 1``.

        Members are independent, so separate processes or devices can train them at the same time
        (``vidtempo train --member I``); ``assemble_ensemble`` then combines them.
        """
        if not 1 <= index <= num_models:
            raise ConfigError(f"member {index} is outside 1..{num_models}")
        common = dict(num_epochs=num_epochs, batch_size=batch_size, learning_rate=learning_rate,
                      model_name=f"ensemble_model_{index}", feature_file_suffix=feature_file_suffix,
                      results_dir=results_dir)
        return self._train_member(common, index - 1, num_models)

    def assemble_ensemble(
        self, num_models: int, feature_file_suffix: str = "_multiscale", results_dir: str | os.PathLike = "results"
    ) -> tuple[Ensemble, dict[str, Any]]:
        """Combine trained members ``ensemble_model_1..N``: fit the ensemble's settings on validation, write
        ``ensemble.json``, score it on val and test, and write the results and the report."""
        self.load_features(feature_file_suffix)
        cfg = self.training_config
        names = [f"ensemble_model_{i + 1}" for i in range(num_models)]
        member_results = []
        for name in names:
            path = Path(results_dir) / f"{name}_results.json"
            try:
                member_results.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                raise ConfigError(f"{path}: missing or unreadable; train member {name} first") from None
        member_files = [f"best_{name}.pt" for name in names]
        ensemble = Ensemble.from_checkpoints([self.output_dir / f for f in member_files], self.device)
        ensemble.settings = fit_ensemble_settings(ensemble, self.splits["val"], cfg)
        if self.dist.is_main:
            ensemble.save_manifest(self.output_dir, member_files)
        evaluation = evaluate_ensemble(ensemble, {s: self.splits[s] for s in ("val", "test")})
        plain, tta = evaluation["test"]["plain"]["ensemble"], evaluation["test"]["tta"]["ensemble"]
        average = {
            "accuracy": float(np.mean([r["test"]["accuracy"] for r in member_results])),
            "accuracy_tta": float(np.mean([r["test_tta"]["accuracy"] for r in member_results])),
        }
        results = {
            "num_models": num_models,
            "ensemble": {"test": plain, "test_tta": tta},
            "members": member_results,
            "members_average": average,
            "improvement_over_members_average": {
                "accuracy": plain["accuracy"] - average["accuracy"],
                "accuracy_tta": tta["accuracy"] - average["accuracy_tta"],
            },
            "ensemble_settings": dataclasses.asdict(ensemble.settings),
            "calibration": evaluation["calibration"],
            "evaluation": {k: v for k, v in evaluation.items() if k not in ("calibration", "reliability", "predictions")},
        }
        report = Path(results_dir) / "report" / "report.md"
        if self.dist.is_main:
            write_json(results, Path(results_dir) / "ensemble_final_results.json")
            report = write_evaluation_report(
                Path(results_dir) / "report", evaluation, ensemble.class_names, self.splits["test"].labels,
                histories={r["model_name"]: r["history"] for r in member_results},
                notes=_ensemble_notes(member_results, ensemble), title=f"vidtempo ensemble of {num_models}")
        self._log(
            f"ensemble of {num_models}: test acc {plain['accuracy']:.2f}% (TTA {tta['accuracy']:.2f}%, views "
            f"{'+'.join(ensemble.settings.tta_views)}), members' average {average['accuracy']:.2f}%; report {report}"
        )
        return ensemble, results

    def _train_member(self, common: dict[str, Any], member: int, num_models: int) -> dict[str, Any]:
        """Train one member; a collapsed one is retrained with a fresh seed (attempt k of member i uses
        ``seed + i + k * num_models``, unused by any other member) up to ``collapse_retries`` times, and the
        best attempt is kept (with a warning if every attempt collapsed)."""
        cfg, name = self.training_config, common["model_name"]
        seed = cfg.seed + member
        best_path = self.output_dir / f"best_{name}.pt"
        attempts: list[dict[str, Any]] = []
        kept: dict[str, Any] | None = None
        for attempt in range(cfg.collapse_retries + 1):
            _, results = self.train_single_model(seed=seed, **common)
            reason = collapse_reason(results["best_val_metrics"], len(self.class_names), cfg)
            attempts.append({"seed": seed, "best_val_acc": results["best_val_acc"], "collapsed": reason})
            if kept is None or results["best_val_acc"] > kept["best_val_acc"]:
                kept = results
                if self.dist.is_main:
                    best_path.replace(self._stash(name))  # keep this attempt's weights aside
            if reason is None:
                break
            retry = attempt < cfg.collapse_retries
            next_seed = cfg.seed + member + (attempt + 1) * num_models
            warnings.warn(f"{name} (seed {seed}) collapsed: {reason}"
                          + (f"; retraining with seed {next_seed}" if retry else ""), RuntimeWarning)
            seed = next_seed
        if self.dist.is_main:
            self._stash(name).replace(best_path)
        self.dist.barrier()
        final_reason = next(a["collapsed"] for a in attempts if a["seed"] == kept["training_config"]["seed"])
        if final_reason:
            warnings.warn(f"{name}: every attempt collapsed; keeping seed {kept['training_config']['seed']} "
                          f"({final_reason})", RuntimeWarning)
        kept["collapse_check"] = {"attempts": attempts, "collapsed": final_reason}
        if self.dist.is_main:
            write_json(kept, Path(common["results_dir"]) / f"{name}_results.json")
        return kept

    def _stash(self, name: str) -> Path:
        return self.output_dir / f".best_{name}.kept.pt"

    # -------------------------------------------------------------------------------------- helpers
    def _seed_epoch(self, seed: int, epoch: int) -> None:
        epoch_seed = derive_seed(seed, epoch)
        # Each process augments and drops out differently; all draw the same videos.
        process_seed = derive_seed(seed, epoch, self.dist.rank) if self.dist.enabled else epoch_seed
        seed_everything(process_seed)
        self._generator.manual_seed(process_seed)
        self._sampler_generator.manual_seed(epoch_seed)

    def _restore(self, payload, path, model, optimizer, scheduler, model_config: ModelConfig) -> _RunState:
        saved_config = payload.get("model_config") or {}
        if saved_config and make_config(ModelConfig, saved_config) != model_config:
            raise CheckpointError(f"{path}: its model_config differs from this run's {dataclasses.asdict(model_config)}")
        if payload.get("category_mapping") not in (None, self.category_mapping):
            raise CheckpointError(f"{path}: its categories differ from the feature files'")
        missing = [k for k in ("optimizer_state_dict", "scheduler_state_dict", "history", "epoch") if k not in payload]
        if missing:
            raise CheckpointError(f"{path}: cannot resume exactly, missing {', '.join(missing)}")
        model.load_state_dict(payload["model_state_dict"])
        optimizer.load_state_dict(payload["optimizer_state_dict"])
        scheduler.load_state_dict(payload["scheduler_state_dict"])
        history = {k: list(payload["history"].get(k, [])) for k in HISTORY_KEYS}
        return _RunState(history, float(payload["best_val_acc"]), float(payload.get("best_val_loss", float("inf"))),
                         int(payload["best_epoch"]), int(payload["patience_counter"]), int(payload["epoch"]) + 1)

    def _prune_checkpoints(self, model_name: str, keep: int) -> None:
        prefix = f"{model_name}_checkpoint_epoch_"
        found = []
        for path in self.output_dir.glob(f"{prefix}*.pt"):
            tail = path.stem[len(prefix):]
            if tail.isdigit():
                found.append((int(tail), path))
        for _, path in sorted(found)[: max(len(found) - keep, 0)]:
            path.unlink()

    @torch.no_grad()
    def _evaluate_loss(self, model, loader, criterion, amp_dtype) -> dict[str, Any]:
        model.eval()
        total_loss, preds, labels = 0.0, [], []
        for features, targets, lengths in loader:
            features, targets = features.to(self.device, non_blocking=True), targets.to(self.device)
            with autocast(self.device, amp_dtype):
                logits = model(features, lengths)
            total_loss += float(criterion(logits, targets)) * targets.shape[0]
            preds.append(logits.argmax(-1).cpu())
            labels.append(targets.cpu())
        labels_all = torch.cat(labels).numpy()
        return classification_metrics(labels_all, torch.cat(preds).numpy(), self.class_names,
                                      loss=total_loss / max(len(labels_all), 1))

    def _tensorboard(self, model_name: str):
        if self.tensorboard_dir is None:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("TensorBoard logging needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter(log_dir=str(self.tensorboard_dir / model_name))

    def _representation_stats(self, model, batch_size: int, amp_dtype) -> dict[str, torch.Tensor]:
        """Class centroids of the training videos' pooled representations, for the trust score."""
        train = self.splits["train"]
        pooled = []
        for features, _, lengths in make_loader(train, batch_size, num_workers=0):
            pooled.append(model_outputs(model, features, lengths, amp_dtype=amp_dtype).pooled)
        return representation_stats(torch.cat(pooled), torch.from_numpy(train.labels), train.num_classes)

    def _evaluate_probs(self, model, loader, tta: bool, amp_dtype) -> dict[str, Any]:
        model.eval()
        preds, labels = [], []
        for features, targets, lengths in loader:
            preds.append(model_probabilities(model, features, lengths, tta=tta, amp_dtype=amp_dtype).argmax(-1))
            labels.append(targets)
        return classification_metrics(torch.cat(labels).numpy(), torch.cat(preds).numpy(), self.class_names)

    def _log(self, message: str) -> None:
        if not self.quiet and self.dist.is_main:
            tqdm.write(message, file=sys.stderr)

    def _log_epoch(self, name, epoch, num_epochs, train, val, lr, seconds, mean_seconds) -> None:
        eta = _format_duration(mean_seconds * (num_epochs - epoch - 1))
        self._log(
            f"{name} epoch {epoch + 1}/{num_epochs} | train loss {train['loss']:.4f} acc {train['accuracy']:.2f}% | "
            f"val loss {val['loss']:.4f} acc {val['accuracy']:.2f}% f1 {val['f1_weighted']:.2f}% | "
            f"lr {lr:.2e} | {seconds:.1f}s | ETA {eta}"
        )


def _ensemble_notes(member_results: list[dict[str, Any]], ensemble: Ensemble) -> list[str]:
    notes = []
    for r in member_results:
        check = r.get("collapse_check") or {}
        for attempt in check.get("attempts", []):
            if attempt["collapsed"]:
                notes.append(f"{r['model_name']} with seed {attempt['seed']} collapsed ({attempt['collapsed']}).")
    settings = ensemble.settings
    notes.append(f"TTA views chosen on validation: {' + '.join(settings.tta_views)}.")
    weights = "equal" if settings.member_weights is None else ", ".join(f"{w:.3g}" for w in settings.member_weights)
    notes.append(f"Member weights: {weights}.")
    notes.extend(settings.report.get("notes", []))
    return notes


def _improves(val_metrics: Mapping[str, Any], state: _RunState, selection: str) -> bool:
    """A strictly better validation accuracy; with ``accuracy_then_loss``, also an equal accuracy at a
    strictly lower validation loss (small validation sets tie often, and the later epoch fits better)."""
    if val_metrics["accuracy"] > state.best_val_acc:
        return True
    return (selection == "accuracy_then_loss" and val_metrics["accuracy"] == state.best_val_acc
            and val_metrics["loss"] < state.best_val_loss)


class _EpochContext:
    """The objects one run trains with, and how it steps and saves them."""

    def __init__(self, trainer, model, criterion, optimizer, scheduler, cfg, plan, model_name, model_config):
        self.trainer, self.model, self.criterion = trainer, model, criterion
        self.optimizer, self.scheduler, self.cfg, self.plan = optimizer, scheduler, cfg, plan
        self.model_name, self.model_config = model_name, model_config
        # Gradients are averaged across processes in a distributed run; the unwrapped model is saved.
        self.train_model = model
        if trainer.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [trainer.device.index] if trainer.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(model, device_ids=ids)

    def train_epoch(self, loader, epoch: int) -> dict[str, float]:
        trainer, model, device = self.trainer, self.model, self.trainer.device
        model.train()
        num_batches = len(loader)
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(loader, desc=f"{self.model_name} epoch {epoch + 1}", leave=False,
                   disable=trainer.quiet or not trainer.dist.is_main,
                   unit="batch", dynamic_ncols=True)
        for step, (features, targets, lengths) in enumerate(bar):
            features, targets = features.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            with self.plan.autocast():
                logits = self.train_model(features, lengths)
            loss = self.criterion(logits, targets)
            self.optimizer.zero_grad(set_to_none=True)
            self.plan.backward(loss)
            self.plan.step(self.optimizer, model.parameters(), self.cfg.grad_clip)
            # Per batch, with the fractional epoch: restarts after 20, 40, 80 ... epochs.
            self.scheduler.step(epoch + (step + 1) / num_batches)
            batch_loss = float(loss.detach())
            total_loss += batch_loss * targets.shape[0]
            correct += int((logits.detach().argmax(-1) == targets).sum())
            seen += targets.shape[0]
            bar.set_postfix(loss=f"{batch_loss:.4f}")
        if not math.isfinite(total_loss):
            raise FloatingPointError(f"{self.model_name}: the training loss became {total_loss} in epoch {epoch + 1}")
        return {"loss": total_loss / max(seen, 1), "accuracy": 100.0 * correct / max(seen, 1)}

    def save(self, path: Path, epoch: int, state: _RunState, val_metrics, train_metrics) -> None:
        trainer = self.trainer
        save_checkpoint(
            {
                "epoch": epoch,
                "model_state_dict": self.model.state_dict(),
                "optimizer_state_dict": self.optimizer.state_dict(),
                "scheduler_state_dict": self.scheduler.state_dict(),
                "metrics": val_metrics,
                "train_metrics": train_metrics,
                "history": state.history,
                "best_val_acc": state.best_val_acc,
                "best_val_loss": state.best_val_loss,
                "best_epoch": state.best_epoch,
                "patience_counter": state.patience_counter,
                "model_config": dataclasses.asdict(self.model_config),
                "training_config": dataclasses.asdict(self.cfg),
                "category_mapping": trainer.category_mapping,
                "feature_settings": trainer.splits["train"].extraction_settings(),
                "model_name": self.model_name,
                "format_version": CHECKPOINT_FORMAT_VERSION,
                "vidtempo_version": __version__,
                **self.plan.checkpoint_entries(),
            },
            path,
        )


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
