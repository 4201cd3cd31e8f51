"""EnhancedTemporalModelTrainer: the seed system's training API, exact, resumable and safe.

What its runs share is a ``TrainingSession`` (session.py); ``SingleModelTrainer`` (single.py) trains one
model through a ``TrainingRun`` (run.py); members.py trains the members of an ensemble and
``ensemble.fit`` assembles them; ``checkpoint`` owns the files a run leaves.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import DEFAULT_NUM_MODELS
from ..ensemble.ensemble import Ensemble
from ..ensemble.fit import assemble_ensemble
from ..errors import ConfigError
from ..features.store import MULTISCALE_SUFFIX
from .members import train_member
from .single import SingleModelTrainer


class EnhancedTemporalModelTrainer(SingleModelTrainer):
    """The seed's training API: ``create_dataloaders``, ``train_single_model``, ``train_ensemble``."""

    def train_ensemble(
        self,
        num_models: int = DEFAULT_NUM_MODELS,
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
