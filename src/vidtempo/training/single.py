"""Training one model (the seed's ``train_single_model``): a ``TrainingRun`` from a fresh start or a
checkpoint, then the best weights reloaded, the test split scored plain and with TTA, and the results written.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .. import checkpoint
from .._version import __version__
from .._imports import require_extra
from ..config import ABSENT_SETTINGS_MEANT, TrainingConfig, make_config
from ..ensemble.ensemble import inference_amp_dtype, model_outputs
from ..ensemble.metrics import classification_metrics
from ..ensemble.trust import representation_stats
from ..errors import ConfigError
from ..features.store import MULTISCALE_SUFFIX
from ..files import write_json
from ..model.temporal import SuperEnhancedTemporalModel
from ..runtime import thread_record
from .data import make_loader
from .run import TrainingRun
from .session import TrainingSession


# Settings a resumed run takes from the new call rather than from its checkpoint: none changes the math of
# the epochs already trained (the last six are decisions about the ensemble, taken after training).
RESUME_FOLLOWS_CALL = ("num_workers", "max_in_memory_gb", "checkpoint_every", "keep_last_checkpoints",
                       "num_epochs", "patience", "collapse_retries", "collapse_margin", "collapse_min_class_f1",
                       "member_weighting", "drop_members_below", "choose_tta_views", "calibrate")


class SingleModelTrainer(TrainingSession):
    """A training session that trains one model at a time (``train_single_model``)."""

    def train_single_model(
        self,
        num_epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        model_name: str = "model",
        feature_file_suffix: str = MULTISCALE_SUFFIX,
        results_dir: str | os.PathLike = "results",
        resume_from: str | os.PathLike | None = None,
        seed: int | None = None,
    ) -> tuple[SuperEnhancedTemporalModel, dict[str, Any]]:
        """Train one model; returns it with its best weights, and its results (also written as JSON)."""
        resume = checkpoint.load_checkpoint(resume_from) if resume_from else None
        given = {k: v for k, v in (("num_epochs", num_epochs), ("batch_size", batch_size),
                                   ("learning_rate", learning_rate), ("seed", seed)) if v is not None}
        cfg = (self._resumed_config(resume, resume_from, given) if resume is not None
               else make_config(TrainingConfig, self.training_config, **given))
        loaders = self.create_dataloaders(feature_file_suffix=feature_file_suffix, config=cfg)
        run = TrainingRun(self, cfg, self.resolve_model_config(resume.get("model_config") if resume else None),
                          model_name, loaders)
        if resume is not None:
            run.restore(resume, resume_from)
        if self.dist.is_main:
            self._write_run_record(run, feature_file_suffix, resume_from)

        board = self._tensorboard(model_name) if self.dist.is_main else None
        stopped_early = run.fit(board)
        if board is not None:
            board.close()

        model = self._reload_best(run)
        test, test_tta = self._score_test(model, run.test_loader)
        results = {
            "model_name": model_name,
            "best_epoch": run.progress.best_epoch,
            "best_val_acc": run.progress.best_val_acc,
            "best_val_metrics": run.best_val_metrics,
            "stopped_early": stopped_early,
            "epochs_trained": run.progress.next_epoch,
            "test": test,
            "test_tta": test_tta,
            "history": run.progress.history(),
            "model_config": dataclasses.asdict(run.model_config),
            "training_config": dataclasses.asdict(cfg),
        }
        if self.dist.is_main:
            write_json(results, Path(results_dir) / checkpoint.results_name(model_name))
        self.log(f"{model_name}: best epoch {run.progress.best_epoch + 1} (val acc {run.progress.best_val_acc:.2f}%), "
                 f"test acc {results['test']['accuracy']:.2f}% (TTA {results['test_tta']['accuracy']:.2f}%)")
        return model, results

    def _resumed_config(self, payload: Mapping[str, Any], path, given: Mapping[str, Any]) -> TrainingConfig:
        """The configuration a resumed run continues with: the checkpoint's, except the settings that do not
        change the math (workers, memory, checkpoint cadence, number of epochs, patience), which follow this
        call. A math setting given explicitly with another value than the checkpoint's is refused."""
        saved_settings = payload.get("training_config")
        saved = make_config(TrainingConfig, {**ABSENT_SETTINGS_MEANT, **saved_settings} if saved_settings
                            else self.training_config)
        explicit = {k: getattr(self.training_config, k) for k in self._explicit_training} | dict(given)
        for key, value in explicit.items():
            if key not in RESUME_FOLLOWS_CALL and value != getattr(saved, key):
                raise ConfigError(f"{path}: was trained with {key}={getattr(saved, key)!r}, not {value!r}; resume "
                                  f"with the checkpoint's {key}, or start a new run")
        follows = {k: v for k, v in explicit.items() if k in RESUME_FOLLOWS_CALL}
        follows.setdefault("num_workers", self.training_config.num_workers)  # this machine's default
        return make_config(TrainingConfig, saved, **follows)

    def _write_run_record(self, run: TrainingRun, feature_file_suffix: str, resume_from) -> None:
        """How this run was configured, beside its checkpoints."""
        write_json({
            "model_name": run.model_name,
            "features_dir": str(self.features_dir),
            "feature_file_suffix": feature_file_suffix,
            "device": str(self.device),
            **run.precision.record(),
            "resumed_from": str(resume_from) if resume_from else None,
            "model_config": dataclasses.asdict(run.model_config),
            "training_config": dataclasses.asdict(run.cfg),
            "vidtempo_version": __version__,
            "torch_version": torch.__version__,
            "processes": self.dist.world_size,
            **thread_record(),
        }, self.output_dir / checkpoint.run_record_name(run.model_name))

    def _reload_best(self, run: TrainingRun, more: Mapping[str, Any] | None = None) -> SuperEnhancedTemporalModel:
        """Load the run's best weights into its model and add what inference needs to the best checkpoint:
        class centroids for the trust score, the whole run's history, and ``more`` entries. When the last epoch
        was the best, its weights are in memory and its checkpoint is written now, once (see ``TrainingRun.fit``)."""
        if run.unsaved_best is not None:
            return self._save_last_epoch_as_best(run, more)
        self.dist.barrier()  # rank 0 has written the best checkpoint
        best = checkpoint.load_checkpoint(run.best_path, map_location=self.device)
        run.best_val_metrics = best.get("metrics")
        model = run.model
        model.load_state_dict(best["model_state_dict"])
        model.eval()
        if self.dist.is_main:
            best["representation_stats"] = self._representation_stats(model, run.cfg.batch_size)
            best["run_history"] = run.progress.history()
            best.update(more or {})
            checkpoint.save_checkpoint(best, run.best_path)
        self.dist.barrier()
        return model

    def _save_last_epoch_as_best(self, run: TrainingRun,
                                 more: Mapping[str, Any] | None = None) -> SuperEnhancedTemporalModel:
        kept = run.kept_model.eval()  # the raw weights, or their average when the last epoch kept it
        if self.dist.is_main:
            run.save_unsaved_best({"representation_stats": self._representation_stats(kept, run.cfg.batch_size),
                                   "run_history": run.progress.history(), **(more or {})})
        run.best_val_metrics = dict(run.unsaved_best[1])
        if kept is not run.model:  # after the write: the checkpoint's raw weights are the model's own tensors
            run.model.load_state_dict(kept.state_dict())
        self.dist.barrier()
        return run.model.eval()

    # Test scores and trust centroids are computed as the ensemble computes at inference (its default precision,
    # inference_amp_dtype), not in the training precision: a member's numbers must match what it serves.
    def _representation_stats(self, model, batch_size: int) -> dict[str, torch.Tensor]:
        """Class centroids of the training videos' pooled representations, for the trust score."""
        train = self.splits["train"]
        amp_dtype = inference_amp_dtype(next(model.parameters()).device)
        pooled = []
        for features, _, lengths in make_loader(train, batch_size, num_workers=0):
            pooled.append(model_outputs(model, features, lengths, amp_dtype=amp_dtype).pooled)
        return representation_stats(torch.cat(pooled), torch.from_numpy(train.labels), train.num_classes)

    def _score_test(self, model, loader) -> tuple[dict[str, Any], dict[str, Any]]:
        """Metrics plain and with TTA, from one pass over every view: plain is the original view's."""
        model.eval()
        plain, tta, labels = [], [], []
        amp_dtype = inference_amp_dtype(next(model.parameters()).device)
        for features, targets, lengths in loader:
            outputs = model_outputs(model, features, lengths, tta=True, amp_dtype=amp_dtype, separate_views=True)
            plain.append(outputs.view_probs[0].argmax(-1))
            tta.append(outputs.probs.argmax(-1))
            labels.append(targets)
        y_true = torch.cat(labels).numpy()
        return tuple(classification_metrics(y_true, torch.cat(preds).numpy(), self.class_names)
                     for preds in (plain, tta))

    def _tensorboard(self, model_name: str):
        if self.tensorboard_dir is None:
            return None
        board = require_extra("torch.utils.tensorboard", "tensorboard", "TensorBoard logging (--tensorboard)")
        return board.SummaryWriter(log_dir=str(self.tensorboard_dir / model_name))
