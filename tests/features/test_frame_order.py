"""The coarse-to-fine order of a video's steps: every prefix spreads over the whole video, and training draws
prefixes of it when asked to."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidtempo.features.frame_order import coarse_to_fine, prefix_steps
from vidtempo.features.store import read_split, split_path
from vidtempo.training.data import FeatureDataset, prefix_of


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 16, 24, 64, 73, 100])
def test_the_order_holds_every_step_once(length):
    order = coarse_to_fine(length)
    assert sorted(order.tolist()) == list(range(length))


def test_middle_then_ends_then_the_halves_middles():
    assert coarse_to_fine(65)[:9].tolist() == [32, 0, 64, 16, 48, 8, 24, 40, 56]


@pytest.mark.parametrize("length", [16, 64, 73, 100])
def test_every_prefix_covers_the_video_evenly(length):
    for count in range(3, length + 1):
        steps = prefix_steps(length, count)
        assert steps[0] == 0 and steps[-1] == length - 1, "a prefix of 3 or more reaches both ends"
        even_gap = (length - 1) / (count - 1)
        assert np.diff(steps).max() <= 2 * even_gap + 1, (count, steps)


def test_a_prefix_is_in_time_order_and_grows_by_adding_steps():
    smaller, larger = prefix_steps(64, 8), prefix_steps(64, 16)
    assert np.all(np.diff(smaller) > 0) and set(smaller) <= set(larger)
    assert prefix_steps(10, 50).tolist() == list(range(10))


def test_training_draws_prefixes_when_asked(small_features):
    split_features = torch.arange(40, dtype=torch.float32)[:, None].repeat(1, 3)
    torch.manual_seed(0)
    drawn = [prefix_of(split_features, [8, 16]) for _ in range(200)]
    lengths = {d.shape[0] for d in drawn}
    assert lengths == {8, 16, 40}
    for d in drawn:
        if d.shape[0] < 40:
            assert d[:, 0].long().tolist() == prefix_steps(40, d.shape[0]).tolist()
    assert prefix_of(split_features, None) is split_features
    assert prefix_of(split_features[:8], [8, 16]).shape[0] == 8, "no prefix as long as the video"

    split = read_split(split_path(small_features, "train", "_multiscale"))
    plain = FeatureDataset(split, augment=False, prefix_lengths=[4])
    assert plain.prefix_lengths is None, "evaluation never cuts a video"
