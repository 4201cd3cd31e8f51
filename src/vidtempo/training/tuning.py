"""``vidtempo tune``: the recipe (model size, regularisation, optimiser, schedule) fitted to the user's videos.

Each Optuna trial trains one model per cross-fitting fold (the folds of the ``cross_fit`` ensemble: train +
val pooled, stratified, ``folds`` of them) and scores the out-of-fold validation accuracy, ties broken by the
validation loss; the test split is never read. The first fold reports every epoch's validation accuracy, so
Optuna's median pruner stops trials that trail. The recipe handed on is the cheapest to train of the trials
the validation cannot tell from the best (``choose_trial``). The search space is declared here
(``default_space``, scaled by the number of labelled videos) and ``--space`` replaces any part of it. The
study lives in its storage (SQLite beside the outputs by default): a rerun continues it, and processes
sharing the storage share the study and its trial budget.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

from .._imports import require_extra
from ..config import ModelConfig, TrainingConfig, make_config
from ..ensemble.folds import cross_fit_splits
from ..errors import ConfigError, VidtempoError
from ..features.store import FeatureSplit, read_splits
from ..files import write_json
from ..progress import progress_bar
from .trainer import EnhancedTemporalModelTrainer
from .run import TrainingRun

MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)} - {"feature_dim", "num_classes"}
TRAINING_KEYS = {f.name for f in dataclasses.fields(TrainingConfig)}
SPEC_TYPES = ("int", "float", "categorical", "fixed")
# A tie in accuracy (percent) is broken by the loss: this much accuracy per unit of loss, far below 1/N.
LOSS_TIE_BREAK = 1e-6
# The user attribute that marks the trial of the recipe the trials start from: "whole" when all its searched
# settings lie in the space, "partial" when the sampler chose some of them.
STARTING_RECIPE = "starting_recipe"


def default_space(num_videos: int) -> dict[str, dict[str, Any]]:
    """The search space for ``num_videos`` labelled videos: small models for a few hundred, the seed's sizes
    within reach for thousands. Few videos make few steps per epoch, so their schedules run to more epochs."""
    many, few = num_videos >= 2000, num_videos < 500
    epochs = {"low": 30, "high": 200} if few else {"low": 10, "high": 150 if many else 100}
    patience = {"low": 10, "high": 50} if few else {"low": 5, "high": 25}
    return {
        "hidden_dim": {"type": "categorical", "choices": [64, 128, 256] + ([512, 768] if many else [])},
        "num_lstm_layers": {"type": "int", "low": 1, "high": 4 if many else 2},
        "num_attention_heads": {"type": "categorical", "choices": [2, 4, 8]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
        "focal_gamma": {"type": "float", "low": 0.0, "high": 3.0},
        "batch_size": {"type": "categorical", "choices": [b for b in (8, 16, 32, 48, 64) if b <= max(8, num_videos // 4)]},
        "num_epochs": {"type": "int", **epochs},
        "patience": {"type": "int", **patience},
        "weight_averaging": {"type": "categorical", "choices": ["none", "ema"]},
        "mixup_alpha": {"type": "categorical", "choices": [0.0, 0.2, 0.4]},
    }


def resolve_space(num_videos: int, overrides: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The default space with ``overrides`` (``--space``) put in; each entry checked."""
    space = default_space(num_videos)
    if overrides is not None:
        if not overrides:
            raise ConfigError("--space: an empty search space")
        space.update(overrides)
    for name, spec in space.items():
        _check_spec(name, spec)
    return space


