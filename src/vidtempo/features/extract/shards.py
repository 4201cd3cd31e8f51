"""Sharded extraction: split each split's videos over several machines, then merge their files.

``vidtempo extract --shard i/n`` (or ``--shard auto``, see ``vidtempo.features.sharding``) extracts only shard ``i``
(1-based) of each split's video list into
``{split}_features{suffix}.shard-{i}-of-{n}.h5`` (the layout of a split file, plus the attributes ``shard``,
``num_shards``, ``shard_videos`` and ``split_videos``), and lists its failures in
``{split}_failures{suffix}.shard-{i}-of-{n}.json``. The assignment (``sharding.shard_items``) depends only on
the videos' relative paths: the split's videos sorted by video_id, every n-th one starting at the (i-1)-th. The category mapping is the
sorted union over all videos of all splits, as in an unsharded run, so every shard agrees on it.

``merge_shards`` (``vidtempo merge-features``) checks that all n shards are there and agree, and writes the
standard ``{split}_features{suffix}.h5`` exactly as an unsharded run would have: videos sorted by video_id,
zero-padded to the longest sequence, the same attributes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from ...errors import VidtempoError
from ...files import write_json
from ..store import (EXTRACTION_ATTRS, MEDIAN_SECONDS_ATTR, SPLITS, SplitWriter, attr_value, median_seconds,
                     parse_category_mapping, split_path)

# Attributes that only a shard file has; a merged file has none of them.
SHARD_ATTRS = ("shard", "num_shards", "shard_videos", "split_videos")
# Feature rows the merge buffers, over all shards together (at least one row per shard).
_MERGE_BUFFER_BYTES = 16 * 2**20
_SHARD_NAME = re.compile(r"^(?P<split>[^.]+?)_features(?P<suffix>[^.]*)\.shard-(?P<i>\d+)-of-(?P<n>\d+)\.h5$")


def shard_name(split: str, suffix: str, index: int, count: int) -> str:
    return f"{split}_features{suffix}.shard-{index}-of-{count}.h5"


def shard_path(features_dir: str | os.PathLike, split: str, suffix: str, index: int, count: int) -> Path:
    return Path(features_dir) / shard_name(split, suffix, index, count)


def shard_failures_path(features_dir: str | os.PathLike, split: str, suffix: str, index: int, count: int) -> Path:
    return Path(features_dir) / f"{split}_failures{suffix}.shard-{index}-of-{count}.json"


def find_shards(features_dir: str | os.PathLike) -> dict[tuple[str, str], dict[int, dict[int, Path]]]:
    """Shard files present: (split, suffix) -> number of shards -> shard number -> file."""
    found: dict[tuple[str, str], dict[int, dict[int, Path]]] = {}
    folder = Path(features_dir)
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        match = _SHARD_NAME.match(path.name)
        if match and path.is_file():
            key = (match.group("split"), match.group("suffix"))
            found.setdefault(key, {}).setdefault(int(match.group("n")), {})[int(match.group("i"))] = path
    return found

# In shard files only: each video's duration in seconds, for the merged split's median.
SHARD_SECONDS_DATASET = "video_seconds"

@dataclass
class _Shard:
    path: Path
    index: int
    attrs: dict[str, Any]
    mapping: dict[str, int]
    shape: tuple[int, int, int]  # of its features, [N, T_max, D]; read row block by row block when merged
    video_ids: list[str]
    labels: np.ndarray
    num_frames: np.ndarray
    seconds: np.ndarray | None  # each video's duration, if the shard recorded them

    @property
    def feature_dim(self) -> int:
        return self.shape[2]


def _read_shard(path: Path, index: int, count: int) -> _Shard:
    """A shard's attributes and small datasets, checked; its features stay in the file."""
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            for name in ("features", "labels", "num_frames", "video_ids"):
                if name not in f:
                    raise VidtempoError(f"{path}: not a shard file (no '{name}' dataset)")
            if "category_mapping" not in attrs:
                raise VidtempoError(f"{path}: not a shard file (no category_mapping)")
            shape = tuple(int(n) for n in f["features"].shape)
            labels = np.asarray(f["labels"][()]).reshape(-1).astype(np.int64)
            num_frames = np.asarray(f["num_frames"][()]).reshape(-1).astype(np.int64)
            video_ids = [attr_value(v) for v in f["video_ids"][()]]
            seconds = np.asarray(f[SHARD_SECONDS_DATASET][()], dtype=np.float64) if SHARD_SECONDS_DATASET in f else None
    except OSError as exc:
        reason = str(exc).split("(")[0].strip() or "unreadable"
        raise VidtempoError(f"{path}: not a readable HDF5 file ({reason})") from None
    mapping = parse_category_mapping(attrs["category_mapping"], str(path))
    if len(shape) != 3:
        raise VidtempoError(f"{path}: 'features' must be 3-D, got shape {shape}")
    n = shape[0]
    if not (len(labels) == len(num_frames) == len(video_ids) == n):
        raise VidtempoError(f"{path}: {n} feature rows but {len(labels)} labels, {len(num_frames)} num_frames and "
                            f"{len(video_ids)} video ids")
    if n and (num_frames.min() < 1 or num_frames.max() > shape[1]):
        raise VidtempoError(f"{path}: num_frames outside 1..{shape[1]}")
    if n and (labels.min() < 0 or labels.max() >= len(mapping)):
        raise VidtempoError(f"{path}: labels outside the category mapping")
    if ("shard" in attrs and int(attrs["shard"]) != index) or ("num_shards" in attrs and int(attrs["num_shards"]) != count):
        raise VidtempoError(
            f"{path}: its attributes say shard {attr_value(attrs.get('shard'))} of {attr_value(attrs.get('num_shards'))}, "
            f"its name shard {index} of {count}"
        )
    return _Shard(path, index, attrs, mapping, shape, video_ids, labels, num_frames, seconds)


