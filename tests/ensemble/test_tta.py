"""TTA views against the spec (section 6): which frames each view reads, and how views are averaged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidtempo import Ensemble, SuperEnhancedTemporalModel
from vidtempo.ensemble.tta import TTA_VIEWS, average_views, make_views


def _spec_speed_up(length: int) -> np.ndarray | None:
    return np.linspace(0, length - 1, length // 2).astype(np.int64) if length > 10 else None


def _spec_speed_down(length: int) -> np.ndarray | None:
    if length <= 5:
        return None
    return np.clip(np.linspace(0, length - 1, int(1.5 * length)).astype(np.int64), 0, length - 1)


# The frames of a video of T valid steps that each view reads, in order, written from the spec; None where the
# view does not apply to a video that short.
SPEC_VIEW_FRAMES = {
    "original": lambda length: np.arange(length),
    "reverse": lambda length: np.arange(length)[::-1].copy(),
    "speed_up": _spec_speed_up,
    "speed_down": _spec_speed_down,
}
# Lengths around both thresholds (speed_down from T > 5, speed_up from T > 10) and a longer one.
LENGTHS = [1, 2, 5, 6, 7, 10, 11, 12, 13, 24]
FEATURE_DIM = 3
PADDING_GARBAGE = -999.0


def _numbered_batch(lengths: list[int]) -> torch.Tensor:
    """``[B, T, D]`` whose valid step ``t`` of video ``b`` holds ``1000*b + t`` (so a row names its frames);
    padding holds garbage that no view may read."""
    batch = torch.full((len(lengths), max(lengths), FEATURE_DIM), PADDING_GARBAGE)
    for b, length in enumerate(lengths):
        batch[b, :length] = (1000 * b + torch.arange(length, dtype=torch.float32))[:, None]
    return batch


def test_the_views_are_the_specs_and_original_comes_first():
    assert set(TTA_VIEWS) == set(SPEC_VIEW_FRAMES) and len(TTA_VIEWS) == len(SPEC_VIEW_FRAMES)
    assert TTA_VIEWS[0] == "original", "the original view's rows are the first block"


@pytest.mark.parametrize("view", sorted(SPEC_VIEW_FRAMES))
def test_each_view_reads_the_specs_frames_of_each_video_and_pads_with_zeros(view):
    features = _numbered_batch(LENGTHS)
    rows, row_lengths, applies = make_views(features, torch.tensor(LENGTHS), (view,))
    assert rows.shape[0] == len(LENGTHS)
    for b, length in enumerate(LENGTHS):
        expected = SPEC_VIEW_FRAMES[view](length)
        assert bool(applies[0, b]) == (expected is not None), f"{view} applies to T={length}"
        if expected is None:
            continue  # its row is excluded from the average (tested below)
        frames = rows[b, : row_lengths[b], 0] - 1000 * b
        assert frames.long().tolist() == expected.tolist(), f"{view} of a video of {length} frames"
        assert torch.all(rows[b, :, 1:] == rows[b, :, :1]), "every feature of a step comes from the same frame"
        assert torch.all(rows[b, row_lengths[b]:] == 0), f"{view} of T={length}: padding is zero"


def test_views_of_one_batch_are_stacked_view_by_view():
    lengths = [12, 4]
    rows, row_lengths, applies = make_views(_numbered_batch(lengths), torch.tensor(lengths))
    assert rows.shape[0] == len(TTA_VIEWS) * len(lengths)
    for v, view in enumerate(TTA_VIEWS):
        for b, length in enumerate(lengths):
            expected = SPEC_VIEW_FRAMES[view](length)
            if expected is not None:
                row = v * len(lengths) + b
                assert (rows[row, : row_lengths[row], 0] - 1000 * b).long().tolist() == expected.tolist()


def test_the_average_leaves_out_views_that_do_not_apply():
    lengths = torch.tensor([12, 8, 4])  # 4, 3 and 2 views apply
    _, _, applies = make_views(_numbered_batch(lengths.tolist()), lengths)
    assert applies.sum(0).tolist() == [4, 3, 2]
    # Each row's probability of class 0 is its view number; rows that do not apply get a poison value.
    view_probs = torch.zeros(applies.shape[0], applies.shape[1], 2)
    view_probs[..., 0] = torch.arange(applies.shape[0], dtype=torch.float32)[:, None] / 10
    view_probs[..., 0][~applies] = 0.99
    view_probs[..., 1] = 1 - view_probs[..., 0]
    averaged = average_views(view_probs.reshape(-1, 2), applies)
    expected = torch.tensor([(0 + 1 + 2 + 3) / 4, (0 + 1 + 3) / 3, (0 + 1) / 2]) / 10
    torch.testing.assert_close(averaged[:, 0], expected)
    torch.testing.assert_close(averaged.sum(-1), torch.ones(3))


def test_ensemble_tta_is_the_mean_over_the_applicable_views_of_each_video():
    """End to end: predict_proba(tta=True) equals averaging plain predictions of views cut by hand."""
    torch.manual_seed(0)
    model = SuperEnhancedTemporalModel(feature_dim=FEATURE_DIM, hidden_dim=8, num_classes=3, num_lstm_layers=1,
                                       num_attention_heads=2)
    ensemble = Ensemble([model], {"a": 0, "b": 1, "c": 2})
    lengths = [4, 8, 13]
    features = torch.randn(len(lengths), max(lengths), FEATURE_DIM)
    for b, length in enumerate(lengths):
        features[b, length:] = PADDING_GARBAGE
    with_tta = ensemble.predict_proba(features, torch.tensor(lengths), tta=True)
    for b, length in enumerate(lengths):
        views = [frames for frames in (f(length) for f in SPEC_VIEW_FRAMES.values()) if frames is not None]
        by_hand = torch.stack([ensemble.predict_proba(features[b, torch.from_numpy(frames)])[0] for frames in views])
        torch.testing.assert_close(with_tta[b], by_hand.mean(0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_with_separate_views_a_views_numbers_do_not_depend_on_the_other_views(amp_dtype):
    """Scoring a split runs each view in passes of its own: the original view's numbers are the plain pass's,
    to the bit, and so are any view's within any view set, so plain and TTA scores come from one call."""
    from vidtempo.ensemble.ensemble import model_outputs

    torch.manual_seed(0)
    # Wide and long enough that the kernels' sums are blocked: padding to another length changes the roundings.
    model = SuperEnhancedTemporalModel(feature_dim=32, hidden_dim=64, num_classes=3, num_lstm_layers=2,
                                       num_attention_heads=2).eval()
    lengths = torch.tensor([4, 58, 13, 8, 41, 11, 6, 27, 33, 9])
    features = torch.randn(len(lengths), int(lengths.max()), 32)
    for b, length in enumerate(lengths):
        features[b, length:] = 0.0
    every = model_outputs(model, features, lengths, views=TTA_VIEWS, amp_dtype=amp_dtype, max_rows=4,
                          separate_views=True)
    plain = model_outputs(model, features, lengths, amp_dtype=amp_dtype, max_rows=4)
    assert torch.equal(every.view_probs[0], plain.probs)
    assert torch.equal(every.pooled, plain.pooled) and torch.equal(every.attention, plain.attention)
    some = model_outputs(model, features, lengths, views=("original", "speed_down"), amp_dtype=amp_dtype, max_rows=4,
                         separate_views=True)
    assert torch.equal(some.view_probs, every.view_probs[[0, 3]])
    assert torch.equal(some.probs, average_views(every.view_probs[[0, 3]].flatten(0, 1), every.applies[[0, 3]]))