def _check_spec(name: str, spec: Any) -> None:
    if name not in MODEL_KEYS | TRAINING_KEYS:
        raise ConfigError(f"--space: unknown setting {name!r} (model or training settings only)")
    if not isinstance(spec, Mapping) or spec.get("type") not in SPEC_TYPES:
        raise ConfigError(f"--space: {name} needs a type of {', '.join(SPEC_TYPES)}")
    if spec["type"] in ("int", "float"):
        if not all(isinstance(spec.get(k), (int, float)) and not isinstance(spec.get(k), bool) for k in ("low", "high")):
            raise ConfigError(f"--space: {name} needs numbers low and high")
        if spec["low"] > spec["high"]:
            raise ConfigError(f"--space: {name} has low {spec['low']} > high {spec['high']}")
        if spec.get("log") and spec["low"] <= 0:
            raise ConfigError(f"--space: {name} is searched on a log scale, so low must be positive")
    if spec["type"] == "categorical" and not (isinstance(spec.get("choices"), list) and spec["choices"]):
        raise ConfigError(f"--space: {name} needs a non-empty list of choices")
    if spec["type"] == "fixed" and "value" not in spec:
        raise ConfigError(f"--space: {name} needs a value")


def suggest(trial, space: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model settings, training settings)`` for one trial."""
    chosen = {}
    for name, spec in space.items():
        if spec["type"] == "int":
            chosen[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        elif spec["type"] == "float":
            chosen[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
        elif spec["type"] == "categorical":
            chosen[name] = trial.suggest_categorical(name, list(spec["choices"]))
        else:
            chosen[name] = spec["value"]
    model = {k: v for k, v in chosen.items() if k in MODEL_KEYS}
    training = {k: v for k, v in chosen.items() if k in TRAINING_KEYS}
    return model, training


class _EpochReporter:
    """Stands where a TensorBoard writer goes in ``TrainingRun.fit``: moves the trial's progress bar on each
    epoch and, on the fold that reports (``report``), gives the trial each epoch's validation accuracy and
    stops a trial the pruner gives up on."""

    def __init__(self, trial, bar, report: bool) -> None:
        self.trial, self.bar, self.report = trial, bar, report

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        if tag != "accuracy/val":
            return
        self.bar.update(1)
        self.bar.set_postfix(val_acc=f"{value:.1f}%")
        if not self.report:
            return
        import optuna

        self.trial.report(float(value), step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {step + 1} (validation accuracy {value:.2f}%)")

    def flush(self) -> None:
        pass


# What every trial's training is, whatever the recipe: no periodic checkpoints in a scratch folder, the
# cross-fitting folds, one try per member (a collapsed member scores what it scored).
TRIAL_TRAINING = {"checkpoint_every": 0, "num_workers": 0, "ensemble_strategy": "cross_fit", "collapse_retries": 0}
# A failed trial is recorded as failed, with its reason, and the study goes on: out of memory (RuntimeError),
# a loss that became NaN (FloatingPointError), settings that do not go together (ConfigError).
TRIAL_FAILURES = (RuntimeError, ValueError, ArithmeticError, MemoryError, VidtempoError)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The settings every trial starts from (the user's ``--model-config`` / ``--training-config``), which
    the searched settings override."""

    model: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    training: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def first_trial(self, space: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], bool]:
        """The searched settings this recipe (defaults filled in) gives, where they lie in the space, and whether
        all of them do (``whole``): the study tries them first, and when the recipe is whole, ``choose_trial``
        keeps it unless a trial is clearly better."""
        values = {**dataclasses.asdict(ModelConfig()), **dataclasses.asdict(TrainingConfig()), **self.model,
                  **self.training}
        point = {}
        for name, spec in space.items():
            value = values.get(name)
            if spec["type"] == "categorical" and value in spec["choices"]:
                point[name] = value
            elif (spec["type"] in ("int", "float") and isinstance(value, (int, float))
                  and not isinstance(value, bool) and spec["low"] <= value <= spec["high"]):
                point[name] = value
        searched = [name for name, spec in space.items() if spec["type"] != "fixed"]
        return point, all(name in point for name in searched)