class _ShardRows:
    """Reads a shard's feature rows through a block of ``rows`` rows at a time: merging visits each shard's
    rows in order, so each block is read once."""

    def __init__(self, shard: _Shard, rows: int):
        self.path = shard.path
        # Each chunk (one video) is read once, into the block: HDF5's own chunk cache would only hold copies.
        self._file = h5py.File(shard.path, "r", rdcc_nbytes=0)
        self._features = self._file["features"]
        self._rows = rows
        self._start = 0
        self._block = np.empty((0, *shard.shape[1:]), dtype=np.float32)

    def row(self, index: int, steps: int) -> np.ndarray:
        if not self._start <= index < self._start + self._block.shape[0]:
            self._start = index
            try:
                self._block = np.asarray(self._features[index : index + self._rows], dtype=np.float32)
            except OSError as exc:  # h5py's error for a damaged or truncated chunk
                raise VidtempoError(f"{self.path}: damaged feature rows ({str(exc).split('(')[0].strip()})") from None
        return self._block[index - self._start, :steps]

    def close(self) -> None:
        self._file.close()


def _settings_of(shard: _Shard) -> dict[str, Any]:
    """What must agree between shards: everything that went into the numbers and the file's layout."""
    keys = [k for k in shard.attrs if k not in SHARD_ATTRS
            and k not in ("num_videos", "max_frames", "category_mapping", MEDIAN_SECONDS_ATTR)]
    return {k: attr_value(shard.attrs[k]) for k in sorted(keys)}


