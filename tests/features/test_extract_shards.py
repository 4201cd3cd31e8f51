"""Sharded extraction (``extract --shard I/N``) and ``merge-features``: shards merged equal an unsharded run."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from extract_fixtures import (BIKES, BUNNY, CARPHONE, cut_clip, link, run_cli, sample, start_cli,
                              write_random_bytes)
from vidtempo.cli.commands import main as vidtempo_main
from vidtempo.features.extract import shards as shards_module
from vidtempo.features.extract.extractor import extract_features
from vidtempo.features.extract.resume import partial_dir
from vidtempo.features.extract.settings import ExtractionSettings, RunOptions
from vidtempo.features.extract.shards import SHARD_ATTRS, merge_shards, shard_path
from vidtempo.features.sharding import parse_shard, shard_items
from vidtempo.features.store import read_split, split_path, write_split

SMALL = ["--frames", "8", "--image-size", "64", "--batch-size", "8", "--workers", "1"]
SUFFIX = "_multiscale"


def merge_cli(capsys, *args) -> tuple[int, str, str]:
    code = vidtempo_main(["merge-features", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err: str) -> None:
    assert err.startswith("vidtempo: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------ shard assignment


def test_shard_values_parse_and_assignment_partitions_the_sorted_list():
    assert parse_shard("2/4") == (2, 4) and parse_shard("1/1") == (1, 1)
    ids = ["b", "a", "d", "c", "e"]
    shards = [shard_items(ids, i, 3, key=lambda x: x) for i in (1, 2, 3)]
    assert shards == [["a", "d"], ["b", "e"], ["c"]]
    assert sorted(sum(shards, [])) == sorted(ids)


@pytest.mark.parametrize("value", ["0/4", "5/4", "x/y", "1/0", "-1/4", "2", "1/2/3", ""])
def test_bad_shard_values_exit_2_with_one_line(value, tmp_path, capsys):
    (tmp_path / "videos").mkdir()
    code = vidtempo_main(["extract", "--videos-dir", str(tmp_path / "videos"), "--output-dir", str(tmp_path / "out"),
                          f"--shard={value}"])
    err = capsys.readouterr().err
    assert code == 2
    assert_one_error_line(err)
    assert "--shard" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------- real videos, end to end


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    # Sorted train ids: bunny (shard 1), short (2), carphone (1), zz_broken (2): shard 2 holds only the
    # 5-frame clip and the broken file, so its sequences are shorter than the merged file's.
    link(sample(BUNNY), root / "train/Animation/bunny.mp4")
    cut_clip(sample(CARPHONE), root / "train/Animation/short.mp4", 5)
    link(sample(CARPHONE), root / "train/Natural_Content/carphone.mp4")
    write_random_bytes(root / "train/Natural_Content/zz_broken.mp4")
    link(sample(BIKES), root / "val/Natural_Content/bikes.mp4")  # one video: shard 2 of val is empty
    link(sample(BIKES), root / "test/Gaming/bikes.mp4")  # not extracted, but its category is in the mapping
    return root


@pytest.fixture(scope="module")
def unsharded(videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unsharded")
    settings = ExtractionSettings(image_size=64, frames_per_video=8)
    extract_features(videos, out, settings, RunOptions(batch_size=8, workers=1, quiet=True), ["train", "val"])
    return out


@pytest.fixture(scope="module")
def sharded(videos, tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("sharded")
    runs = [
        run_cli("--videos-dir", videos, "--output-dir", out, *SMALL, "--splits", "train,val", "--shard", f"{i}/2")
        for i in (1, 2)
    ]
    return out, runs


@pytest.mark.slow
def test_each_shard_writes_its_own_files(sharded):
    out, runs = sharded
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert "train: 2/2 videos done, 0 failed" in runs[0].stdout
    assert "train: 1/2 videos done, 1 failed" in runs[1].stdout
    for split in ("train", "val"):
        assert not split_path(out, split, SUFFIX).exists()
        for i in (1, 2):
            with h5py.File(shard_path(out, split, SUFFIX, i, 2), "r") as f:
                assert (int(f.attrs["shard"]), int(f.attrs["num_shards"])) == (i, 2)
                assert json.loads(f.attrs["category_mapping"]) == {"Animation": 0, "Gaming": 1, "Natural_Content": 2}
    with h5py.File(shard_path(out, "val", SUFFIX, 2, 2), "r") as f:
        assert f["features"].shape[0] == 0  # no video fell to it: an empty shard, so the merge knows it is done
    failures = json.loads((out / "train_failures_multiscale.shard-2-of-2.json").read_text())
    assert [f["video"] for f in failures["failed"]] == ["train/Natural_Content/zz_broken.mp4"]
    assert not (out / "train_failures_multiscale.shard-1-of-2.json").exists()
    assert not list(out.glob(".*"))  # no partial progress or temporary files left behind
    assert partial_dir(shard_path(out, "train", SUFFIX, 1, 2)).name == ".train_features_multiscale.shard-1-of-2.h5.partial"


@pytest.mark.slow
def test_a_finished_shard_is_not_redone(sharded, videos):
    out, _ = sharded
    path = shard_path(out, "train", SUFFIX, 1, 2)
    before = path.stat().st_mtime_ns
    again = run_cli("--videos-dir", videos, "--output-dir", out, *SMALL, "--splits", "train", "--shard", "1/2")
    assert again.returncode == 0, again.stderr
    assert "already extracted" in again.stdout
    assert path.stat().st_mtime_ns == before


def assert_same_split_files(out: Path, reference: Path, splits=("train", "val")) -> None:
    for split in splits:
        with h5py.File(split_path(out, split, SUFFIX), "r") as merged, \
                h5py.File(split_path(reference, split, SUFFIX), "r") as ref:
            for name in ("features", "labels", "num_frames", "video_ids"):
                assert merged[name].dtype == ref[name].dtype, name
                assert np.array_equal(merged[name][()], ref[name][()]), name
            assert set(merged.attrs) == set(ref.attrs)
            assert not set(SHARD_ATTRS) & set(merged.attrs)
            for key in ref.attrs:
                assert np.array_equal(merged.attrs[key], ref.attrs[key]), key


@pytest.mark.slow
def test_merged_shards_equal_the_unsharded_extraction(sharded, unsharded, capsys):
    out, _ = sharded
    code, stdout, err = merge_cli(capsys, "--features-dir", out, "--delete-shards")
    assert code == 0, err
    assert "train: merged" in stdout and "val: merged" in stdout
    assert_same_split_files(out, unsharded)
    with h5py.File(split_path(out, "train", SUFFIX), "r") as merged:
        assert [v.decode() for v in merged["video_ids"][()]] == [
            "train/Animation/bunny.mp4", "train/Animation/short.mp4", "train/Natural_Content/carphone.mp4",
        ]
        assert merged["num_frames"][()].tolist() == [9, 5, 9]  # the short clip zero-padded to 9 steps
    assert json.loads((out / "train_failures_multiscale.json").read_text()) == json.loads(
        (unsharded / "train_failures_multiscale.json").read_text()
    )
    assert not list(out.glob("*.shard-*"))  # --delete-shards


@pytest.mark.slow
def test_a_shard_of_a_merged_split_is_not_redone(sharded, videos):
    out, _ = sharded
    assert split_path(out, "val", SUFFIX).exists()  # merged (and its shards deleted) by the test above
    again = run_cli("--videos-dir", videos, "--output-dir", out, *SMALL, "--splits", "val", "--shard", "2/2")
    assert again.returncode == 0, again.stderr
    assert "already extracted" in again.stdout
    assert not shard_path(out, "val", SUFFIX, 2, 2).exists()


@pytest.mark.parametrize("launcher", [
    # Slurm: sbatch --array=1-2 (ids from 1); torchrun --nproc_per_node=2 (ranks from 0)
    [{"SLURM_ARRAY_TASK_ID": str(i), "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"} for i in (1, 2)],
    [{"RANK": str(i), "WORLD_SIZE": "2", "LOCAL_RANK": str(i)} for i in (0, 1)],
], ids=["slurm-array", "torchrun"])
@pytest.mark.slow
def test_shard_auto_processes_merge_into_the_unsharded_extraction(launcher, videos, unsharded, tmp_path, capsys):
    processes = [start_cli("--videos-dir", videos, "--output-dir", tmp_path, *SMALL, "--splits", "train,val",
                           "--shard", "auto", launcher=env) for env in launcher]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    assert sorted(p.name for p in tmp_path.glob("train_features*.h5")) == [
        "train_features_multiscale.shard-1-of-2.h5", "train_features_multiscale.shard-2-of-2.h5"]
    code, _, err = merge_cli(capsys, "--features-dir", tmp_path)
    assert code == 0, err
    assert_same_split_files(tmp_path, unsharded)


# --------------------------------------------------------------------- merge refusals (made-up shards)


def fake_shard(folder: Path, index: int, count: int, ids: list[str], *, split: str = "train", dim: int = 4,
               mapping: dict | None = None, image_size: int = 64, steps: int = 3) -> Path:
    features = np.stack([np.full((steps, dim), float(len(v)), np.float32) for v in ids]) if ids else (
        np.zeros((0, 0, dim), np.float32))
    attrs = {"backbone": "efficientnet_lite0", "image_size": image_size, "frames_per_video": 8,
             "scales": [1.0, 0.85, 1.15], "vidtempo_version": "0.1.0", "shard": index, "num_shards": count,
             "shard_videos": len(ids), "split_videos": 4}
    return write_split(shard_path(folder, split, SUFFIX, index, count), features, labels=[0] * len(ids),
                       num_frames=[steps] * len(ids), category_mapping=mapping or {"A": 0, "B": 1},
                       multi_scale=True, video_ids=ids, extra_attrs=attrs)


def test_merge_orders_pads_and_checks_made_up_shards(tmp_path, capsys):
    fake_shard(tmp_path, 1, 2, ["train/A/a", "train/A/ccc"], steps=2)
    fake_shard(tmp_path, 2, 2, ["train/A/bb", "train/B/dddd"], steps=3)
    path = merge_shards(tmp_path, "train", SUFFIX)
    with h5py.File(path, "r") as f:
        assert [v.decode() for v in f["video_ids"][()]] == ["train/A/a", "train/A/bb", "train/A/ccc", "train/B/dddd"]
        assert f["features"].shape == (4, 3, 4) and f["num_frames"][()].tolist() == [2, 3, 2, 3]
        assert np.all(f["features"][0, 2:] == 0) and np.all(f["features"][0, :2] == len("train/A/a"))
        assert int(f.attrs["max_frames"]) == 3 and int(f.attrs["num_videos"]) == 4


def test_merge_copies_rows_through_small_blocks_in_video_order(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_module, "_MERGE_BUFFER_BYTES", 3 * 2 * 5 * 4 * 4)  # two rows of each of 3 shards
    rng = np.random.default_rng(0)
    ids = sorted(f"train/{'AB'[i % 2]}/{i:02d}" for i in range(13))
    lengths = {video_id: int(rng.integers(1, 6)) for video_id in ids}
    values = {video_id: rng.standard_normal((lengths[video_id], 4)).astype(np.float32) for video_id in ids}
    for index in (1, 2, 3):
        mine = shard_items(ids, index, 3, key=lambda x: x)
        features = np.zeros((len(mine), max(lengths[v] for v in mine), 4), np.float32)
        for row, video_id in enumerate(mine):
            features[row, : lengths[video_id]] = values[video_id]
        write_split(shard_path(tmp_path, "train", SUFFIX, index, 3), features, [int(v[6] == "B") for v in mine],
                    [lengths[v] for v in mine], {"A": 0, "B": 1}, multi_scale=True, video_ids=mine,
                    extra_attrs={"shard": index, "num_shards": 3, "shard_videos": len(mine), "split_videos": 13})
    merged = read_split(merge_shards(tmp_path, "train", SUFFIX))
    assert merged.video_ids == ids and merged.max_frames == max(lengths.values())
    assert merged.labels.tolist() == [int(v[6] == "B") for v in ids]
    for row, video_id in enumerate(ids):
        assert merged.num_frames[row] == lengths[video_id]
        assert np.array_equal(merged.features[row, : lengths[video_id]], values[video_id])
        assert not merged.features[row, lengths[video_id] :].any()


def test_merging_with_a_missing_shard_exits_2_naming_it(tmp_path, capsys):
    fake_shard(tmp_path, 1, 3, ["train/A/a", "train/A/d"])
    fake_shard(tmp_path, 3, 3, ["train/A/c"])
    code, _, err = merge_cli(capsys, "--features-dir", tmp_path)
    assert code == 2
    assert_one_error_line(err)
    assert str(shard_path(tmp_path, "train", SUFFIX, 2, 3)) in err
    assert not split_path(tmp_path, "train", SUFFIX).exists()


@pytest.mark.parametrize(
    "second, expected",
    [
        (dict(image_size=96), "image_size"),
        (dict(mapping={"A": 0, "C": 1}), "category_mapping"),
        (dict(dim=8), "feature dimension"),
        (dict(ids=["train/A/a", "train/A/b"]), "train/A/a is also in"),
    ],
    ids=["settings", "mapping", "feature_dim", "duplicate"],
)
def test_disagreeing_shards_are_refused(tmp_path, capsys, second, expected):
    fake_shard(tmp_path, 1, 2, ["train/A/a", "train/A/c"])
    fake_shard(tmp_path, 2, 2, **{"ids": ["train/A/b", "train/A/d"], **second})
    code, _, err = merge_cli(capsys, "--features-dir", tmp_path, "--splits", "train", "--suffix", SUFFIX)
    assert code == 2
    assert_one_error_line(err)
    assert str(shard_path(tmp_path, "train", SUFFIX, 2, 2)) in err and expected in err
    assert not split_path(tmp_path, "train", SUFFIX).exists()


def test_merge_without_shards_exits_2(tmp_path, capsys):
    code, _, err = merge_cli(capsys, "--features-dir", tmp_path, "--splits", "val")
    assert code == 2
    assert_one_error_line(err)
    assert "val_features" in err
