"""Train, validation and test folders from one folder of videos per class (``vidtempo split``).

``ALL/{Category}/**/*.mp4`` becomes ``VIDEOS/{train,val,test}/{Category}/...``, the layout extraction reads.
Each class is split on its own (stratified), from its files in sorted order shuffled by ``seed``, so the same
folder and seed give the same split on any machine. Files are linked (symbolic links to the originals) or
copied; the split is written into a temporary folder and renamed when whole, with ``splits.json`` recording
which video went where.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import VidtempoError
from .extract.video import VIDEO_EXTENSIONS
from .store import SPLITS

RECORD_NAME = "splits.json"


def class_videos(videos_dir: Path) -> dict[str, list[Path]]:
    """``{category: sorted video paths}`` for each sub-folder of ``videos_dir`` that holds videos."""
    if not videos_dir.is_dir():
        raise VidtempoError(f"{videos_dir}: --videos-dir is not a folder")
    found = {}
    for folder in sorted(p for p in videos_dir.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if files:
            found[folder.name] = files
    if not found:
        raise VidtempoError(f"{videos_dir}: no videos in class folders ({videos_dir}/CLASS/*.mp4)")
    return found


def assign(files: list[Path], val: float, test: float, seed: int, category: str) -> dict[str, list[Path]]:
    """One class's files shuffled by ``seed`` (and the class's name) and cut into the three splits."""
    rng = np.random.default_rng([seed, *category.encode()])
    order = [files[i] for i in rng.permutation(len(files))]
    num_test, num_val = round(len(files) * test), round(len(files) * val)
    if len(files) - num_test - num_val < 1:
        raise VidtempoError(f"class {category}: {len(files)} videos leave none to train on with --val {val} "
                            f"--test {test}")
    return {"test": order[:num_test], "val": order[num_test:num_test + num_val], "train": order[num_test + num_val:]}


def split_videos(videos_dir: str | os.PathLike, output_dir: str | os.PathLike, val: float = 0.15,
                 test: float = 0.15, seed: int = 0, copy: bool = False) -> dict[str, dict[str, int]]:
    """Write the split (see the module docstring); returns ``{split: {category: videos}}``."""
    source, target = Path(videos_dir).resolve(), Path(output_dir).resolve()
    for name, share in (("--val", val), ("--test", test)):
        if not 0.0 <= share < 1.0:
            raise VidtempoError(f"{name} must be a share in [0, 1), got {share}")
    if source == target or source in target.parents or target in source.parents:
        raise VidtempoError(f"{output_dir}: --output-dir and --videos-dir must not contain each other")
    if target.exists() and any(target.iterdir()):
        raise VidtempoError(f"{output_dir}: already holds files; give an empty or new folder")
    plan = {category: assign(files, val, test, seed, category) for category, files in class_videos(source).items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        record = _write(plan, source, staging, copy)
        (staging / RECORD_NAME).write_text(json.dumps({"seed": seed, "val": val, "test": test, "videos": record},
                                                      indent=1))
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {split: {c: len(plan[c][split]) for c in plan} for split in SPLITS}


def _write(plan: dict[str, dict[str, list[Path]]], source: Path, staging: Path, copy: bool) -> dict[str, str]:
    record = {}
    for category, splits in plan.items():
        for split, files in splits.items():
            for path in files:
                relative = path.relative_to(source)
                destination = staging / split / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                if copy:
                    shutil.copy2(path, destination)
                else:
                    destination.symlink_to(path)
                record[relative.as_posix()] = split
    return record