class Objective:
    """Out-of-fold validation accuracy of one trial's recipe over the cross-fitting folds."""

    def __init__(self, features_dir: Path, suffix: str, folds: int, seed: int, space: Mapping[str, Any],
                 device: str = "cpu", recipe: Recipe = Recipe(), quiet: bool = True) -> None:
        self.features_dir, self.suffix, self.folds, self.seed, self.space = features_dir, suffix, folds, seed, space
        self.device, self.recipe, self.quiet = device, recipe, quiet

    def __call__(self, trial) -> float:
        try:
            return self._score(trial)
        except TRIAL_FAILURES as exc:  # Optuna records the trial as failed; the reason goes with it
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:300])
            raise

    def _score(self, trial) -> float:
        model, training = suggest(trial, self.space)
        model, training = {**self.recipe.model, **model}, {**self.recipe.training, **training}
        trial.set_user_attr("model_config", model)  # the whole recipe, fixed entries included
        trial.set_user_attr("training_config", training)
        training = {**training, **TRIAL_TRAINING, "seed": self.seed}
        correct, total, losses = 0.0, 0, []
        with tempfile.TemporaryDirectory(prefix="vidtempo-tune-") as scratch:
            trainer = EnhancedTemporalModelTrainer(self.features_dir, scratch, device=self.device,
                                                   model_config=model, training_config=training, quiet=True)
            epochs = trainer.training_config.num_epochs
            with progress_bar(total=self.folds * epochs, desc=f"trial {trial.number}", unit="epoch",
                              quiet=self.quiet) as bar:
                for fold in range(1, self.folds + 1):
                    accuracy, loss, size = self._train_fold(trainer, _EpochReporter(trial, bar, fold == 1), fold)
                    correct, total = correct + accuracy * size, total + size
                    losses.append(loss)
                    bar.update(fold * epochs - bar.n)  # the epochs early stopping left out
        trial.set_user_attr("val_loss", float(sum(losses) / len(losses)))
        return correct / total - LOSS_TIE_BREAK * trial.user_attrs["val_loss"]

    def _train_fold(self, trainer, reporter: _EpochReporter, fold: int) -> tuple[float, float, int]:
        with trainer.member_splits(fold, self.folds, self.suffix) as splits:
            cfg = trainer.training_config
            loaders = trainer.create_dataloaders(feature_file_suffix=self.suffix, config=cfg)
            run = TrainingRun(trainer, cfg, trainer.resolve_model_config(), f"fold_{fold}", loaders)
            if reporter.report:  # every fold trains the same model: its size, once, for ``training_cost``
                reporter.trial.set_user_attr("parameters", sum(p.numel() for p in run.model.parameters()))
            run.fit(reporter)
            best = run.progress.best_epoch
            loss = run.progress.history()["val_loss"][best]
            return run.progress.best_val_acc, float(loss), len(splits["val"].labels)


def features_fingerprint(splits: Mapping[str, FeatureSplit]) -> str:
    """What a study's trials were scored on: the files' categories, sizes and feature dimension."""
    facts = {name: [split.category_mapping, len(split.labels), split.feature_dim, split.labels.tolist()]
             for name, split in sorted(splits.items()) if name in ("train", "val")}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def run_tuning(features_dir: str | os.PathLike, output_dir: str | os.PathLike, suffix: str, trials: int,
               timeout_s: float | None = None, storage: str | None = None, study_name: str = "vidtempo",
               space_overrides: Mapping[str, Any] | None = None, seed: int = 42, folds: int = 3,
               quiet: bool = False, device: str = "cpu", recipe: Recipe = Recipe()) -> dict[str, Any]:
    """Run (or continue) the study until it holds ``trials`` finished trials or ``timeout_s`` passes; then
    write the best configs and the report. Every trial starts from ``recipe``, and the first tries the
    recipe's own values. Returns the chosen trial's summary (``choose_trial``)."""
    features_dir, output_dir = Path(features_dir), Path(output_dir)
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    optuna = require_extra("optuna", "tune", "vidtempo tune")  # before the feature files are read
    splits = read_splits(features_dir, suffix, ("train", "val"))
    labelled = len(splits["train"].labels) + len(splits["val"].labels)
    space = resolve_space(labelled, space_overrides)
    if storage is None:
        output_dir.mkdir(parents=True, exist_ok=True)
    identity = {"space": space, "recipe": dataclasses.asdict(recipe), "folds": folds, "seed": seed}
    previous_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is written here, reasons included
    try:
        study = _open_study(optuna, storage or f"sqlite:///{output_dir / 'study.db'}", study_name, identity,
                            features_fingerprint(splits), seed)
        _enqueue_starting_recipe(optuna, study, recipe, space)
        objective = Objective(features_dir, suffix, folds, seed, space, device, recipe, quiet)
        _optimize(optuna, study, objective, trials, timeout_s, quiet)
    finally:
        optuna.logging.set_verbosity(previous_verbosity)
    return write_outputs(study, output_dir, labelled)


