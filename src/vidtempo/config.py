"""Typed configuration with the seed system's defaults. Both travel inside every checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

from .errors import ConfigError

# How a run computes; see runtime.choose_precision for what each means and what auto picks.
PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
# The device a command runs on unless told: CUDA when a GPU is present, else the CPU (runtime.resolve_device).
DEFAULT_DEVICE = "auto"
# The precision inference runs in unless told otherwise: what the hardware is fast at (runtime.choose_precision).
# Members' test scores, trust centroids and the ensemble's calibration are computed in it too, so that the
# numbers a member records are the ones it serves.
INFERENCE_PRECISION = "auto"
# The precisions inference may be asked for (fp16 and tf32 are training choices for CUDA).
INFERENCE_PRECISIONS = ("auto", "fp32", "bf16")
# Members of an ensemble unless told otherwise (the seed API's train_ensemble and ``vidtempo train``).
DEFAULT_NUM_MODELS = 3
# How the best epoch is chosen: the seed's strict accuracy rule, or accuracy with ties broken by loss.
SELECTIONS = ("accuracy_then_loss", "accuracy")
MEMBER_WEIGHTINGS = ("equal", "val_accuracy")
# What the members of an ensemble learn from: the same train split with different seeds (the seed system),
# or folds of train + val pooled, each member selecting its epoch on the fold it does not train on.
ENSEMBLE_STRATEGIES = ("seeds", "cross_fit")
# Weights a run can keep: its own, or also an exponential moving average of them (see training/run.py).
WEIGHT_AVERAGINGS = ("none", "ema")


def default_num_workers() -> int:
    """Data-loader worker processes by default: none on machines of 1 or 2 cores, where workers compete
    with the training process for the cores (a full-model profile ran 34 s with the seed's 4 workers
    against 23 s with none on 2 cores), half the cores up to the seed's 4 elsewhere."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 2 else min(4, cores // 2)


