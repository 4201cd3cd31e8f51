"""The HDF5 feature store: seed layout compatibility, extras, validation and atomic writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from helpers import _damage
from vidtempo.errors import FeatureStoreError
from vidtempo.features import store
from vidtempo.features.store import SplitWriter, read_split, read_splits, split_path, summarize, write_split

SEED_MAPPING = {"Animation": 0, "Flat_Content": 1, "Gaming": 2, "Natural_Content": 3}


def write_seed_layout(path, n=6, t_max=10, dim=8, seed=0):
    """A file exactly as the seed system writes it: gzip features, three datasets, five attributes."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t_max + 1, size=n).astype(np.int32)
    features = np.zeros((n, t_max, dim), dtype=np.float32)
    for i, length in enumerate(lengths):
        features[i, :length] = rng.standard_normal((length, dim))
    labels = (np.arange(n) % 4).astype(np.int64)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=features, compression="gzip", compression_opts=4)
        f.create_dataset("labels", data=labels)
        f.create_dataset("num_frames", data=lengths)
        f.attrs["num_videos"] = n
        f.attrs["max_frames"] = t_max
        f.attrs["feature_dim"] = dim
        f.attrs["category_mapping"] = json.dumps(SEED_MAPPING)
        f.attrs["multi_scale"] = True
    return features, labels, lengths


def test_seed_layout_loads_unchanged(tmp_path):
    path = tmp_path / "train_features_multiscale.h5"
    features, labels, lengths = write_seed_layout(path)
    split = read_split(path)
    np.testing.assert_array_equal(split.features, features)
    np.testing.assert_array_equal(split.labels, labels)
    np.testing.assert_array_equal(split.num_frames, lengths)
    assert split.category_mapping == SEED_MAPPING
    assert split.multi_scale is True
    assert split.video_ids is None
    assert split.class_names == ["Animation", "Flat_Content", "Gaming", "Natural_Content"]


def test_write_read_round_trip_with_extras(tmp_path):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((3, 5, 4)).astype(np.float32)
    path = write_split(tmp_path / "val_features.h5", features, [0, 1, 0], [5, 3, 1], {"a": 0, "b": 1},
                       multi_scale=False, video_ids=["a/x.mp4", "b/é.mp4", "a/z.mp4"],
                       extra_attrs={"backbone": "efficientnet_lite0", "image_size": 256})
    split = read_split(path)
    np.testing.assert_array_equal(split.features, features)
    assert split.video_ids == ["a/x.mp4", "b/é.mp4", "a/z.mp4"]
    assert split.attrs["backbone"] == "efficientnet_lite0"
    assert split.extraction_settings() == {"backbone": "efficientnet_lite0", "image_size": 256, "multi_scale": False}
    assert summarize(split)["classes"] == {"a": 2, "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["val_features.h5"], "no temporary file is left behind"


def test_write_is_atomic_when_it_fails(tmp_path):
    target = tmp_path / "train_features.h5"
    with pytest.raises(TypeError):
        write_split(target, np.zeros((2, 3, 4)), [0, 1], [3, 3], {"a": 0, "b": 1}, multi_scale=False,
                    extra_attrs={"bad": object()})
    assert list(tmp_path.iterdir()) == [], "a failed write leaves neither the file nor a temporary"


def write_whole_array(path, features, labels, num_frames, category_mapping, multi_scale, video_ids, extra_attrs):
    """The writer the store had before SplitWriter: the whole [N, T_max, D] array in one call."""
    n, t_max, dim = features.shape
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=features, compression="gzip", chunks=(1, t_max, dim) if n else None)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        f.create_dataset("num_frames", data=np.asarray(num_frames, dtype=np.int32))
        f.create_dataset("video_ids", data=list(video_ids), dtype=h5py.string_dtype("utf-8"))
        f.attrs["num_videos"] = n
        f.attrs["max_frames"] = t_max
        f.attrs["feature_dim"] = dim
        f.attrs["category_mapping"] = json.dumps(dict(category_mapping))
        f.attrs["multi_scale"] = bool(multi_scale)
        for key, value in extra_attrs.items():
            f.attrs[key] = value


def assert_same_file(path, reference):
    with h5py.File(path, "r") as f, h5py.File(reference, "r") as ref:
        assert sorted(f) == sorted(ref)
        for name in ref:
            got, want = f[name], ref[name]
            assert (got.dtype, got.shape, got.chunks, got.compression, got.compression_opts, got.shuffle) == (
                want.dtype, want.shape, want.chunks, want.compression, want.compression_opts, want.shuffle), name
            assert np.array_equal(got[()], want[()]), name
        for row in range(ref["features"].shape[0]):  # the stored (compressed) bytes, chunk by chunk
            assert f["features"].id.read_direct_chunk((row, 0, 0)) == ref["features"].id.read_direct_chunk((row, 0, 0))
        assert sorted(f.attrs) == sorted(ref.attrs)
        for key in ref.attrs:
            assert type(f.attrs[key]) is type(ref.attrs[key]) and np.array_equal(f.attrs[key], ref.attrs[key]), key


