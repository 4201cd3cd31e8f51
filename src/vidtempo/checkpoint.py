"""The checkpoint format and the names of the files a training run leaves: build, write, read, prune, and
turn a checkpoint back into a model. Nothing else in vidtempo spells a key or a file name of the format.

A checkpoint is a dict of plain data (tensors, numbers, strings, lists, dicts), so that
``torch.load(path, weights_only=True)`` reads it and loading never runs code from the file.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import os
import pickle
import threading
import uuid
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ._version import __version__
from .config import ModelConfig
from .errors import CheckpointError
from .files import atomic_write

CHECKPOINT_FORMAT_VERSION = 1

# The keys the seed's trainer saves (its checkpoints load with these and nothing more).
SEED_KEYS = ("epoch", "model_state_dict", "optimizer_state_dict", "metrics", "train_metrics", "history",
             "best_val_acc", "best_epoch", "patience_counter", "model_config", "training_config")
# What an exact resume needs beyond the weights.
RESUME_KEYS = ("optimizer_state_dict", "scheduler_state_dict", "history", "epoch")
# Beyond the seed's keys, every vidtempo checkpoint has these.
VIDTEMPO_KEYS = ("scheduler_state_dict", "best_val_loss", "periodic_epochs", "category_mapping", "feature_settings", "model_name",
                 "format_version", "vidtempo_version", "checkpoint_id")
# The trainer adds "representation_stats" (class centroids for the trust score) and "run_history" (the whole
# run; "history" stops at the best epoch) to the best checkpoint once training ends.
# A run with weight averaging adds "averaged_state_dict", "kept_weights" ("raw" or "averaged": which of them
# "model_state_dict" holds) and, when it kept the average, "training_state_dict" (the raw weights).

# The seed system's categories, for its checkpoints, which carry no category mapping.
SEED_CATEGORIES = ("Animation", "Flat_Content", "Gaming", "Natural_Content")

# ------------------------------------------------------------------------------------------ file names
ENSEMBLE_RESULTS_NAME = "ensemble_final_results.json"
_PERIODIC_INFIX = "_checkpoint_epoch_"


def member_name(index: int) -> str:
    """Member ``index`` (1-based) of an ensemble: the seed's ``ensemble_model_1..N``."""
    return f"ensemble_model_{index}"


def best_checkpoint_name(model_name: str) -> str:
    return f"best_{model_name}.pt"


def periodic_checkpoint_name(model_name: str, epoch: int) -> str:
    """Written every ``checkpoint_every`` epochs; ``epoch`` is 0-based, as in the seed's files."""
    return f"{model_name}{_PERIODIC_INFIX}{epoch}.pt"


def results_name(model_name: str) -> str:
    return f"{model_name}_results.json"


def run_record_name(model_name: str) -> str:
    return f"{model_name}_config.json"


def periodic_checkpoints(folder: str | os.PathLike, model_name: str) -> list[tuple[int, Path]]:
    """The periodic checkpoints of ``model_name`` in ``folder``, oldest epoch first."""
    prefix = f"{model_name}{_PERIODIC_INFIX}"
    found = []
    for path in Path(folder).glob(f"{prefix}*.pt"):
        tail = path.stem[len(prefix):]
        if tail.isdigit():
            found.append((int(tail), path))
    return sorted(found)


