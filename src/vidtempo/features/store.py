"""The HDF5 feature store: the one place that defines its file names, layout and checks.

One file per split, ``{split}_features{suffix}.h5``, holding

- ``features``   float32 ``[N, T_max, D]``, zero-padded after each video's frames
- ``labels``     int64 ``[N]``
- ``num_frames`` int32 ``[N]``, each in ``1..T_max``
- attributes ``num_videos``, ``max_frames``, ``feature_dim``, ``category_mapping`` (JSON, name -> index),
  ``multi_scale``

and, written by vidtempo but never required, ``video_ids`` and the extraction settings as attributes.
Files with only the seed system's fields load unchanged. ``SplitWriter`` writes a file video by video (memory
independent of the number of videos) under a temporary name renamed when complete; ``write_split`` writes
one held in memory through it.

Memory. ``read_split`` always validates the whole file (shapes, labels, frame counts, finite features),
reading ``features`` in blocks of at most ``_VALIDATION_ROWS`` rows and ``_VALIDATION_BYTES`` bytes, so the
check needs bounded memory. Then:

- a split whose features (``N * T_max * D * 4`` bytes as float32) fit under ``max_in_memory_bytes`` is read
  once into a numpy array, ``FeatureSplit.features``; nothing is decompressed again per item;
- a larger split streams: ``FeatureSplit.features`` is an ``H5Features``, which reads what is indexed
  (``features[i, :n]`` one video, ``features[a:b]`` a block of rows, also integer and index-array keys on
  the first axis) straight from the file, through HDF5's chunk cache bounded to ``cache_bytes`` per open
  file. Each process opens its own read-only handle on first use (a DataLoader worker, forked or spawned,
  never shares its parent's), and pickling carries only the path and settings.

``max_in_memory_bytes=None`` means the automatic limit ``default_max_in_memory_bytes()``:
``IN_MEMORY_FRACTION`` of the memory available now (``MemAvailable`` in ``/proc/meminfo``, else
``FALLBACK_MEMORY_BYTES``), read again for each split, so splits loaded earlier count against later ones.
``labels``, ``num_frames`` and ``video_ids`` are always loaded. ``np.asarray(features)`` on a streamed split
reads all of it into memory: code that may see large splits should index row blocks instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

from ..errors import FeatureStoreError
from ..files import temp_path

SPLITS = ("train", "val", "test")
MULTISCALE_SUFFIX = "_multiscale"
REQUIRED_DATASETS = ("features", "labels", "num_frames")
REQUIRED_ATTRS = ("num_videos", "max_frames", "feature_dim", "category_mapping", "multi_scale")
# Attributes vidtempo adds to describe how the features were made; carried into checkpoints so that
# a new video can be extracted the same way.
# The median duration of the split's videos: the default window of a timeline.
MEDIAN_SECONDS_ATTR = "median_video_seconds"


def median_seconds(seconds: np.ndarray) -> float:
    """The median of the known (finite, positive) video durations: the timeline's default window."""
    known = seconds[np.isfinite(seconds) & (seconds > 0)]
    return float(np.median(known))


# The extraction settings a feature file records (ExtractionSettings.file_attrs); "sampling" absent: exact.
EXTRACTION_ATTRS = ("backbone", "image_size", "frames_per_video", "scales", "sampling", "vidtempo_version",
                    MEDIAN_SECONDS_ATTR)
# Rows checked for finite values at a time, so validating a large file needs bounded memory.
_VALIDATION_ROWS = 256
_VALIDATION_BYTES = 64 * 2**20
# Splits larger than this fraction of the available memory stream from the file instead of being loaded.
IN_MEMORY_FRACTION = 0.4
FALLBACK_MEMORY_BYTES = 8 * 2**30  # "available memory" where /proc/meminfo cannot be read
# HDF5 chunk cache of a streamed split, per process that reads it.
STREAM_CACHE_BYTES = 32 * 2**20
_FEATURE_DTYPE = np.dtype(np.float32)
# Feature rows a SplitWriter collects before writing them out together (at least one row).
_WRITE_BLOCK_BYTES = 16 * 2**20


def split_filename(split: str, suffix: str = "") -> str:
    return f"{split}_features{suffix}.h5"


def split_path(features_dir: str | os.PathLike, split: str, suffix: str = "") -> Path:
    return Path(features_dir) / split_filename(split, suffix)


