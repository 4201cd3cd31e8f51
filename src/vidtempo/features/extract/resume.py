"""Progress of an unfinished split, kept so that an interrupted extraction continues where it stopped.

A hidden folder next to the final file, ``.{final name}.partial/``, holds

- ``settings.json``   the extraction settings; progress made with other settings is discarded,
- ``features.f32``    finished videos' feature sequences, float32, appended one after another,
- ``progress.jsonl``  one line per finished video (where its features are, or why it failed).

Features are appended and flushed before their line, and a line counts only when complete, so a process
killed at any moment (SIGKILL included) leaves a readable record of every video it finished. Each line also
keeps the video file's size and modification time: a file that changed since is extracted again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...files import write_text
from .catalog import VideoItem

FLOAT_BYTES = 4


def partial_dir(final_path: Path) -> Path:
    return final_path.with_name(f".{final_path.name}.partial")


@dataclass(frozen=True)
class Record:
    video_id: str
    size: int
    mtime_ns: int
    offset: int = 0  # in float32 values
    steps: int = 0
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


class PartialSplit:
    """Open (or start) the saved progress of one split."""

    def __init__(self, final_path: Path, identity: dict[str, Any], feature_dim: int):
        self.folder = partial_dir(final_path)
        self.feature_dim = feature_dim
        self.records: dict[str, Record] = {}
        expected = {"identity": identity, "feature_dim": feature_dim}
        if self.folder.is_dir() and self._read_settings() != expected:
            shutil.rmtree(self.folder)  # made with other settings: its numbers are of no use
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "settings.json").is_file():
            _write_atomically(self.folder / "settings.json", json.dumps(expected, sort_keys=True))
        self._load()
        self._features = open(self.folder / "features.f32", "ab")
        self._progress = open(self.folder / "progress.jsonl", "a", encoding="utf-8")

    def finished(self, item: VideoItem) -> Record | None:
        """The saved result for ``item`` if the file is unchanged since it was made."""
        record = self.records.get(item.video_id)
        if record is None:
            return None
        if (record.size, record.mtime_ns) != _file_identity(item.path):
            return None
        return record

    def add_features(self, item: VideoItem, features: np.ndarray) -> Record:
        features = np.ascontiguousarray(features, dtype=np.float32)
        offset = self._features.tell() // FLOAT_BYTES
        self._features.write(features.tobytes())
        self._features.flush()
        return self._add(_record(item, offset=offset, steps=int(features.shape[0])))

    def add_failure(self, item: VideoItem, error: str) -> Record:
        return self._add(_record(item, error=error))

    def features(self, record: Record) -> np.ndarray:
        values = np.fromfile(
            self.folder / "features.f32",
            dtype=np.float32,
            count=record.steps * self.feature_dim,
            offset=record.offset * FLOAT_BYTES,
        )
        return values.reshape(record.steps, self.feature_dim)

    def close(self) -> None:
        self._features.close()
        self._progress.close()

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _add(self, record: Record) -> Record:
        self._progress.write(json.dumps(record.__dict__) + "\n")
        self._progress.flush()
        self.records[record.video_id] = record
        return record

    def _read_settings(self) -> Any:
        try:
            return json.loads((self.folder / "settings.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _load(self) -> None:
        """Read the complete lines; cut away whatever a killed run wrote after its last complete video."""
        progress = self.folder / "progress.jsonl"
        features = self.folder / "features.f32"
        lines = progress.read_bytes().split(b"\n") if progress.is_file() else []
        valid_bytes = 0
        features_end = 0
        features_size = features.stat().st_size if features.is_file() else 0
        for line in lines[:-1]:  # the piece after the last newline is incomplete by construction
            try:
                record = Record(**json.loads(line))
            except (ValueError, TypeError):
                break
            end = (record.offset + record.steps * self.feature_dim) * FLOAT_BYTES
            if not record.failed and end > features_size:
                break
            self.records[record.video_id] = record
            features_end = max(features_end, end if not record.failed else 0)
            valid_bytes += len(line) + 1
        with open(progress, "ab") as f:
            f.truncate(valid_bytes)
        with open(features, "ab") as f:
            f.truncate(features_end)


def _record(item: VideoItem, **fields: Any) -> Record:
    size, mtime_ns = _file_identity(item.path)
    return Record(video_id=item.video_id, size=size, mtime_ns=mtime_ns, **fields)


def _file_identity(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:  # a dangling link or a file gone since the scan: it fails, and is retried next time
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


def _write_atomically(path: Path, text: str) -> None:
    write_text(text, path)