def merge_shards(
    features_dir: str | os.PathLike,
    split: str,
    suffix: str = "",
    *,
    delete_shards: bool = False,
) -> Path:
    """Merge the shard files of ``split`` into ``{split}_features{suffix}.h5`` (written atomically) and their
    failure lists into ``{split}_failures{suffix}.json``; returns the merged file. Raises VidtempoError, naming
    the file, for missing shards, shards that disagree, or a video in two shards."""
    folder = Path(features_dir)
    count, present = _complete_shard_run(folder, split, suffix)
    shards = [_read_shard(present[index], index, count) for index in range(1, count + 1)]
    _check_shards_agree(shards)
    rows = _rows_in_merged_order(shards)
    failures = _merge_failures(folder, split, suffix, count)
    failures_file = folder / f"{split}_failures{suffix}.json"
    if not rows:
        raise VidtempoError(f"{split}: none of its videos could be decoded (listed in {failures_file})")
    target = _write_merged(split_path(folder, split, suffix), shards, rows, _merged_extraction_attrs(shards))
    if failures:
        write_json({"split": split, "failed": failures}, failures_file)
    elif failures_file.exists():
        failures_file.unlink()  # from an earlier run; nothing failed this time
    if delete_shards:
        for index in range(1, count + 1):
            shard_path(folder, split, suffix, index, count).unlink(missing_ok=True)
            shard_failures_path(folder, split, suffix, index, count).unlink(missing_ok=True)
    return target


def _complete_shard_run(folder: Path, split: str, suffix: str) -> tuple[int, dict[int, Path]]:
    """``(N, {index: path})`` of the one shard run of ``split`` in ``folder``, every shard 1..N present."""
    by_count = find_shards(folder).get((split, suffix), {})
    if not by_count:
        raise VidtempoError(f"{folder / f'{split}_features{suffix}.shard-I-of-N.h5'}: no shard files found")
    if len(by_count) > 1:
        counts = sorted(by_count)
        raise VidtempoError(
            f"{shard_path(folder, split, suffix, 1, counts[-1])}: shards of {' and '.join(map(str, counts))} "
            f"shard runs are mixed in {folder}; remove the stale ones"
        )
    count, present = next(iter(by_count.items()))
    for index in range(1, count + 1):
        if index not in present:
            raise VidtempoError(f"{shard_path(folder, split, suffix, index, count)}: shard {index} of {count} is missing")
    extra = sorted(i for i in present if i > count)
    if extra:
        raise VidtempoError(f"{present[extra[0]]}: shard number {extra[0]} is beyond {count} shards")
    return count, present


def _check_shards_agree(shards: list[_Shard]) -> None:
    """Same categories, feature dimension and extraction settings in every shard, and together the whole
    video list the shards were cut from."""
    first = shards[0]
    reference = _settings_of(first)
    total = 0
    for shard in shards:
        if shard.mapping != first.mapping:
            raise VidtempoError(
                f"{shard.path}: category_mapping {json.dumps(shard.mapping)} differs from shard 1's "
                f"{json.dumps(first.mapping)}"
            )
        if shard.feature_dim != first.feature_dim:
            raise VidtempoError(
                f"{shard.path}: feature dimension {shard.feature_dim} differs from shard 1's {first.feature_dim}"
            )
        settings = _settings_of(shard)
        if settings != reference:
            differing = [
                f"{k}={settings.get(k)!r} (shard 1: {reference.get(k)!r})"
                for k in sorted(set(settings) | set(reference))
                if settings.get(k) != reference.get(k)
            ]
            raise VidtempoError(f"{shard.path}: extracted with other settings than shard 1 ({'; '.join(differing)})")
        total += int(attr_value(shard.attrs.get("shard_videos", 0)))
    split_videos = {attr_value(s.attrs.get("split_videos")) for s in shards}
    if len(split_videos) > 1:
        raise VidtempoError(
            f"{shards[-1].path}: the shards saw different video lists ({sorted(map(str, split_videos))} videos in "
            "the split); re-extract them from the same videos folder"
        )
    if None not in split_videos and total != int(next(iter(split_videos))):
        raise VidtempoError(f"{shards[-1].path}: the shards hold {total} of the split's {next(iter(split_videos))} videos")


def _rows_in_merged_order(shards: list[_Shard]) -> list[tuple[str, _Shard, int]]:
    """``(video_id, shard, row in the shard)`` of every video, sorted by video_id as an unsharded run orders
    them (the catalog sorts each split); a video in two shards is refused."""
    owner: dict[str, Path] = {}
    rows: list[tuple[str, _Shard, int]] = []
    for shard in shards:
        for row, video_id in enumerate(shard.video_ids):
            if video_id in owner:
                raise VidtempoError(f"{shard.path}: video {video_id} is also in {owner[video_id]}")
            owner[video_id] = shard.path
            rows.append((video_id, shard, row))
    rows.sort(key=lambda r: r[0])
    return rows