def _enqueue_starting_recipe(optuna, study, recipe: Recipe, space: Mapping[str, Any]) -> None:
    """Queue the recipe's own trial unless the study holds one that completed, was pruned (it trailed), waits
    or runs: a study whose first such trial failed or was killed tries the recipe again."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.WAITING,
              optuna.trial.TrialState.RUNNING)
    if any(t.user_attrs.get(STARTING_RECIPE) is not None for t in study.get_trials(deepcopy=False, states=states)):
        return
    point, whole = recipe.first_trial(space)
    study.enqueue_trial(point, user_attrs={STARTING_RECIPE: "whole" if whole else "partial"})


def _optimize(optuna, study, objective: Objective, trials: int, timeout_s: float | None, quiet: bool) -> None:
    """Trials until the study holds ``trials`` finished ones (whoever ran them) or ``timeout_s`` passes."""
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))

    def one_line(study, trial) -> None:
        outcome = _outcome(trial)
        log(f"trial {trial.number}: " + (f"complete {outcome}" if trial.state.name == "COMPLETE" else outcome)
            + f" {json.dumps(trial.params)}")

    budget = optuna.study.MaxTrialsCallback(trials, states=finished)
    if len(study.get_trials(deepcopy=False, states=finished)) < trials:
        study.optimize(objective, timeout=timeout_s, callbacks=[budget, one_line], catch=TRIAL_FAILURES,
                       gc_after_trial=True)


# Processes that open a new storage at once race to create its tables: the losers try again.
STORAGE_ATTEMPTS, STORAGE_RETRY_S = 5, 0.5


def _open_study(optuna, storage_url: str, name: str, identity: Mapping[str, Any], fingerprint: str, seed: int):
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna_warning_class())  # the heartbeat is "experimental"
                storage = optuna.storages.RDBStorage(storage_url, heartbeat_interval=30, grace_period=90)
            study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                        sampler=optuna.samplers.TPESampler(seed=seed),
                                        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3))
            break
        except (IntegrityError, OperationalError, optuna.exceptions.DuplicatedStudyError):
            if attempt == STORAGE_ATTEMPTS - 1:
                raise ConfigError(f"--storage {storage_url}: cannot be opened (busy)") from None
            time.sleep(STORAGE_RETRY_S * (attempt + 1))
        except Exception as exc:  # SQLAlchemy and Optuna raise many kinds for an unusable URL
            raise ConfigError(f"--storage {storage_url}: cannot be opened ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]})") from None
    recorded = study.user_attrs
    space_text = json.dumps(identity, sort_keys=True)
    if recorded.get("space", space_text) != space_text:
        raise ConfigError(f"study {name!r} in {storage_url} was made with another search space, base recipe, "
                          "--folds or --seed; give another --study-name")
    if recorded.get("features", fingerprint) != fingerprint:
        raise ConfigError(f"study {name!r} in {storage_url} was made on other feature files; give another "
                          "--study-name")
    study.set_user_attr("space", space_text)
    study.set_user_attr("features", fingerprint)
    return study


def training_cost(trial) -> float | None:
    """What a trial's recipe costs to train: its model's parameters times its ``num_epochs`` (the most epochs
    early stopping lets a run take). Per video and epoch, training computes in proportion to the parameters
    (the LSTM's and the attention's weights are applied to every frame), and every trial of a study trains
    on the same videos, so this is the recipe's compute. It is taken from the recipe rather than measured
    seconds because a trial's seconds move with the machine's load and the processes sharing the study, and
    the same recipe must cost the same. Weight averaging (one more pass over the parameters per step) and
    the batch size change the compute little and are left out. ``None`` for a trial recorded without its
    parameter count (a study older than that record)."""
    parameters, epochs = _size(trial)
    return None if parameters is None else float(parameters) * float(epochs)


def _size(trial) -> tuple[int | None, int]:
    """A trial's parameter count (``None`` where not recorded) and its recipe's ``num_epochs``."""
    epochs = trial.user_attrs.get("training_config", {}).get("num_epochs", TrainingConfig().num_epochs)
    return trial.user_attrs.get("parameters"), epochs


def choose_trial(study, num_videos: int):
    """The trial whose recipe the study hands on, and why, by the one-standard-error rule: of the complete
    trials the validation cannot tell from the best (behind it by no more than one standard error of their
    own out-of-fold accuracy over ``num_videos`` videos, or by less than one video), the cheapest to train
    (``training_cost``); of equally cheap ones, the starting recipe's trial (whole: every searched setting its
    own), else the best. So a difference the validation cannot tell from noise neither replaces the recipe
    the user already has nor buys a costlier one: when every trial classifies every video, the loss
    tie-break would otherwise favour the largest, longest recipe. Costs decide only when every tied trial
    has one; without them (older studies) the starting recipe is kept when it ties, else the best wins."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return None, "no trial finished"
    best = max(complete, key=lambda t: t.value)
    start = next((t for t in complete if t.user_attrs.get(STARTING_RECIPE, "whole" if t.number == 0 else None)
                  == "whole"), None)  # studies older than the mark: trial 0 was the recipe
    videos = max(num_videos, 1)
    tied = [t for t in complete if _ties(best, t, videos)]
    costs = {t.number: training_cost(t) for t in tied}
    costed = all(cost is not None for cost in costs.values())
    chosen = min(tied, key=lambda t: (costs[t.number] if costed else 0.0, start is None or t.number != start.number,
                                      -t.value, t.number))
    if start is not None and chosen.number == start.number != best.number:
        return start, (f"the starting recipe: the best trial ({best.number}, {best.value:.2f}%) is not ahead of it "
                       f"by more than one standard error ({_margin(start, videos):.2f} points) and at least one "
                       "video")
    if chosen.number != best.number:
        return chosen, (f"the cheapest to train of the {len(tied)} trials within one standard error or one video of "
                        f"the best ({best.number}, {best.value:.2f}%): {_cost_text(chosen)} against "
                        f"{_cost_text(best)}")
    if start is None or start.number == best.number:
        return best, "the best trial"
    if any(t.number == start.number for t in tied):
        return best, (f"the best trial: the starting recipe ties with it but costs more to train "
                      f"({_cost_text(start)} against {_cost_text(best)})")
    return best, (f"the best trial: ahead of the starting recipe by more than one standard error "
                  f"({_margin(start, videos):.2f} points)")


