"""Classifying a library: every video file under a folder, one prediction row each.

A row is flat, so that CSV and JSON Lines hold the same thing: the video's path relative to the folder,
the predicted class and its confidence, one ``prob_<class>`` column per class, the trust score and flag,
and the error that kept a video from being classified (then the class is empty). Rows are written as they
come and flushed one by one; a rerun reads the rows already written and appends only the missing videos.

A timeline row (JSON Lines only: its segments do not fit a CSV row) adds the video's duration, the timeline's
window, hop and switch penalty, and its smoothed ``segments`` (as ``timeline.segments`` of a single video's
result); an error row has no segments.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import VidtempoError

if TYPE_CHECKING:
    from ..features.extract.catalog import VideoItem

PROBABILITY_PREFIX = "prob_"
OUTPUT_FORMATS = (".csv", ".jsonl")
TIMELINE_FORMAT = ".jsonl"
# What a timeline row adds: the first four from the result's ``timeline``, the last from its segments.
TIMELINE_FIELDS = ("duration_s", "window_seconds", "hop_seconds", "switch_penalty", "segments")


def row_fields(class_names: Sequence[str], timeline: bool = False) -> list[str]:
    """The columns of a prediction row, in order."""
    return ["path", "predicted_class", "confidence", *(PROBABILITY_PREFIX + name for name in class_names),
            "trust_score", "trust_flag", "frames_used", "error", *(TIMELINE_FIELDS if timeline else ())]


def result_row(path: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """The row of a classified video from its result dict (VideoClassifier._result), with the timeline
    fields when the result has a ``timeline``."""
    row = {
        "path": path,
        "predicted_class": result["predicted_class"],
        "confidence": result["confidence"],
        **{PROBABILITY_PREFIX + name: p for name, p in result["probabilities"].items()},
        "trust_score": result["trust"]["score"],
        "trust_flag": result["trust"]["flag"],
        "frames_used": result.get("frames_used", ""),
        "error": "",
    }
    timeline = result.get("timeline")
    if timeline is not None:
        row.update(duration_s=timeline["duration_s"], window_seconds=timeline["window_seconds"],
                   hop_seconds=timeline["hop_seconds"], switch_penalty=timeline["smoothing"]["switch_penalty"],
                   segments=timeline["segments"])
    return row


def error_row(path: str, error: str, class_names: Sequence[str], timeline: bool = False) -> dict[str, Any]:
    """The row of a video that could not be classified: its error on one line, every other field empty."""
    row: dict[str, Any] = dict.fromkeys(row_fields(class_names, timeline), "")
    row.update(path=path, error=" ".join(str(error).split()))
    if timeline:
        row["segments"] = []
    return row


def library_items(videos_dir: str | os.PathLike, shard: tuple[int, int] | None = None) -> list["VideoItem"]:
    """Every video file under ``videos_dir``, sorted by its path relative to it (forward slashes, the
    ``video_id``), or shard ``shard = (i, n)`` (1-based) of them as extraction shards."""
    from ..features.extract.catalog import VideoItem
    from ..features.extract.video import is_video_file
    from ..features.sharding import shard_items

    root = Path(videos_dir)
    if not root.is_dir():
        raise VidtempoError(f"{root}: --videos-dir is not a folder")
    files = (p for p in root.rglob("*") if p.is_file() and is_video_file(p))
    items = sorted((VideoItem(path=p, video_id=p.relative_to(root).as_posix(), category="", label=-1) for p in files),
                   key=lambda item: item.video_id)
    return shard_items(items, *shard) if shard else items


def check_output_path(path: Path, timeline: bool = False) -> None:
    """Refuse an ``--output`` that cannot hold the rows (see PredictionWriter)."""
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise VidtempoError(f"{path}: --output must end in {' or '.join(OUTPUT_FORMATS)}")
    if timeline and path.suffix.lower() != TIMELINE_FORMAT:
        raise VidtempoError(f"{path}: --timeline rows hold segments, which do not fit a CSV row: "
                            f"give an --output ending in {TIMELINE_FORMAT}")


class PredictionWriter:
    """Appends rows to a ``.csv`` or ``.jsonl`` file, one flushed line per row; timeline rows (``timeline``)
    to a ``.jsonl`` file only.

    Opening an existing file keeps its complete rows (``done`` holds their paths) and cuts off a last line
    that a killed run left half written, so a rerun continues the file without duplicating a row.
    """

    def __init__(self, path: str | os.PathLike, class_names: Sequence[str], timeline: bool = False) -> None:
        self.path = Path(path)
        self.format = self.path.suffix.lower()
        check_output_path(self.path, timeline)
        self.fields = row_fields(class_names, timeline)
        self.done: set[str] = set()
        if self.path.exists():
            self._read_existing()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._file, self.fields, lineterminator="\n") if self.format == ".csv" else None
        if new and self._csv is not None:
            self._csv.writeheader()
            self._file.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        if self._csv is not None:
            self._csv.writerow(row)
        else:
            self._file.write(json.dumps({key: row[key] for key in self.fields}) + "\n")
        self._file.flush()
        self.done.add(row["path"])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_existing(self) -> None:
        _drop_partial_last_line(self.path)
        lines = self.path.read_text(encoding="utf-8").splitlines()
        if self.format == ".csv":
            self._read_csv(lines)
        else:
            for number, line in enumerate(lines, 1):
                self.done.add(self._json_path(line, number))

    def _read_csv(self, lines: list[str]) -> None:
        if not lines:
            return
        reader = csv.reader(lines)
        header = next(reader)
        if header != self.fields:
            raise VidtempoError(f"{self.path}: written with other columns ({','.join(header)}), not these "
                                "checkpoints' classes; give another --output")
        self.done.update(row[0] for row in reader if row)

    def _json_path(self, line: str, number: int) -> str:
        try:
            row = json.loads(line)
            if set(row) != set(self.fields):
                raise ValueError("other fields than these checkpoints' classes give, with or without --timeline")
            return row["path"]
        except (ValueError, TypeError, KeyError) as exc:
            raise VidtempoError(f"{self.path}: line {number} is not a prediction row ({exc}); "
                                "give another --output") from None


def _drop_partial_last_line(path: Path) -> None:
    """Cut the file back to its last newline: what follows it is a row a killed run did not finish."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
