"""The HDF5 feature store: seed layout compatibility, extras, validation and atomic writes."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from vidtempo.errors import FeatureStoreError
from vidtempo.store import read_split, read_splits, split_path, summarize, write_split

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


def _damage(path, what):
    with h5py.File(path, "r+") as f:
        if what == "nan":
            f["features"][1, 0, 0] = np.nan
        elif what == "inf":
            f["features"][2, 0, 3] = np.inf
        elif what == "label":
            labels = f["labels"][()]
            labels[0] = 7
            f["labels"][...] = labels
        elif what == "zero_frames":
            nf = f["num_frames"][()]
            nf[0] = 0
            f["num_frames"][...] = nf
        elif what == "too_many_frames":
            nf = f["num_frames"][()]
            nf[0] = f["features"].shape[1] + 1
            f["num_frames"][...] = nf
        elif what == "no_mapping":
            del f.attrs["category_mapping"]
        elif what == "bad_mapping":
            f.attrs["category_mapping"] = "{not json"
        elif what == "gap_mapping":
            f.attrs["category_mapping"] = json.dumps({"a": 0, "b": 2, "c": 3, "d": 4})
        elif what == "no_labels":
            del f["labels"]


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