def _merged_extraction_attrs(shards: list[_Shard]) -> dict[str, Any]:
    """The first shard's extraction attributes, with the median video duration taken over all shards."""
    first = shards[0]
    attrs = {k: first.attrs[k] for k in EXTRACTION_ATTRS if k in first.attrs and k != MEDIAN_SECONDS_ATTR}
    if all(s.seconds is not None for s in shards) and any(np.isfinite(s.seconds).any() for s in shards):
        attrs[MEDIAN_SECONDS_ATTR] = median_seconds(np.concatenate([s.seconds for s in shards]))
    return attrs


def _write_merged(path: Path, shards: list[_Shard], rows: list[tuple[str, _Shard, int]],
                  extra_attrs: dict[str, Any]) -> Path:
    """Copy ``rows`` (video_id, shard, row in the shard) into ``path`` in that order, a few rows per shard at a
    time, so memory does not grow with the number of videos."""
    first = shards[0]
    max_steps = max(int(shard.num_frames[row]) for _, shard, row in rows)
    row_bytes = max(1, max(s.shape[1] for s in shards) * first.feature_dim * np.dtype(np.float32).itemsize)
    rows_per_block = max(1, _MERGE_BUFFER_BYTES // (len(shards) * row_bytes))
    readers = {shard.index: _ShardRows(shard, rows_per_block) for shard in shards}
    try:
        with SplitWriter(path, len(rows), max_steps, first.feature_dim, first.mapping,
                         bool(attr_value(first.attrs.get("multi_scale", False))), extra_attrs=extra_attrs) as writer:
            for video_id, shard, row in rows:
                steps = int(shard.num_frames[row])
                writer.add(readers[shard.index].row(row, steps), int(shard.labels[row]), video_id)
    finally:
        for reader in readers.values():
            reader.close()
    return path


def _merge_failures(folder: Path, split: str, suffix: str, count: int) -> list[dict[str, Any]]:
    failed: list[dict[str, Any]] = []
    for index in range(1, count + 1):
        path = shard_failures_path(folder, split, suffix, index, count)
        if not path.is_file():
            continue
        try:
            failed.extend(json.loads(path.read_text(encoding="utf-8"))["failed"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VidtempoError(f"{path}: unreadable failures list ({exc})") from None
    return sorted(failed, key=lambda f: str(f.get("video", "")))


def merge_all(
    features_dir: str | os.PathLike,
    splits: Sequence[str] | None = None,
    suffix: str | None = None,
    *,
    delete_shards: bool = False,
) -> dict[str, Path]:
    """Merge the shards of ``splits`` (default: every split with shard files) with ``suffix`` (default: the
    one suffix the shard files have). Returns split -> merged file."""
    folder = Path(features_dir)
    if not folder.is_dir():
        raise VidtempoError(f"{folder}: features folder not found")
    found = find_shards(folder)
    if splits is not None:
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise VidtempoError(f"unknown split '{unknown[0]}' (choose from {', '.join(SPLITS)})")
    wanted = list(dict.fromkeys(splits)) if splits is not None else [s for s in SPLITS if any(k[0] == s for k in found)]
    if suffix is None:
        suffixes = sorted({k[1] for k in found if k[0] in wanted})
        if len(suffixes) > 1:
            raise VidtempoError(
                f"{folder}: shard files with suffixes {', '.join(repr(s) for s in suffixes)}; choose one with --suffix"
            )
        suffix = suffixes[0] if suffixes else ""
    if not wanted:
        raise VidtempoError(f"{folder}: no shard files ({{split}}_features{suffix or ''}.shard-I-of-N.h5) found")
    return {split: merge_shards(folder, split, suffix, delete_shards=delete_shards) for split in wanted}
