"""What the runs of one trainer share: the feature splits, the device and process group, the configurations
given, the loaders' random generators, and the log. ``TrainingRun`` (run.py) and the members (members.py)
read it; ``single.SingleModelTrainer`` and the seed's ``EnhancedTemporalModelTrainer`` build on it.
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

from ..config import ModelConfig, TrainingConfig, make_config
from ..ensemble.folds import cross_fit_splits, cross_fits
from ..errors import ConfigError
from ..features.store import MULTISCALE_SUFFIX, FeatureSplit, read_splits
from ..runtime import derive_seed, resolve_device, seed_everything
from .data import class_weights, make_loader
from .distributed import init_distributed


class TrainingSession:
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
        ``index`` to train on, fold ``index`` to select epochs on (ensemble/folds.py)."""
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
                            world_size=self.dist.world_size, sampler_generator=self._sampler_generator,
                            prefix_lengths=cfg.prefix_lengths)
        val = make_loader(splits["val"], cfg.batch_size, cfg.num_workers)
        test = make_loader(splits["test"], cfg.batch_size, cfg.num_workers)
        return train, val, test

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Reseed everything an epoch draws from (see run.py)."""
        epoch_seed = derive_seed(seed, epoch)
        # Each process augments and drops out differently; all draw the same videos.
        process_seed = derive_seed(seed, epoch, self.dist.rank) if self.dist.enabled else epoch_seed
        seed_everything(process_seed)
        self._generator.manual_seed(process_seed)
        self._sampler_generator.manual_seed(epoch_seed)

    def log(self, message: str) -> None:
        if not self.quiet and self.dist.is_main:
            tqdm.write(message, file=sys.stderr)
