"""Training the members of an ensemble: the seed of each attempt, retraining a collapsed member, and
continuing an interrupted ensemble from what it left on disk."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from .. import checkpoint
from ..ensemble.fit import collapse_reason
from ..files import write_json
from ..ensemble.folds import cross_fits
from .single import SingleModelTrainer


def train_member(trainer: SingleModelTrainer, index: int, num_models: int, resume: bool,
                 run_args: dict[str, Any]) -> dict[str, Any]:
    """See ``EnhancedTemporalModelTrainer.train_member``; ``run_args`` go to ``train_single_model``."""
    name = checkpoint.member_name(index)
    progress = _MemberProgress(trainer.output_dir, Path(run_args["results_dir"]), name)
    if resume and (done := progress.finished()):
        trainer.log(f"{name}: finished earlier; kept as it is")
        return done
    with trainer.member_splits(index, num_models, run_args["feature_file_suffix"]):
        attempts, kept = _train_attempts(trainer, progress, index, num_models, resume, run_args)
    if cross_fits(trainer.training_config.ensemble_strategy, num_models):
        kept["cross_fit"] = {"folds": num_models, "seed": trainer.training_config.seed}
    return _keep_best_attempt(trainer, progress, attempts, kept)


def _train_attempts(trainer, progress: "_MemberProgress", index: int, num_models: int, resume: bool,
                    run_args: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train until an attempt does not collapse or the retries are used up. Attempt k of member i (1-based)
    has seed ``seed + i - 1 + k * num_models``, which no other member uses. The best attempt's weights are
    put aside as it goes, and the attempts are recorded, so that an interrupted member continues."""
    cfg, name = trainer.training_config, progress.name
    attempts, kept, first, resume_from = progress.restart_point(resume, cfg.seed + index - 1, num_models)
    for attempt in range(first, cfg.collapse_retries + 1):
        seed = cfg.seed + index - 1 + attempt * num_models
        _, results = trainer.train_single_model(seed=seed, resume_from=resume_from, model_name=name, **run_args)
        resume_from = None
        reason = collapse_reason(results["best_val_metrics"], len(trainer.class_names), cfg)
        attempts.append({"seed": seed, "best_val_acc": results["best_val_acc"], "collapsed": reason})
        if kept is None or results["best_val_acc"] > kept["best_val_acc"]:
            kept = results
            if trainer.dist.is_main:
                progress.best_path.replace(progress.stash)
        if trainer.dist.is_main:
            progress.save_attempts(attempts, kept)
        if reason is None:
            break
        retry = f"; retraining with seed {seed + num_models}" if attempt < cfg.collapse_retries else ""
        warnings.warn(f"{name} (seed {seed}) collapsed: {reason}{retry}", RuntimeWarning)
    return attempts, kept


def _keep_best_attempt(trainer, progress: "_MemberProgress", attempts: list[dict[str, Any]],
                       kept: dict[str, Any]) -> dict[str, Any]:
    """Put the best attempt's weights back in place and write the member's results."""
    if trainer.dist.is_main:
        progress.stash.replace(progress.best_path)
    trainer.dist.barrier()
    kept_seed = kept["training_config"]["seed"]
    final_reason = next(a["collapsed"] for a in attempts if a["seed"] == kept_seed)
    if final_reason:
        warnings.warn(f"{progress.name}: every attempt collapsed; keeping seed {kept_seed} ({final_reason})",
                      RuntimeWarning)
    kept["collapse_check"] = {"attempts": attempts, "collapsed": final_reason}
    if trainer.dist.is_main:
        write_json(kept, progress.results_path)
        progress.attempts_path.unlink(missing_ok=True)
    return kept


class _MemberProgress:
    """Where the training of one ensemble member stands on disk, so that an interrupted ensemble continues:
    its results file (written when the member is finished), its periodic checkpoints, and, between
    collapse-retry attempts, the attempts so far and the best attempt's weights put aside."""

    def __init__(self, output_dir: Path, results_dir: Path, name: str) -> None:
        self.output_dir, self.name = output_dir, name
        self.best_path = output_dir / checkpoint.best_checkpoint_name(name)
        self.stash = output_dir / f".{self.best_path.name}.kept"  # the best attempt's weights so far
        self.attempts_path = output_dir / f".{name}.attempts.json"
        self.results_path = results_dir / checkpoint.results_name(name)

    def finished(self) -> dict[str, Any] | None:
        """The member's results if it finished (every attempt done and its best weights in place)."""
        try:
            results = json.loads(self.results_path.read_text())
        except (OSError, ValueError):
            return None
        return results if "collapse_check" in results and self.best_path.is_file() else None

    def restart_point(self, resume: bool, first_seed: int,
                      num_models: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None, int, Path | None]:
        """``(attempts done, best results so far, attempt to run next, checkpoint to resume it from)``."""
        if not resume:
            return [], None, 0, None
        latest = self._latest_periodic()
        if latest is None:
            return [], None, 0, None
        seed = int(checkpoint.load_checkpoint(latest, mmap=True)["training_config"]["seed"])
        attempt, rest = divmod(seed - first_seed, num_models)
        state = self._read_attempts()
        if rest or attempt < 0 or len(state["attempts"]) != attempt or (attempt and not self.stash.is_file()):
            return [], None, 0, None  # not this member's interrupted run: start it again
        return state["attempts"], state["kept"], attempt, latest

    def save_attempts(self, attempts: list[dict[str, Any]], kept: dict[str, Any]) -> None:
        write_json({"attempts": attempts, "kept": kept}, self.attempts_path)

    def _read_attempts(self) -> dict[str, Any]:
        try:
            return json.loads(self.attempts_path.read_text())
        except (OSError, ValueError):
            return {"attempts": [], "kept": None}

    def _latest_periodic(self) -> Path | None:
        """The periodic checkpoint written last (an older run's leftovers may have higher epochs)."""
        found = [path for _, path in checkpoint.periodic_checkpoints(self.output_dir, self.name)]
        return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None
