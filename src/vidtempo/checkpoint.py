"""Checkpoint and results files: written atomically, read without unpickling arbitrary objects.

A checkpoint is a dict of plain data (tensors, numbers, strings, lists, dicts) so that
``torch.load(path, weights_only=True)`` reads it. Keys, beyond the seed's (``epoch``, ``model_state_dict``,
``optimizer_state_dict``, ``metrics``, ``train_metrics``, ``history``, ``best_val_acc``, ``best_epoch``,
``patience_counter``, ``model_config``, ``training_config``): ``scheduler_state_dict``, ``category_mapping``,
``feature_settings`` (how the features were extracted), ``model_name``, ``format_version``,
``vidtempo_version``, and ``grad_scaler_state_dict`` (plain numbers) in runs that use fp16 with a gradient
scaler.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError

CHECKPOINT_FORMAT_VERSION = 1

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


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: str | os.PathLike, writer) -> Path:
    """Call ``writer(tmp_path)``, then move the finished file into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    return atomic_write_bytes(path, lambda tmp: torch.save(payload, tmp))


def write_json(data: Any, path: str | os.PathLike) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default)
    return atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text + "\n"))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint as plain data. Anything that would need pickle to run code is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the class it would have had to import; anything else is a damaged file.
        if "global" not in str(exc).lower():
            raise CheckpointError(f"{path}: not a readable checkpoint (damaged or not a torch file)") from None
        raise CheckpointError(
            f"{path}: refused: the checkpoint holds pickled Python objects, not plain data "
            "(only tensors, numbers, strings, lists and dicts are loaded)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(payload, dict) or "model_state_dict" not in payload:
        raise CheckpointError(f"{path}: not a vidtempo checkpoint (no model_state_dict)")
    return payload