def detect_suffix(features_dir: str | os.PathLike) -> str:
    """The suffix whose train file exists: ``_multiscale`` first, then none."""
    for suffix in (MULTISCALE_SUFFIX, ""):
        if split_path(features_dir, "train", suffix).is_file():
            return suffix
    raise FeatureStoreError(
        f"{features_dir}: no {split_filename('train', MULTISCALE_SUFFIX)} or {split_filename('train')} found"
    )


def parse_category_mapping(raw: Any, where: str) -> dict[str, int]:
    """Parse and check a category mapping: JSON object name -> index, indices exactly 0..C-1."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    try:
        mapping = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (ValueError, TypeError) as exc:
        raise FeatureStoreError(f"{where}: category_mapping is not valid JSON ({exc})") from None
    if not isinstance(mapping, dict) or not mapping:
        raise FeatureStoreError(f"{where}: category_mapping must be a non-empty JSON object name -> index")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in mapping.values()):
        raise FeatureStoreError(f"{where}: category_mapping indices must be integers")
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise FeatureStoreError(f"{where}: category_mapping indices must be 0..{len(mapping) - 1} without gaps")
    return {str(k): int(v) for k, v in sorted(mapping.items(), key=lambda kv: kv[1])}


def class_names(mapping: Mapping[str, int]) -> list[str]:
    """Category names ordered by index."""
    return [name for name, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def attr_value(value: Any) -> Any:
    """HDF5 attribute -> plain Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [attr_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def available_memory_bytes() -> int:
    """``MemAvailable`` from ``/proc/meminfo``, else ``FALLBACK_MEMORY_BYTES``."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return FALLBACK_MEMORY_BYTES


def default_max_in_memory_bytes() -> int:
    """The automatic limit: ``IN_MEMORY_FRACTION`` of the memory available now."""
    return int(IN_MEMORY_FRACTION * available_memory_bytes())


class H5Features:
    """The ``features`` dataset of a split file, read on demand: float32 ``[N, T_max, D]``.

    Supports what the code base indexes a feature array with: ``x[i]``, ``x[i, :n]``, ``x[a:b]``,
    ``x[a:b, :n]``, an index array or list on the first axis (any order, repeats allowed), plus ``shape``,
    ``dtype``, ``ndim``, ``len()`` and ``np.asarray(x)`` (which reads everything). Results are new float32
    numpy arrays. The HDF5 handle is opened per process on first use; its chunk cache holds at most
    ``cache_bytes``.
    """

    ndim = 3
    dtype = _FEATURE_DTYPE

    def __init__(self, path: str | os.PathLike, shape: Sequence[int], cache_bytes: int = STREAM_CACHE_BYTES,
                 dataset: str = "features") -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.cache_bytes = int(cache_bytes)
        self.dataset = dataset
        self._file: h5py.File | None = None
        self._data: h5py.Dataset | None = None
        self._pid: int | None = None

    # --------------------------------------------------------------------------------- file handle
    def _dataset(self) -> h5py.Dataset:
        if self._pid != os.getpid():
            # First use in this process (or a child forked from one that had it open): a handle of our own.
            # The inherited one is dropped, not used: an HDF5 handle must not be shared across fork.
            self._file = self._data = None
            self._pid = os.getpid()
        if self._data is None:
            nbytes = max(self.cache_bytes, 0)
            try:
                self._file = h5py.File(self.path, "r", rdcc_nbytes=nbytes, rdcc_nslots=_cache_slots(nbytes))
            except OSError as exc:
                raise FeatureStoreError(f"{self.path}: cannot reopen feature file ({exc})") from None
            self._data = self._file[self.dataset]
            if tuple(self._data.shape) != self.shape:
                raise FeatureStoreError(f"{self.path}: 'features' changed shape from {self.shape} to {self._data.shape}")
        return self._data

    def close(self) -> None:
        """Close this process's handle (a later access reopens it)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = self._data = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "shape": self.shape, "cache_bytes": self.cache_bytes, "dataset": self.dataset}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["shape"], state["cache_bytes"], state["dataset"])

    # ---------------------------------------------------------------------------------- array-like
    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"H5Features({str(self.path)!r}, shape={self.shape})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[:]
        return data if dtype is None else data.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _expand_key(key, self.ndim)
        first, rest = key[0], key[1:]
        simple = tuple(_simple_index(k, size) for k, size in zip(rest, self.shape[1:]))
        trailing_simple = all(k is not None for k in simple)
        if trailing_simple:
            rest = simple  # ints and unit-step slices, normalised: h5py reads just that part
        data = self._dataset()
        n = self.shape[0]
        if _is_int(first):
            index = int(first)
            if not -n <= index < n:
                raise IndexError(f"index {index} is out of bounds for axis 0 with size {n}")
            index %= n
            out = data[(index, *rest)] if trailing_simple else data[index][rest]
        elif isinstance(first, slice):
            start, stop, step = first.indices(n)
            if step == 1:
                out = data[(slice(start, max(start, stop)), *rest)] if trailing_simple else data[start:stop][(slice(None), *rest)]
            else:
                out = self[np.arange(start, stop, step)][(slice(None), *rest)]
        else:
            rows = np.asarray(first)
            if rows.dtype == bool:
                if rows.shape != (n,):
                    raise IndexError(f"boolean index of shape {rows.shape} does not match axis 0 of size {n}")
                rows = np.flatnonzero(rows)
            if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
                raise IndexError("H5Features takes an integer, a slice or a 1-D index array on the first axis")
            if rows.size and (rows.min() < -n or rows.max() >= n):
                raise IndexError(f"index out of bounds for axis 0 with size {n}")
            rows = rows % n if rows.size else rows.astype(np.int64)
            unique, inverse = np.unique(rows, return_inverse=True)
            block = np.empty((unique.size, *self.shape[1:]), dtype=data.dtype)
            for j, row in enumerate(unique):  # h5py wants increasing unique indices; one row at a time is simplest
                data.read_direct(block, np.s_[int(row)], np.s_[j])
            out = block[inverse.reshape(-1)][(slice(None), *rest)]
        return np.asarray(out, dtype=self.dtype)


def _cache_slots(nbytes: int) -> int:
    # HDF5 advises a prime number of hash slots, some 10-100 times the chunks that fit in the cache.
    for candidate in (521, 1031, 2053, 4099, 8209, 16411, 32771, 65537):
        if candidate * 4096 >= nbytes:
            return candidate
    return 131101


def _simple_index(key: Any, size: int) -> int | slice | None:
    """An int or a unit-step slice as h5py reads it (non-negative, in bounds); None for anything else."""
    if _is_int(key):
        if not -size <= int(key) < size:
            raise IndexError(f"index {int(key)} is out of bounds for size {size}")
        return int(key) % size
    if isinstance(key, slice):
        start, stop, step = key.indices(size)
        if step == 1:
            return slice(start, max(start, stop))
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _expand_key(key: Any, ndim: int) -> tuple[Any, ...]:
    """A key as one entry per axis (Ellipsis expanded, missing trailing axes as full slices)."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is None for k in key):
        raise IndexError("H5Features does not support np.newaxis; index first, then reshape the result")
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis")
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (ndim - len(key) + 1) + key[at + 1 :]
    if len(key) > ndim:
        raise IndexError(f"too many indices: {len(key)} for {ndim} dimensions")
    return key + (slice(None),) * (ndim - len(key))


@dataclass
class FeatureSplit:
    """One split: labels and frame counts in memory; features in memory (numpy) or streamed (H5Features)."""

    features: np.ndarray | H5Features  # float32 [N, T_max, D]
    labels: np.ndarray  # int64 [N]
    num_frames: np.ndarray  # int64 [N]
    category_mapping: dict[str, int]
    multi_scale: bool = False
    video_ids: list[str] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def streamed(self) -> bool:
        """True when the features are read from the file on demand rather than held in memory."""
        return isinstance(self.features, H5Features)

    @property
    def num_videos(self) -> int:
        return int(self.features.shape[0])

    @property
    def max_frames(self) -> int:
        return int(self.features.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.category_mapping)

    @property
    def class_names(self) -> list[str]:
        return class_names(self.category_mapping)

    def extraction_settings(self) -> dict[str, Any]:
        """The extraction attributes present in the file (empty for the seed's files)."""
        settings = {k: self.attrs[k] for k in EXTRACTION_ATTRS if k in self.attrs}
        settings["multi_scale"] = self.multi_scale
        return settings


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise FeatureStoreError(f"{path}: file not found")
    if not path.is_file():
        raise FeatureStoreError(f"{path}: not a file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).split("(")[0].strip() or "unreadable"
        raise FeatureStoreError(f"{path}: not a readable HDF5 file ({reason})") from None


def read_split(path: str | os.PathLike, max_in_memory_bytes: int | None = None,
               cache_bytes: int = STREAM_CACHE_BYTES) -> FeatureSplit:
    """Validate one split file, then load its features into memory if they take at most
    ``max_in_memory_bytes`` (None: ``default_max_in_memory_bytes()``), else stream them (``H5Features``
    with a chunk cache of ``cache_bytes``). Raises FeatureStoreError naming the file."""
    path = Path(path)
    with _open(path) as f:
        try:
            return _read_checked(f, path, max_in_memory_bytes, cache_bytes)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            # h5py raises these for truncated or damaged datasets.
            raise FeatureStoreError(f"{path}: damaged feature file ({exc})") from None


def _read_checked(f: h5py.File, path: Path, max_in_memory_bytes: int | None, cache_bytes: int) -> FeatureSplit:
    for name in REQUIRED_DATASETS:
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise FeatureStoreError(f"{path}: missing dataset '{name}'")
    if "category_mapping" not in f.attrs:
        raise FeatureStoreError(f"{path}: missing attribute 'category_mapping'")
    mapping = parse_category_mapping(f.attrs["category_mapping"], str(path))
    feats = f["features"]
    if feats.ndim != 3:
        raise FeatureStoreError(f"{path}: 'features' must be 3-D [videos, frames, dim], got shape {feats.shape}")
    n, t_max, dim = feats.shape
    if n == 0 or t_max == 0 or dim == 0:
        raise FeatureStoreError(f"{path}: 'features' is empty (shape {feats.shape})")
    labels = np.asarray(f["labels"][()]).reshape(-1)
    num_frames = np.asarray(f["num_frames"][()]).reshape(-1)
    if labels.shape[0] != n or num_frames.shape[0] != n:
        raise FeatureStoreError(
            f"{path}: {n} feature rows but {labels.shape[0]} labels and {num_frames.shape[0]} num_frames"
        )
    if not np.issubdtype(labels.dtype, np.integer) or not np.issubdtype(num_frames.dtype, np.integer):
        raise FeatureStoreError(f"{path}: 'labels' and 'num_frames' must be integers")
    bad = np.flatnonzero((labels < 0) | (labels >= len(mapping)))
    if bad.size:
        raise FeatureStoreError(
            f"{path}: label {int(labels[bad[0]])} of video {int(bad[0])} is outside the category mapping "
            f"(0..{len(mapping) - 1})"
        )
    bad = np.flatnonzero((num_frames < 1) | (num_frames > t_max))
    if bad.size:
        raise FeatureStoreError(
            f"{path}: num_frames {int(num_frames[bad[0]])} of video {int(bad[0])} is outside 1..{t_max}"
        )
    if "feature_dim" in f.attrs and int(f.attrs["feature_dim"]) != dim:
        raise FeatureStoreError(f"{path}: attribute feature_dim={int(f.attrs['feature_dim'])} but features have {dim}")
    features = _checked_features(feats, path, max_in_memory_bytes, cache_bytes)
    video_ids = None
    if "video_ids" in f:
        video_ids = [attr_value(v) for v in f["video_ids"][()]]
    attrs = {k: attr_value(v) for k, v in f.attrs.items() if k != "category_mapping"}
    return FeatureSplit(
        features=features,
        labels=labels.astype(np.int64),
        num_frames=num_frames.astype(np.int64),
        category_mapping=mapping,
        multi_scale=bool(attrs.get("multi_scale", False)),
        video_ids=video_ids,
        attrs=attrs,
        path=path,
    )


def _checked_features(feats: h5py.Dataset, path: Path, max_in_memory_bytes: int | None,
                      cache_bytes: int) -> np.ndarray | H5Features:
    """The features, read into memory when they fit under the limit (else streamed from the file later),
    after checking every row for NaN and infinities, a block of rows at a time."""
    n, t_max, dim = feats.shape
    limit = default_max_in_memory_bytes() if max_in_memory_bytes is None else int(max_in_memory_bytes)
    in_memory = n * t_max * dim * _FEATURE_DTYPE.itemsize <= limit
    features: np.ndarray | H5Features
    features = np.empty((n, t_max, dim), dtype=np.float32) if in_memory else H5Features(path, (n, t_max, dim), cache_bytes)
    rows = max(1, min(_VALIDATION_ROWS, _VALIDATION_BYTES // (t_max * dim * feats.dtype.itemsize)))
    for start in range(0, n, rows):
        block = feats[start : start + rows]
        finite = np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise FeatureStoreError(f"{path}: video {row} has NaN or infinite features")
        if in_memory:
            features[start : start + block.shape[0]] = block
        del block, finite
    return features


class SplitWriter:
    """Writes one split file video by video, so memory does not grow with the number of videos.

    ``features`` is created at its final shape ``[num_videos, max_frames, feature_dim]`` (gzip, one chunk per
    video) and rows go to the file in blocks of at most ``_WRITE_BLOCK_BYTES``; ``labels``, ``num_frames``,
    ``video_ids`` (small) and the attributes are written by ``close()``. Everything goes to a hidden temporary
    name that ``close()`` renames to ``path``: a write that fails or is killed never leaves a file under the
    final name. Leaving a ``with`` block by an exception removes the temporary (``abort()``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        num_videos: int,
        max_frames: int,
        feature_dim: int,
        category_mapping: Mapping[str, int],
        multi_scale: bool,
        *,
        with_video_ids: bool = True,
        extra_attrs: Mapping[str, Any] | None = None,
        extra_datasets: Mapping[str, np.ndarray] | None = None,
        compression: str | None = "gzip",
    ) -> None:
        self.path = Path(path)
        self._extra_datasets = dict(extra_datasets or {})  # small per-video arrays, written by close()
        self.shape = (int(num_videos), int(max_frames), int(feature_dim))
        self._attrs = {
            "num_videos": self.shape[0],
            "max_frames": self.shape[1],
            "feature_dim": self.shape[2],
            "category_mapping": json.dumps(dict(category_mapping)),
            "multi_scale": bool(multi_scale),
            **(extra_attrs or {}),
        }
        self._labels = np.zeros(self.shape[0], dtype=np.int64)
        self._num_frames = np.zeros(self.shape[0], dtype=np.int32)
        self._video_ids: list[str] | None = [] if with_video_ids else None
        self._rows = 0
        row_bytes = max(1, self.shape[1] * self.shape[2] * _FEATURE_DTYPE.itemsize)
        self._block = np.zeros((max(1, min(self.shape[0], _WRITE_BLOCK_BYTES // row_bytes)), *self.shape[1:]),
                               dtype=np.float32)
        self._block_start = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_path(self.path)  # written in place as videos arrive, renamed by close()
        self._file: h5py.File | None = h5py.File(self._tmp, "w")
        try:
            self._features = self._file.create_dataset(
                "features", shape=self.shape, dtype=_FEATURE_DTYPE, compression=compression,
                chunks=(1, *self.shape[1:]) if self.shape[0] else None,  # one video per chunk
            )
        except BaseException:
            self.abort()
            raise

    def add(self, features: np.ndarray, label: int, video_id: str | None = None,
            num_frames: int | None = None) -> None:
        """The next video: ``features`` ``[steps, feature_dim]`` with ``steps <= max_frames``, zero-padded
        to ``max_frames``; ``num_frames`` defaults to ``steps``."""
        if self._rows >= self.shape[0]:
            raise ValueError(f"{self.path}: all {self.shape[0]} videos are written already")
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[0] > self.shape[1] or features.shape[1] != self.shape[2]:
            raise ValueError(f"{self.path}: a video's features have shape {features.shape}, the file takes "
                             f"[at most {self.shape[1]}, {self.shape[2]}]")
        slot = self._rows - self._block_start
        self._block[slot] = 0.0
        self._block[slot, : features.shape[0]] = features
        self._labels[self._rows] = label
        self._num_frames[self._rows] = features.shape[0] if num_frames is None else num_frames
        if self._video_ids is not None:
            self._video_ids.append(video_id)
        self._rows += 1
        if self._rows - self._block_start == self._block.shape[0]:
            self._flush()

    def _flush(self) -> None:
        rows = self._rows - self._block_start
        if rows:
            self._features[self._block_start : self._rows] = self._block[:rows]
        self._block_start = self._rows

    def close(self) -> Path:
        """Write the rest and move the file to its name; every video must have been added."""
        if self._file is None:
            raise ValueError(f"{self.path}: the writer is closed")
        try:
            if self._rows != self.shape[0]:
                raise ValueError(f"{self.path}: {self._rows} of {self.shape[0]} videos were written")
            self._flush()
            f = self._file
            f.create_dataset("labels", data=self._labels)
            f.create_dataset("num_frames", data=self._num_frames)
            if self._video_ids is not None:
                f.create_dataset("video_ids", data=self._video_ids, dtype=h5py.string_dtype("utf-8"))
            for name, values in self._extra_datasets.items():
                f.create_dataset(name, data=values)
            for key, value in self._attrs.items():
                f.attrs[key] = value
            f.close()
            self._file = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the unfinished file (nothing appears under the final name)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "SplitWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_split(
    path: str | os.PathLike,
    features: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    num_frames: Sequence[int] | np.ndarray,
    category_mapping: Mapping[str, int],
    multi_scale: bool,
    video_ids: Iterable[str] | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
    compression: str | None = "gzip",
) -> Path:
    """Write a split file held in memory (``features`` ``[N, T_max, D]``) atomically; see ``SplitWriter``."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 3:
        raise ValueError(f"{path}: features must be [videos, frames, dim], got shape {features.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    num_frames = np.asarray(num_frames, dtype=np.int32)
    ids = None if video_ids is None else list(video_ids)
    with SplitWriter(path, *features.shape, category_mapping, multi_scale, with_video_ids=ids is not None,
                     extra_attrs=extra_attrs, compression=compression) as writer:
        for row in range(features.shape[0]):
            writer.add(features[row], labels[row], None if ids is None else ids[row], num_frames=num_frames[row])
    return writer.path


def read_splits(features_dir: str | os.PathLike, suffix: str, splits: Sequence[str] = SPLITS,
                max_in_memory_bytes: int | None = None) -> dict[str, FeatureSplit]:
    """Load several splits and check they agree on category mapping and feature dimension.

    ``max_in_memory_bytes`` applies to each split (see ``read_split``); None: the automatic limit."""
    other_suffix = "" if suffix == MULTISCALE_SUFFIX else MULTISCALE_SUFFIX
    for split in splits:
        path, other = split_path(features_dir, split, suffix), split_path(features_dir, split, other_suffix)
        if not path.is_file() and other.is_file():
            raise FeatureStoreError(f"{path}: not found, but {other.name} is there: pass feature_file_suffix="
                                    f"{other_suffix!r} (--suffix '{other_suffix}' on the command line)")
    loaded = {split: read_split(split_path(features_dir, split, suffix), max_in_memory_bytes) for split in splits}
    first_name, first = next(iter(loaded.items()))
    for name, split in loaded.items():
        if split.category_mapping != first.category_mapping:
            raise FeatureStoreError(
                f"{split.path}: category_mapping {split.category_mapping} differs from {first_name} split's "
                f"{first.category_mapping}"
            )
        if split.feature_dim != first.feature_dim:
            raise FeatureStoreError(
                f"{split.path}: feature dimension {split.feature_dim} differs from {first_name} split's "
                f"{first.feature_dim}"
            )
    return loaded


def summarize(split: FeatureSplit) -> dict[str, Any]:
    """A plain summary of a validated split, for `vidtempo inspect`."""
    counts = np.bincount(split.labels, minlength=split.num_classes)
    extra = {k: v for k, v in split.attrs.items() if k not in REQUIRED_ATTRS}
    return {
        "file": str(split.path) if split.path else None,
        "num_videos": split.num_videos,
        "max_frames": split.max_frames,
        "feature_dim": split.feature_dim,
        "multi_scale": split.multi_scale,
        "frames_per_video": {
            "min": int(split.num_frames.min()),
            "mean": round(float(split.num_frames.mean()), 2),
            "max": int(split.num_frames.max()),
        },
        "classes": {name: int(counts[idx]) for name, idx in split.category_mapping.items()},
        "has_video_ids": split.video_ids is not None,
        "extra_attributes": extra,
    }