@pytest.mark.parametrize("lengths", [[5, 1, 7, 7, 3, 2, 6], []])
def test_streamed_file_equals_the_whole_array_file(tmp_path, monkeypatch, lengths):
    monkeypatch.setattr(store, "_WRITE_BLOCK_BYTES", 3 * 7 * 4 * 4)  # three rows per block: blocks and a remainder
    rng = np.random.default_rng(2)
    videos = [rng.standard_normal((n, 4)).astype(np.float32) for n in lengths]
    t_max = max(lengths, default=0)
    padded = np.zeros((len(videos), t_max, 4), dtype=np.float32)
    for row, video in enumerate(videos):
        padded[row, : len(video)] = video
    labels, ids = [i % 2 for i in range(len(videos))], [f"train/a/{i}.mp4" for i in range(len(videos))]
    mapping, extra = {"a": 0, "b": 1}, {"backbone": "efficientnet_lite0", "scales": [1.0, 0.85], "shard": 2}
    write_whole_array(tmp_path / "reference.h5", padded, labels, lengths, mapping, True, ids, extra)
    with SplitWriter(tmp_path / "streamed.h5", len(videos), t_max, 4, mapping, True, extra_attrs=extra) as writer:
        for video, label, video_id in zip(videos, labels, ids):
            writer.add(video, label, video_id)
    assert_same_file(tmp_path / "streamed.h5", tmp_path / "reference.h5")
    write_split(tmp_path / "in_memory.h5", padded, labels, lengths, mapping, True, ids, extra)
    assert_same_file(tmp_path / "in_memory.h5", tmp_path / "reference.h5")


def test_an_interrupted_stream_leaves_no_file(tmp_path):
    target = tmp_path / "train_features.h5"
    with pytest.raises(RuntimeError):
        with SplitWriter(target, 3, 2, 4, {"a": 0}, False) as writer:
            writer.add(np.ones((2, 4)), 0, "a/1.mp4")
            raise RuntimeError("the decoder died")
    with pytest.raises(ValueError, match="1 of 3 videos"):
        with SplitWriter(target, 3, 2, 4, {"a": 0}, False) as writer:
            writer.add(np.ones((2, 4)), 0, "a/1.mp4")
    assert list(tmp_path.iterdir()) == [], "neither the file nor a temporary is left"

    killed = subprocess.run([sys.executable, "-c", f"""
import os, signal, numpy as np
from vidtempo.features.store import SplitWriter
writer = SplitWriter({str(target)!r}, 1000, 8, 64, {{"a": 0}}, False)
for i in range(500):
    writer.add(np.ones((8, 64)), 0, str(i))
os.kill(os.getpid(), signal.SIGKILL)
"""], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not target.exists()
    assert all(p.name.startswith(".") for p in tmp_path.iterdir()), "only a hidden temporary may remain"


@pytest.mark.parametrize(
    "what, message",
    [
        ("nan", "NaN or infinite"),
        ("inf", "NaN or infinite"),
        ("label", "outside the category mapping"),
        ("zero_frames", "num_frames 0"),
        ("too_many_frames", "outside 1.."),
        ("no_mapping", "category_mapping"),
        ("bad_mapping", "not valid JSON"),
        ("gap_mapping", "without gaps"),
        ("no_labels", "missing dataset 'labels'"),
    ],
)
def test_invalid_content_is_refused_naming_the_file(tmp_path, what, message):
    path = tmp_path / "train_features.h5"
    write_seed_layout(path)
    _damage(path, what)
    with pytest.raises(FeatureStoreError) as info:
        read_split(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_corrupt_and_truncated_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x00not an hdf5 file" * 100)
    with pytest.raises(FeatureStoreError, match="not a readable HDF5 file"):
        read_split(garbage)
    whole = tmp_path / "whole.h5"
    write_seed_layout(whole, n=40, t_max=30, dim=16)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(FeatureStoreError, match=str(truncated)):
        read_split(truncated)
    with pytest.raises(FeatureStoreError, match="file not found"):
        read_split(tmp_path / "missing.h5")


def test_splits_must_agree(tmp_path):
    for split, dim in (("train", 8), ("val", 8), ("test", 6)):
        write_seed_layout(split_path(tmp_path, split, "_multiscale"), dim=dim)
    with pytest.raises(FeatureStoreError, match="feature dimension 6 differs"):
        read_splits(tmp_path, "_multiscale")
    write_seed_layout(split_path(tmp_path, "test", "_multiscale"), dim=8)
    with h5py.File(split_path(tmp_path, "val", "_multiscale"), "r+") as f:
        f.attrs["category_mapping"] = json.dumps({"Gaming": 0, "Animation": 1, "Flat_Content": 2, "Natural_Content": 3})
    with pytest.raises(FeatureStoreError, match="category_mapping .* differs"):
        read_splits(tmp_path, "_multiscale")