# ---------------------------------------------------------------------------------------- build, write
def build_checkpoint(
    *,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    progress: Mapping[str, Any],
    val_metrics: Mapping[str, Any],
    train_metrics: Mapping[str, Any],
    model_config: ModelConfig,
    training_config: Any,
    category_mapping: Mapping[str, int],
    feature_settings: Mapping[str, Any],
    model_name: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The payload of a best or periodic checkpoint. ``progress`` holds ``history``, ``best_val_acc``,
    ``best_val_loss``, ``best_epoch``, ``patience_counter`` and ``periodic_epochs`` (the run's periodic
    checkpoints on disk, so that a resumed run prunes only its own). ``extra``: more plain-data entries, such
    as ``grad_scaler_state_dict`` in fp16 runs."""
    return {
        "epoch": epoch,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "scheduler_state_dict": scheduler.state_dict(),
        "metrics": dict(val_metrics),
        "train_metrics": dict(train_metrics),
        **{key: progress[key] for key in ("history", "best_val_acc", "best_val_loss", "best_epoch",
                                          "patience_counter", "periodic_epochs")},
        # A distilled student's epochs are selected on agreement with its teacher first (training/distill.py).
        **({"best_val_agreement": progress["best_val_agreement"]} if "best_val_agreement" in progress else {}),
        "model_config": dataclasses.asdict(model_config),
        "training_config": dataclasses.asdict(training_config),
        "category_mapping": dict(category_mapping),
        "feature_settings": dict(feature_settings),
        "model_name": model_name,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "vidtempo_version": __version__,
        **(extra or {}),
    }


def save_checkpoint(payload: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``payload`` atomically, stamped with a new ``checkpoint_id``: whatever was fitted for the
    weights of an earlier file of the same name (an ensemble manifest) can tell it was replaced."""
    stamped = {**payload, "checkpoint_id": uuid.uuid4().hex}

    def write(tmp: Path) -> None:
        with _SAVING, _without_zip_checksums():
            torch.save(stamped, tmp)

    return atomic_write(path, write)


class CheckpointWriter:
    """Writes checkpoints in a background thread while training goes on, one at a time.

    ``write`` first waits for the previous write, then takes a snapshot of the payload (tensors copied to
    host memory, containers copied; ~0.2 s for the full model with its optimiser state on a 2-core CPU) and
    returns; the file (0.8 GB, 0.5 s to several seconds to write, far longer on a network file system)
    appears under its name, whole, when the thread is done. ``wait`` returns once nothing is being written
    and raises what a write raised; training calls it before it reads a checkpoint it wrote and before it
    returns, so no caller ever sees a checkpoint that is still being written."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def write(self, payload: Mapping[str, Any], path: str | os.PathLike,
              then: Callable[[], Any] | None = None) -> None:
        """Write ``payload`` to ``path`` (see ``save_checkpoint``), then call ``then`` (in the thread)."""
        self.wait()
        snapshot = _snapshot(payload)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidtempo-checkpoint")

        def job() -> None:
            save_checkpoint(snapshot, path)
            if then is not None:
                then()

        self._pending = self._pool.submit(job)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """``wait``, then end the thread (a later ``write`` starts a new one)."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None


def _snapshot(value: Any) -> Any:
    """A copy of a checkpoint payload that later training steps cannot change: tensors copied to the host."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        copied = (collections.OrderedDict if isinstance(value, collections.OrderedDict) else dict)(
            (key, _snapshot(item)) for key, item in value.items())
        if hasattr(value, "_metadata"):  # a state dict's module versions, which torch.save keeps
            copied._metadata = copy.deepcopy(value._metadata)
        return copied
    if type(value) in (list, tuple):
        return type(value)(_snapshot(item) for item in value)
    return copy.deepcopy(value)


# One checkpoint write at a time in a process: the CRC setting below is torch's global, and two writers
# (a background one and the caller's) restoring it out of order would leave it off.
_SAVING = threading.Lock()


@contextlib.contextmanager
def _without_zip_checksums():
    """torch.save computes a CRC-32 of every record of its zip archive, and torch.load never checks it: for the
    full model with its optimiser state (~0.8 GB) that was 40% of torch.save's own time (0.47 s against 0.28 s,
    written to memory). The atomic rename already keeps a half-written file from ever looking complete."""
    try:
        from torch.utils.serialization import config
        previous = config.save.compute_crc32
    except (ImportError, AttributeError):  # a torch without the setting computes them
        yield
        return
    config.save.compute_crc32 = False
    try:
        yield
    finally:
        config.save.compute_crc32 = previous


# ---------------------------------------------------------------------------------------------- read
# numpy numbers and arrays of numbers, as the seed system's metrics hold them. These rebuild plain data
# and run no code; an object array would still need a further global and be refused.
_NUMPY_GLOBALS = [
    np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct,
    np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar,
    np.ndarray,
    np.dtype,
    *{type(np.dtype(t)) for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                                  "bool")},
]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint as plain data. Anything that would need pickle to run code is refused.

    ``mmap``: map the file rather than read it, so that only the tensors used are read (the weights of a
    checkpoint that also holds the optimiser state, three times their size). Its tensors then share the
    file's pages: for a reader that copies what it keeps (into a model) and drops the rest."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            # Files in torch's format before 1.6 (not zip archives) cannot be mapped; they are read.
            payload = torch.load(path, map_location=map_location, weights_only=True,
                                 mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        # torch names the class it would have had to import; anything else is a damaged file.
        if "global" not in str(exc).lower():
            raise CheckpointError(f"{path}: not a readable checkpoint (damaged or not a torch file)") from None
        raise CheckpointError(
            f"{path}: refused: the checkpoint holds pickled Python objects, not plain data "
            "(only tensors, numbers, strings, lists and dicts are loaded)"
        ) from None
    except Exception as exc:  # noqa: BLE001  a damaged or foreign file fails anywhere in torch's unpickler
        # (KeyError for a missing memo entry, struct.error for a cut record, ...): all mean "unreadable".
        reason = str(exc).splitlines()[0] if str(exc) and not isinstance(exc, KeyError) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(payload, dict) or "model_state_dict" not in payload:
        raise CheckpointError(f"{path}: not a vidtempo checkpoint (no model_state_dict)")
    return payload


def check_resumable(payload: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Refuse, with one line, a checkpoint that cannot continue a run exactly."""
    missing = [key for key in RESUME_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: cannot resume exactly, missing {', '.join(missing)}")


def category_mapping_of(payload: Mapping[str, Any], num_classes: int) -> dict[str, int]:
    """The checkpoint's categories; the seed's checkpoints have none and use the seed's four."""
    mapping = payload.get("category_mapping")
    if mapping:
        return dict(mapping)
    names = SEED_CATEGORIES if num_classes == len(SEED_CATEGORIES) else [f"class_{i}" for i in range(num_classes)]
    return {name: i for i, name in enumerate(names)}
