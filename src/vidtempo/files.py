"""Files written whole or not at all: a crash never leaves a file that looks complete.

Every file vidtempo writes (checkpoints, results, manifests, feature stores, reports) goes through
``atomic_write``: it is written under a temporary name in the same folder, then moved into place with
``os.replace``, which is atomic on POSIX and Windows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


def temp_path(path: str | os.PathLike) -> Path:
    """A hidden name beside ``path``, unique to this process."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)``, then move the finished file to ``path``; on failure nothing is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(text: str, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(data: Any, path: str | os.PathLike) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default)
    return write_text(text + "\n", path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
