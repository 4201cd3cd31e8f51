"""``vidtempo split``: stratified, deterministic train/val/test folders from one folder per class."""

from __future__ import annotations

import json

import pytest

from vidtempo.errors import VidtempoError
from vidtempo.features.video_splits import split_videos


@pytest.fixture
def library(tmp_path):
    """20 Animation and 10 Gaming files (their bytes do not matter to splitting), one in a sub-folder."""
    root = tmp_path / "all"
    for category, count in (("Animation", 20), ("Gaming", 10)):
        for i in range(count):
            path = root / category / (f"part/{i:02d}.mp4" if i == 0 else f"{i:02d}.mp4")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{category} {i}")
    (root / "Animation" / "notes.txt").write_text("not a video")
    return root


def listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.mp4"))


def test_each_class_is_split_by_its_shares_without_overlap(library, tmp_path):
    counts = split_videos(library, tmp_path / "videos", val=0.2, test=0.1, seed=3)
    assert counts == {"train": {"Animation": 14, "Gaming": 7}, "val": {"Animation": 4, "Gaming": 2},
                      "test": {"Animation": 2, "Gaming": 1}}
    names = [p.split("/", 1)[1] for p in listing(tmp_path / "videos")]
    assert sorted(names) == sorted(listing(library)), "every video once, in one split"
    linked = next((tmp_path / "videos" / "train").rglob("*.mp4"))
    assert linked.is_symlink() and linked.resolve().is_relative_to(library)
    record = json.loads((tmp_path / "videos" / "splits.json").read_text())
    assert record["seed"] == 3 and len(record["videos"]) == 30


def test_the_same_seed_gives_the_same_split_and_another_seed_another(library, tmp_path):
    split_videos(library, tmp_path / "a", seed=1)
    split_videos(library, tmp_path / "b", seed=1)
    split_videos(library, tmp_path / "c", seed=2, copy=True)
    assert listing(tmp_path / "a") == listing(tmp_path / "b") != listing(tmp_path / "c")
    assert not next((tmp_path / "c").rglob("*.mp4")).is_symlink()


def test_bad_splits_are_refused_and_write_nothing(library, tmp_path):
    with pytest.raises(VidtempoError, match="must not contain each other"):
        split_videos(library, library / "videos")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(VidtempoError, match="already holds files"):
        split_videos(library, tmp_path / "full")
    with pytest.raises(VidtempoError, match="--val must be"):
        split_videos(library, tmp_path / "out", val=1.5)
    with pytest.raises(VidtempoError, match="none to train on"):
        split_videos(library, tmp_path / "out", val=0.5, test=0.5)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left"