@dataclass
class ModelConfig:
    feature_dim: int = 1280
    hidden_dim: int = 768
    num_classes: int = 4
    num_lstm_layers: int = 4
    num_attention_heads: int = 12
    dropout: float = 0.4
    bidirectional: bool = True

    def __post_init__(self) -> None:
        for name in ("feature_dim", "hidden_dim", "num_classes", "num_lstm_layers", "num_attention_heads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"model_config.{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"model_config.dropout must be in [0, 1), got {self.dropout}")
        width = self.hidden_dim * (2 if self.bidirectional else 1)
        if width % self.num_attention_heads:
            raise ConfigError(
                f"model_config: the LSTM output width {width} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )


@dataclass
class TrainingConfig:
    learning_rate: float = 1e-3
    batch_size: int = 48
    num_epochs: int = 150
    patience: int = 25
    weight_decay: float = 5e-4
    grad_clip: float = 1.0
    focal_gamma: float = 2.0
    label_smoothing: float = 0.1
    scheduler_t0: int = 20
    scheduler_t_mult: int = 2
    eta_min: float = 1e-6
    checkpoint_every: int = 20
    keep_last_checkpoints: int = 3
    num_workers: int = field(default_factory=default_num_workers)  # the seed's 4 where the cores allow
    seed: int = 42
    precision: str = "auto"
    # Beyond the seed: model selection, and how an ensemble is checked and combined.
    selection: str = "accuracy_then_loss"
    collapse_retries: int = 2  # retrain a collapsed member with the next unused seed this many times
    collapse_margin: float = 5.0  # collapsed: best val accuracy within this many points of chance ...
    collapse_min_class_f1: float = 10.0  # ... or some class's val F1 (percent) below this
    member_weighting: str = "equal"
    drop_members_below: float | None = None  # val accuracy (percent) under which a member gets weight 0
    choose_tta_views: bool = True  # keep only the TTA views that help on validation
    calibrate: bool = True  # fit a temperature on validation
    bucket_by_length: bool = False  # batches of similar length (less padding), same class-balanced draws
    max_in_memory_gb: float | None = None  # larger splits stream from the file (None: automatic, see features/store.py)
    # Getting more out of few labelled videos (benchmarks/accuracy_real.py measures each).
    ensemble_strategy: str = "cross_fit"  # "seeds": the seed system's (benchmarks/RESULTS.md compares them)
    weight_averaging: str = "none"
    ema_half_life_epochs: float = 2.0  # the averaged weights forget half of an epoch's weights in this many epochs
    mixup_alpha: float = 0.0  # > 0: mix pairs of videos' features and labels, with Beta(alpha, alpha) shares
    cutmix_alpha: float = 0.0  # > 0: replace a stretch of time with another video's, labels by the time share
    # Prefixes of the coarse-to-fine order of a video's steps (features/frame_order.py) that training draws as
    # augmentation, so that the model answers from a few steps too (None: off). For example [8, 16, 32].
    prefix_lengths: list[int] | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_epochs", "patience", "scheduler_t0", "scheduler_t_mult"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"training_config.{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("checkpoint_every", "keep_last_checkpoints", "num_workers"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"training_config.{name} must be >= 0, got {getattr(self, name)}")
        if float(self.learning_rate) <= 0:
            raise ConfigError(f"training_config.learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ConfigError(f"training_config.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"training_config.selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.member_weighting not in MEMBER_WEIGHTINGS:
            raise ConfigError(
                f"training_config.member_weighting must be one of {', '.join(MEMBER_WEIGHTINGS)}, "
                f"got {self.member_weighting!r}"
            )
        if int(self.collapse_retries) < 0:
            raise ConfigError(f"training_config.collapse_retries must be >= 0, got {self.collapse_retries}")
        for name, allowed in (("ensemble_strategy", ENSEMBLE_STRATEGIES), ("weight_averaging", WEIGHT_AVERAGINGS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"training_config.{name} must be one of {', '.join(allowed)}, "
                                  f"got {getattr(self, name)!r}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if not float(getattr(self, name)) >= 0.0:
                raise ConfigError(f"training_config.{name} must be >= 0 (0 turns it off), got {getattr(self, name)}")
        if self.prefix_lengths is not None and (not self.prefix_lengths or any(
                isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.prefix_lengths)):
            raise ConfigError(f"training_config.prefix_lengths must be a non-empty list of positive integers or "
                              f"null, got {self.prefix_lengths}")
        if not float(self.ema_half_life_epochs) > 0.0:
            raise ConfigError(f"training_config.ema_half_life_epochs must be > 0, got {self.ema_half_life_epochs}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"training_config.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


# The student `vidtempo distill` trains unless --model-config says otherwise: a small member of the same
# architecture family (0.77 M parameters against 65 M for each member of the default ensemble). Of the sizes
# benchmarks/distill.py compared (hidden 32, 64, 128), the closest to its teachers: 1.5 points behind on average
# over 8 sets, 8.7 on the worst (benchmarks/RESULTS.md); the smaller ones trailed by 4 and 12 points.
STUDENT_MODEL_CONFIG = {"hidden_dim": 128, "num_lstm_layers": 1, "num_attention_heads": 4, "dropout": 0.3}


@dataclass
class DistillConfig:
    """How a student learns from its teacher (training/distill.py)."""

    temperature: float = 2.0  # softens the teacher's and the student's distributions in the soft loss
    soft_weight: float = 0.7  # the soft loss's share of the loss; the hard labels' cross-entropy has the rest
    random_views: int = 4  # random frame subsets of each video the teacher labels, beside the TTA views
    min_subset_ratio: float = 0.25  # a random subset keeps between this share of the frames and all of them
    selection_folds: int = 5  # one in this many labelled videos is held out to select the epoch and calibrate

    def __post_init__(self) -> None:
        if not float(self.temperature) > 0:
            raise ConfigError(f"distill_config.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= float(self.soft_weight) <= 1.0:
            raise ConfigError(f"distill_config.soft_weight must be in [0, 1], got {self.soft_weight}")
        if int(self.random_views) < 0:
            raise ConfigError(f"distill_config.random_views must be >= 0, got {self.random_views}")
        if not 0.0 < float(self.min_subset_ratio) <= 1.0:
            raise ConfigError(f"distill_config.min_subset_ratio must be in (0, 1], got {self.min_subset_ratio}")
        if int(self.selection_folds) < 2:
            raise ConfigError(f"distill_config.selection_folds must be at least 2, got {self.selection_folds}")


# What a saved training config that predates a setting was trained with (the seed system's recipe), whatever
# that setting's default is now: a resumed run continues with the math it started with.
ABSENT_SETTINGS_MEANT = {"ensemble_strategy": "seeds", "weight_averaging": "none", "mixup_alpha": 0.0,
                         "cutmix_alpha": 0.0, "prefix_lengths": None}

C = TypeVar("C", ModelConfig, TrainingConfig, DistillConfig)


def make_config(cls: type[C], value: C | Mapping[str, Any] | None = None, **overrides: Any) -> C:
    """Build a config from a dataclass, a dict of overrides or None, then apply keyword overrides."""
    if value is None:
        base: dict[str, Any] = {}
    elif isinstance(value, cls):
        base = dataclasses.asdict(value)
    elif isinstance(value, Mapping):
        base = dict(value)
    else:
        raise ConfigError(f"{cls.__name__} must be a dict or {cls.__name__}, got {type(value).__name__}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(base) - known)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    check_types(cls, base)
    return cls(**base)


# The prefix of a config's fields in messages, as the checkpoints and the README name them.
_CONFIG_NAMES = {"ModelConfig": "model_config", "TrainingConfig": "training_config",
                 "DistillConfig": "distill_config"}


def check_types(cls: type, values: Mapping[str, Any]) -> None:
    """Refuse a value of the wrong type for a field of ``cls`` (a bool is not a number, a string not a
    number), naming the field and the type it takes."""
    hints = typing.get_type_hints(cls)
    prefix = _CONFIG_NAMES.get(cls.__name__, cls.__name__)
    for name, value in values.items():
        expected = hints.get(name)
        if expected is not None and not _has_type(value, expected):
            raise ConfigError(f"{prefix}.{name} must be {_type_words(expected)}, got {json.dumps(value, default=str)}")


def _has_type(value: Any, expected: Any) -> bool:
    options = typing.get_args(expected) if typing.get_origin(expected) in (typing.Union, types.UnionType) else (expected,)
    for option in options:
        if option is type(None) and value is None:
            return True
        if option is bool and isinstance(value, bool):
            return True
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if option is str and isinstance(value, str):
            return True
        if typing.get_origin(option) in (list, tuple) and isinstance(value, (list, tuple)):
            return True
    return False


def _type_words(expected: Any) -> str:
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    options = typing.get_args(expected) if typing.get_origin(expected) in (typing.Union, types.UnionType) else (expected,)
    return " or ".join(words.get(option, "a list") for option in options)


def load_config_file(path: str | Path, cls: type | None = None, flag: str = "the config") -> dict[str, Any]:
    """Read a config given on the command line: a JSON file, or an inline JSON object (``{...}``). With
    ``cls``, its keys and value types are checked, and an error names the file (or the flag) and the field."""
    inline = str(path).lstrip().startswith("{")
    where = flag if inline else str(path)
    try:
        data = json.loads(str(path) if inline else Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: not readable as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object of settings")
    if cls is not None:
        try:
            make_config(cls, data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return data
