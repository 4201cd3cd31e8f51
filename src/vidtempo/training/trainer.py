"""EnhancedTemporalModelTrainer: the seed system's training API, exact, resumable and safe.

The trainer holds what its runs share (the feature splits, the device, the process group, the loaders'
random generators); ``TrainingRun`` (training_run.py) trains one model; ``ensemble_fit`` assembles members
into an ensemble; ``checkpoint`` owns the files a run leaves.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint
from ._version import __version__
from .config import ABSENT_SETTINGS_MEANT, ModelConfig, TrainingConfig, make_config
from .data import class_weights, make_loader
from .distributed import init_distributed
from .ensemble import Ensemble, inference_amp_dtype, model_outputs
from .ensemble_fit import assemble_ensemble
from .errors import ConfigError
from .files import write_json
from .folds import cross_fit_splits, cross_fits
from .metrics import classification_metrics
from .model import SuperEnhancedTemporalModel
from .runtime import derive_seed, resolve_device, seed_everything
from .store import MULTISCALE_SUFFIX, FeatureSplit, read_splits
from .members import train_member
from .training_run import TrainingRun
from .trust import representation_stats


# Settings a resumed run takes from the new call rather than from its checkpoint: none changes the math of
# the epochs already trained (the last six are decisions about the ensemble, taken after training).
RESUME_FOLLOWS_CALL = ("num_workers", "max_in_memory_gb", "checkpoint_every", "keep_last_checkpoints",
                       "num_epochs", "patience", "collapse_retries", "collapse_margin", "collapse_min_class_f1",
                       "member_weighting", "drop_members_below", "choose_tta_views", "calibrate")


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
        # The settings given explicitly: on resume, these must agree with the checkpoint's if they change the math.
        self._explicit_training = (set(training_config) if isinstance(training_config, Mapping) else
                                   {f.name for f in dataclasses.fields(TrainingConfig)} if training_config else set())
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
    def load_features(self, feature_file_suffix: str = MULTISCALE_SUFFIX) -> dict[str, FeatureSplit]:
        """Read and cross-check the three splits once; later calls reuse them."""
        if self._splits_suffix != feature_file_suffix:
            limit_gb = self.training_config.max_in_memory_gb
            self.splits = read_splits(self.features_dir, feature_file_suffix,
                                      max_in_memory_bytes=None if limit_gb is None else int(limit_gb * 2**30))
            self._splits_suffix = feature_file_suffix
            self._warn_about_absent_classes()
        return self.splits

    def _warn_about_absent_classes(self) -> None:
        val = self.splits["val"]
        counts = np.bincount(val.labels, minlength=val.num_classes)
        absent = [name for name, index in val.category_mapping.items() if counts[index] == 0]
        if absent and self.dist.is_main:
            warnings.warn(f"{val.path}: no validation videos of class {', '.join(absent)}; epochs are selected and "
                          "collapse is judged on the other classes", RuntimeWarning, stacklevel=3)

    @contextmanager
    def member_splits(self, index: int, num_models: int, feature_file_suffix: str = MULTISCALE_SUFFIX):
        """While member ``index`` (1-based) trains: the splits it learns from. The files' splits, or, with
        ``ensemble_strategy="cross_fit"`` and more than one member, its fold: train + val without fold
        ``index`` to train on, fold ``index`` to select epochs on (folds.py)."""
        splits = self.load_features(feature_file_suffix)
        if not cross_fits(self.training_config.ensemble_strategy, num_models):
            yield splits
            return
        self.splits = cross_fit_splits(splits, num_models, self.training_config.seed)[index - 1]
        try:
            yield self.splits
        finally:
            self.splits = splits

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

    def resolve_model_config(self, saved: Mapping[str, Any] | None = None) -> ModelConfig:
        """The model for these files: a resumed checkpoint's settings, then this trainer's overrides."""
        train = self.splits["train"]
        overrides = {**(saved or {}), **self._model_overrides}
        for key, actual in (("feature_dim", train.feature_dim), ("num_classes", train.num_classes)):
            if key in overrides and int(overrides[key]) != actual:
                raise ConfigError(f"model_config.{key}={overrides[key]} but the feature files have {actual}")
            overrides[key] = actual
        return make_config(ModelConfig, overrides)

    def create_dataloaders(self, batch_size: int | None = None, num_workers: int | None = None,
                           feature_file_suffix: str = MULTISCALE_SUFFIX, config: TrainingConfig | None = None):
        """Train (class-balanced sampling, augmented), validation and test loaders, for ``config`` (default:
        this trainer's) with ``batch_size`` and ``num_workers`` overriding it."""
        cfg = make_config(TrainingConfig, config or self.training_config, batch_size=batch_size,
                          num_workers=num_workers)
        splits = self.load_features(feature_file_suffix)
        self._generator.manual_seed(cfg.seed)
        self._sampler_generator.manual_seed(cfg.seed)
        train = make_loader(splits["train"], cfg.batch_size, cfg.num_workers, train=True, generator=self._generator,
                            bucket_by_length=cfg.bucket_by_length, rank=self.dist.rank,
                            world_size=self.dist.world_size, sampler_generator=self._sampler_generator)
        val = make_loader(splits["val"], cfg.batch_size, cfg.num_workers)
        test = make_loader(splits["test"], cfg.batch_size, cfg.num_workers)
        return train, val, test

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Reseed everything an epoch draws from (see training_run.py)."""
        epoch_seed = derive_seed(seed, epoch)
        # Each process augments and drops out differently; all draw the same videos.
        process_seed = derive_seed(seed, epoch, self.dist.rank) if self.dist.enabled else epoch_seed
        seed_everything(process_seed)
        self._generator.manual_seed(process_seed)
        self._sampler_generator.manual_seed(epoch_seed)

    # ------------------------------------------------------------------------------------- training
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

    def train_ensemble(
        self,
        num_models: int = 3,
        num_epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        feature_file_suffix: str = MULTISCALE_SUFFIX,
        results_dir: str | os.PathLike = "results",
        resume: bool = False,
    ) -> tuple[Ensemble, dict[str, Any]]:
        """Train members ``ensemble_model_1..N``, member i (0-based) seeded with ``seed + i``, then assemble
        them. With ``resume``, continue an interrupted call: finished members are kept as they are and the
        interrupted one continues from its latest periodic checkpoint (see ``train_member``)."""
        if num_models < 1:
            raise ConfigError(f"num_models must be at least 1, got {num_models}")
        for index in range(1, num_models + 1):
            self.train_member(index, num_models, num_epochs=num_epochs, batch_size=batch_size,
                              learning_rate=learning_rate, feature_file_suffix=feature_file_suffix,
                              results_dir=results_dir, resume=resume)
        return self.assemble_ensemble(num_models, feature_file_suffix=feature_file_suffix, results_dir=results_dir)

    def train_member(
        self,
        index: int,
        num_models: int,
        num_epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        feature_file_suffix: str = MULTISCALE_SUFFIX,
        results_dir: str | os.PathLike = "results",
        resume: bool = False,
    ) -> dict[str, Any]:
        """Train member ``index`` (1-based) of an ensemble of ``num_models``: seed ``seed + index - 1``.

        Members are independent, so separate processes or devices can train them at the same time
        (``vidtempo train --member I``); ``assemble_ensemble`` then combines them. A collapsed member is
        retrained with a fresh seed (attempt k of member i uses ``seed + i + k * num_models``, unused by any
        other member) up to ``collapse_retries`` times, and the best attempt is kept (with a warning if
        every attempt collapsed). With ``resume``, a finished member is returned as it is, and an interrupted
        one continues from its latest periodic checkpoint.
        """
        if not 1 <= index <= num_models:
            raise ConfigError(f"member {index} is outside 1..{num_models}")
        run_args = dict(num_epochs=num_epochs, batch_size=batch_size, learning_rate=learning_rate,
                        feature_file_suffix=feature_file_suffix, results_dir=results_dir)
        return train_member(self, index, num_models, resume, run_args)

    def assemble_ensemble(
        self, num_models: int, feature_file_suffix: str = MULTISCALE_SUFFIX, results_dir: str | os.PathLike = "results"
    ) -> tuple[Ensemble, dict[str, Any]]:
        """Combine trained members ``ensemble_model_1..N`` (see ``ensemble_fit.assemble_ensemble``)."""
        self.load_features(feature_file_suffix)
        return assemble_ensemble(self.output_dir, self.splits, self.training_config, num_models, results_dir,
                                 self.device, write=self.dist.is_main, log=self.log)

    # -------------------------------------------------------------------------------------- helpers
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
        }, self.output_dir / checkpoint.run_record_name(run.model_name))

    def _reload_best(self, run: TrainingRun) -> SuperEnhancedTemporalModel:
        """Load the run's best weights into its model and add what inference needs to the best checkpoint:
        class centroids for the trust score, and the whole run's history. When the last epoch was the best,
        its weights are in memory and its checkpoint is written now, once (see ``TrainingRun.fit``)."""
        if run.unsaved_best is not None:
            return self._save_last_epoch_as_best(run)
        self.dist.barrier()  # rank 0 has written the best checkpoint
        best = checkpoint.load_checkpoint(run.best_path, map_location=self.device)
        run.best_val_metrics = best.get("metrics")
        model = run.model
        model.load_state_dict(best["model_state_dict"])
        model.eval()
        if self.dist.is_main:
            best["representation_stats"] = self._representation_stats(model, run.cfg.batch_size)
            best["run_history"] = run.progress.history()
            checkpoint.save_checkpoint(best, run.best_path)
        self.dist.barrier()
        return model

    def _save_last_epoch_as_best(self, run: TrainingRun) -> SuperEnhancedTemporalModel:
        kept = run.kept_model.eval()  # the raw weights, or their average when the last epoch kept it
        if self.dist.is_main:
            run.save_unsaved_best({"representation_stats": self._representation_stats(kept, run.cfg.batch_size),
                                   "run_history": run.progress.history()})
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
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("TensorBoard logging needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter(log_dir=str(self.tensorboard_dir / model_name))

    def log(self, message: str) -> None:
        if not self.quiet and self.dist.is_main:
            tqdm.write(message, file=sys.stderr)

