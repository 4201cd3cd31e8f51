"""Finding the videos: ``VIDEOS/{split}/{Category}/**/*.{mp4,mkv,webm,mov,avi}``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ...errors import VidtempoError
from ..store import SPLITS
from .video import VIDEO_EXTENSIONS, is_video_file


@dataclass(frozen=True)
class VideoItem:
    path: Path
    video_id: str  # path relative to the videos folder, with forward slashes
    category: str
    label: int


@dataclass
class VideoCatalog:
    videos_dir: Path
    category_mapping: dict[str, int]
    splits: dict[str, list[VideoItem]]  # only the splits asked for, each sorted by video_id


def scan_videos(videos_dir: str | os.PathLike, splits: Sequence[str] | None = None) -> VideoCatalog:
    """List the videos of the given splits (default: whichever of train/val/test exist).

    The category mapping is the sorted union of category names over *all* split folders, so every feature
    file of one folder gets the same mapping even when its splits are extracted separately.
    """
    root = Path(videos_dir)
    if not root.is_dir():
        raise VidtempoError(f"{root}: videos folder not found")
    present = [s for s in SPLITS if (root / s).is_dir()]
    if not present:
        raise VidtempoError(f"{root}: no split folders ({', '.join(SPLITS)}) inside")
    if splits is None:
        wanted = present
    else:
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise VidtempoError(f"unknown split '{unknown[0]}' (choose from {', '.join(SPLITS)})")
        missing = [s for s in splits if s not in present]
        if missing:
            raise VidtempoError(f"{root / missing[0]}: split folder not found")
        wanted = list(dict.fromkeys(splits))

    found = {split: _videos_by_category(root, split) for split in present}
    categories = sorted({category for by_category in found.values() for category in by_category})
    if not categories:
        raise VidtempoError(
            f"{root}: no videos found (expected {{split}}/{{Category}}/**/*{{{','.join(VIDEO_EXTENSIONS)}}})"
        )
    mapping = {name: index for index, name in enumerate(categories)}
    items = {
        split: sorted(
            (
                VideoItem(path=path, video_id=path.relative_to(root).as_posix(), category=category, label=mapping[category])
                for category, paths in found[split].items()
                for path in paths
            ),
            key=lambda item: item.video_id,
        )
        for split in wanted
    }
    if not any(items.values()):
        raise VidtempoError(f"{root}: no videos in split(s) {', '.join(wanted)}")
    return VideoCatalog(videos_dir=root, category_mapping=mapping, splits=items)


def _videos_by_category(root: Path, split: str) -> dict[str, list[Path]]:
    """Category folder name -> its video files (any depth); categories without videos are left out."""
    by_category: dict[str, list[Path]] = {}
    for category_dir in sorted((root / split).iterdir()):
        if not category_dir.is_dir() or category_dir.name.startswith("."):
            continue
        videos = []
        for folder, dirnames, filenames in os.walk(category_dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            # Hidden files include macOS "._name.mp4" resource forks, which are not videos.
            videos.extend(Path(folder) / f for f in filenames if not f.startswith(".") and is_video_file(Path(f)))
        if videos:
            by_category[category_dir.name] = videos
    return by_category
