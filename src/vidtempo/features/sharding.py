"""Which share of a video list this process handles: ``--shard I/N``, or ``--shard auto`` from the launcher.

``resolve_shard("auto")`` reads the first of these that the environment has:

- a Slurm job array: ``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT`` (task ids counted from
  ``SLURM_ARRAY_TASK_MIN`` in steps of ``SLURM_ARRAY_TASK_STEP``, so ``--array=0-3``, ``--array=1-4`` and
  ``--array=0-6:2`` all give shards 1/4 .. 4/4);
- a Kubernetes Indexed Job: ``JOB_COMPLETION_INDEX`` (0-based), with the number of shards in
  ``VIDTEMPO_NUM_SHARDS`` (Kubernetes does not pass the Job's ``completions`` to the pod; set it to that);
- torchrun: ``RANK`` and ``WORLD_SIZE``.

Shards are 1-based, ``(index, count)``. ``shard_items`` is the assignment every command uses: the items
sorted by video id, every ``count``-th one from the ``index``-th, so it depends only on the list.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Mapping, Sequence, TypeVar

from ..errors import VidtempoError

T = TypeVar("T")

AUTO = "auto"
NUM_SHARDS_VARIABLE = "VIDTEMPO_NUM_SHARDS"
_SHARD_ARG = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``; VidtempoError for anything but ``i/n`` with ``1 <= i <= n``."""
    match = _SHARD_ARG.match(str(text))
    if not match:
        raise VidtempoError(f"--shard must be i/n, e.g. 2/4 (shard 2 of 4), or auto, got '{text}'")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise VidtempoError(f"--shard {text}: the shard number must be 1..{max(count, 1)} of {count} shards")
    return index, count


def resolve_shard(text: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``--shard``'s value as ``(index, count)``: ``"I/N"``, or ``"auto"`` read from ``environ`` (default
    ``os.environ``) as the module docstring lists. VidtempoError, one line, when neither works."""
    if str(text).strip().lower() != AUTO:
        return parse_shard(text)
    environ = os.environ if environ is None else environ
    for read in (_slurm_array, _kubernetes_indexed_job, _torchrun):
        shard = read(environ)
        if shard is not None:
            return shard
    raise VidtempoError(
        "--shard auto: no shard in the environment (a Slurm array sets SLURM_ARRAY_TASK_ID and "
        "SLURM_ARRAY_TASK_COUNT, a Kubernetes Indexed Job JOB_COMPLETION_INDEX with "
        f"{NUM_SHARDS_VARIABLE}, torchrun RANK and WORLD_SIZE); give --shard I/N instead"
    )


def shard_items(items: Sequence[T], index: int, count: int,
                key: Callable[[T], str] = lambda item: item.video_id) -> list[T]:
    """Shard ``index`` (1-based) of ``count`` of ``items``: sorted by video_id, every count-th from index-1."""
    return sorted(items, key=key)[index - 1 :: count]


def _slurm_array(environ: Mapping[str, str]) -> tuple[int, int] | None:
    if "SLURM_ARRAY_TASK_ID" not in environ:
        return None
    if "SLURM_ARRAY_TASK_COUNT" not in environ:
        raise VidtempoError("--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")
    task, count = _integer(environ, "SLURM_ARRAY_TASK_ID"), _integer(environ, "SLURM_ARRAY_TASK_COUNT")
    first = _integer(environ, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in environ else 0
    step = _integer(environ, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in environ else 1
    offset = task - first
    index = offset // step + 1 if step > 0 and offset % step == 0 else 0
    return _checked(index, count, f"SLURM_ARRAY_TASK_ID={task} of an array of {count} tasks from {first} "
                                  f"(step {step}); use an --array range such as 0-{count - 1}")


def _kubernetes_indexed_job(environ: Mapping[str, str]) -> tuple[int, int] | None:
    if "JOB_COMPLETION_INDEX" not in environ:
        return None
    index = _integer(environ, "JOB_COMPLETION_INDEX")
    if NUM_SHARDS_VARIABLE not in environ:
        raise VidtempoError(f"--shard auto: JOB_COMPLETION_INDEX is set but not {NUM_SHARDS_VARIABLE}; set it to "
                            "the Job's completions")
    count = _integer(environ, NUM_SHARDS_VARIABLE)
    return _checked(index + 1, count, f"JOB_COMPLETION_INDEX={index} with {NUM_SHARDS_VARIABLE}={count}")


def _torchrun(environ: Mapping[str, str]) -> tuple[int, int] | None:
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    rank, world_size = _integer(environ, "RANK"), _integer(environ, "WORLD_SIZE")
    return _checked(rank + 1, world_size, f"RANK={rank} with WORLD_SIZE={world_size}")


def _integer(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise VidtempoError(f"--shard auto: {name}={environ[name]!r} is not an integer") from None


def _checked(index: int, count: int, source: str) -> tuple[int, int]:
    if count < 1 or not 1 <= index <= count:
        raise VidtempoError(f"--shard auto: {source} is not a shard of 1..{max(count, 1)}")
    return index, count