def _margin(trial, videos: int) -> float:
    """One standard error, in points, of a trial's out-of-fold accuracy over ``videos`` videos."""
    share = min(max(_accuracy(trial) / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(share * (1.0 - share) / videos)


def _ties(best, trial, videos: int) -> bool:
    """Whether the validation cannot tell ``trial`` from ``best``: behind by no more than one standard error of
    its accuracy, or by less than one video (the loss's tie-break alone)."""
    lead = _accuracy(best) - _accuracy(trial)
    return lead <= _margin(trial, videos) or lead < 100.0 / videos - 1e-9


def _cost_text(trial) -> str:
    parameters, epochs = _size(trial)
    return f"{parameters:,} parameters x {epochs} epochs"


def _accuracy(trial) -> float:
    """A complete trial's out-of-fold accuracy: its value without the loss's tie-break."""
    return trial.value + LOSS_TIE_BREAK * trial.user_attrs.get("val_loss", 0.0)


def write_outputs(study, output_dir: Path, num_videos: int) -> dict[str, Any]:
    """``best_model_config.json``, ``best_training_config.json`` (the chosen trial's recipe) and ``report.md``
    with its plots."""
    chosen, why = choose_trial(study, num_videos)
    if chosen is None:
        raise ConfigError(f"{output_dir}: no trial finished, so there is no best recipe yet")
    model, training = chosen.user_attrs["model_config"], chosen.user_attrs["training_config"]
    make_config(TrainingConfig, training)  # a recipe train accepts as it is
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(model, output_dir / "best_model_config.json")
    write_json(training, output_dir / "best_training_config.json")
    (output_dir / "report.md").write_text(_report(study, chosen, why, output_dir, num_videos))
    return {"trial": chosen.number, "value": chosen.value, "params": chosen.params, "trials": len(study.trials),
            "why": why}


def _report(study, chosen, why: str, output_dir: Path, num_videos: int) -> str:
    marked = [t for t in study.trials if t.user_attrs.get(STARTING_RECIPE)] or study.trials[:1]
    first = next((t for t in marked if t.state.name == "COMPLETE"), marked[-1])
    start = (f"Trial {first.number} tried the recipe the trials start from"
             + (" (its settings outside the space chosen by the sampler)"
                if first.user_attrs.get(STARTING_RECIPE) == "partial" else "")
             + f": {_outcome(first)}")
    keys = sorted({k for t in study.trials for k in t.params})
    lines = [f"# vidtempo tune: study {study.study_name}", "",
             f"Chosen trial {chosen.number}: out-of-fold validation accuracy {chosen.value:.2f}%, {why}. {start}.",
             "", "```json", json.dumps(chosen.params, indent=2), "```", "",
             "| trial | out-of-fold accuracy | parameters | " + " | ".join(keys) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in keys) + " |"]
    for trial in study.trials:
        params = " | ".join(_short(trial.params.get(k)) for k in keys)
        size = trial.user_attrs.get("parameters")
        lines.append(f"| {trial.number} | {_outcome(trial)} | {'' if size is None else f'{size:,}'} | {params} |")
    lines += [""] + _plots(study, output_dir, num_videos)
    return "\n".join(lines) + "\n"


def _outcome(trial) -> str:
    """A trial's out-of-fold accuracy, or how it ended: a pruned trial's value is one fold's, one epoch's."""
    state = trial.state.name.lower()
    if state == "complete":
        return f"{trial.value:.2f}%"
    if state == "pruned":
        return f"pruned after epoch {(trial.last_step or 0) + 1}"
    return f"{state} ({trial.user_attrs['fail_reason']})" if trial.user_attrs.get("fail_reason") else state


def optuna_warning_class() -> type[Warning]:
    from optuna.exceptions import ExperimentalWarning

    return ExperimentalWarning


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else str(value)
    return "" if value is None else str(value)


def _plots(study, output_dir: Path, num_videos: int) -> list[str]:
    noise = _only_noise(study, num_videos)
    if noise:
        return [noise]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as views

    lines = []
    for name, draw in (("optimization_history.png", views.plot_optimization_history),
                       ("param_importances.png", views.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" views; "too few trials" for importances
                axes = draw(study)
        except Exception as exc:  # importances need two or more finished trials that differ
            lines.append(f"({name}: not drawn: {str(exc).splitlines()[0][:120]})")
            continue
        axes.figure.savefig(output_dir / name, dpi=100, bbox_inches="tight")
        plt.close(axes.figure)
        lines.append(f"![{name}]({name})")
    return lines


def _only_noise(study, num_videos: int) -> str | None:
    """The report's sentence when the complete trials classified the same number of videos correctly (their
    out-of-fold accuracies within half a video of each other): their values then differ only by the loss's
    tie-break, so the optimisation history would chart that and the parameter importances would rank
    settings on it. ``None`` when the plots show real differences (or there are fewer than two trials)."""
    accuracies = [_accuracy(t) for t in study.trials if t.state.name == "COMPLETE"]
    videos = max(num_videos, 1)
    if len(accuracies) < 2 or max(accuracies) - min(accuracies) >= 50.0 / videos:
        return None
    return (f"No plots: all {len(accuracies)} finished trials scored {max(accuracies):.2f}% (the same number of "
            f"the {videos} videos), so their values differ only by the validation loss's tie-break, and an "
            "optimisation history or parameter importances would show nothing but that noise.")
