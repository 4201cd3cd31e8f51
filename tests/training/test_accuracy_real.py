"""The .ts reader and the frame rule of benchmarks/accuracy_real.py, on small .ts texts written here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy_real.py"


def load_script():
    spec = importlib.util.spec_from_file_location("accuracy_real", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bench = load_script()

UNIVARIATE = """# A comment line
@problemName Tiny
@timeStamps false
@univariate true
@equalLength true
@seriesLength 4
@classLabel true b a

@data
1.0,2.0,3.0,4.0:a
-1,-2,-3,-4:b
0.5,0.5,0.5,0.5:a
"""

MULTIVARIATE = """@problemName TinyMulti
@univariate false
@dimensions 2
@classLabel true Walking Running
@data
1,2,3:4,5,6:Running
7,8,9:10,11,12:Walking
"""

VARIABLE = """@problemName TinyVariable
@equalLength false
@missing true
@classLabel true 1 2
@data
?,?,3,?,5:1
1,2:2
4,?,?,?,?,?,?:2
"""


def test_univariate_items_keep_values_labels_and_the_headers_class_order():
    data = bench.parse_ts(UNIVARIATE)
    assert [s.shape for s in data.series] == [(1, 4)] * 3
    assert data.labels == ["a", "b", "a"]
    assert data.class_labels == ["b", "a"]
    np.testing.assert_array_equal(data.series[1], [[-1, -2, -3, -4]])
    assert data.series[0].dtype == np.float32


def test_multivariate_items_have_one_row_per_dimension():
    data = bench.parse_ts(MULTIVARIATE)
    assert [s.shape for s in data.series] == [(2, 3), (2, 3)]
    np.testing.assert_array_equal(data.series[0], [[1, 2, 3], [4, 5, 6]])
    assert data.labels == ["Running", "Walking"]


def test_variable_length_items_fill_missing_values_with_the_last_value_or_zero():
    data = bench.parse_ts(VARIABLE)
    assert [s.shape[1] for s in data.series] == [5, 2, 7]
    np.testing.assert_array_equal(data.series[0], [[0, 0, 3, 3, 5]])  # leading '?' -> 0, then carried
    np.testing.assert_array_equal(data.series[2], [[4, 4, 4, 4, 4, 4, 4]])
    assert data.labels == ["1", "2", "2"]


def test_a_file_without_data_or_labels_is_refused():
    with pytest.raises(ValueError, match="no @data"):
        bench.parse_ts("@problemName X\n1,2:a\n")
    with pytest.raises(ValueError, match="no class labels"):
        bench.parse_ts("@classLabel false\n@data\n1,2\n")


def test_patches_cover_the_longest_item_in_at_most_max_steps_frames():
    assert bench.patch_size(24) == 1
    assert bench.patch_size(64) == 1
    assert bench.patch_size(65) == 2
    assert bench.patch_size(1460) == 23 and np.ceil(1460 / 23) <= bench.MAX_STEPS


def test_a_frame_pools_the_frozen_convolutions_over_its_time_points():
    series = np.random.default_rng(0).normal(size=(2, 7)).astype(np.float32)
    bank = bench.convolution_bank(dims=2)
    frames = bench.frame_features(series, patch=3, bank=bank)
    assert frames.shape == (3, 2 * bench.FEATURE_KERNELS)  # ceil(7 / 3) frames
    with torch.no_grad():
        channels = torch.cat([conv(torch.from_numpy(series)[None]) for conv in bank], dim=1)[0].numpy()
    assert channels.shape == (bench.FEATURE_KERNELS, 7), "'same' padding: one output per time point"
    k = bench.FEATURE_KERNELS
    np.testing.assert_allclose(frames[0, :k], channels[:, 0:3].mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(frames[0, k:], channels[:, 0:3].max(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(frames[2, :k], channels[:, 6], rtol=1e-5, atol=1e-6)  # the last frame: 1 point
    # The bank is frozen: the same for every call, set and run.
    np.testing.assert_array_equal(frames, bench.frame_features(series, 3, bench.convolution_bank(dims=2)))


def test_frame_arrays_pad_items_to_the_sets_frame_count():
    data = bench.parse_ts(VARIABLE)
    patch = bench.patch_size(max(s.shape[1] for s in data.series), max_steps=3)
    features, num_frames = bench.frame_arrays(data.series, patch, max_frames=3)
    assert patch == 3
    assert features.shape == (3, 3, 2 * bench.FEATURE_KERNELS)
    np.testing.assert_array_equal(num_frames, [2, 1, 3])
    assert not features[0, 2:].any() and not features[1, 1:].any(), "padding stays zero"
    bank = bench.convolution_bank(dims=1)
    np.testing.assert_array_equal(features[0, :2], bench.frame_features(data.series[0], patch, bank))


def test_overrides_training_config_does_not_know_are_dropped():
    applied, dropped = bench.split_overrides({"bucket_by_length": True, "not_a_training_setting": 1})
    assert applied == {"bucket_by_length": True}
    assert dropped == ["not_a_training_setting"]
