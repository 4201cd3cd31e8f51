"""TTA views: the one definition shared by training and inference."""

from __future__ import annotations

import torch

from vidtempo.tta import TTA_VIEWS, VIEW_INDICES, average_views, make_views


def test_views_follow_the_spec():
    assert TTA_VIEWS == ("original", "reverse", "speed_up", "speed_down")
    assert VIEW_INDICES["reverse"](4).tolist() == [3, 2, 1, 0]
    assert VIEW_INDICES["speed_up"](10) is None and VIEW_INDICES["speed_up"](12).tolist() == [0, 2, 4, 6, 8, 11]
    assert VIEW_INDICES["speed_down"](5) is None
    down = VIEW_INDICES["speed_down"](6)
    assert down.shape[0] == 9 and int(down.max()) == 5 and int(down.min()) == 0


def test_make_views_stacks_every_view_of_every_video():
    features = torch.arange(2 * 12 * 1, dtype=torch.float32).reshape(2, 12, 1)
    lengths = torch.tensor([12, 4])
    rows, row_lengths, applies = make_views(features, lengths)
    assert rows.shape[0] == 8 and applies.tolist() == [[True, True], [True, True], [True, False], [True, False]]
    assert rows[3, :4, 0].tolist() == [15.0, 14.0, 13.0, 12.0], "video 1 reversed within its 4 frames"
    assert row_lengths.tolist() == [12, 4, 12, 4, 6, 4, 18, 4]
    probs = torch.tensor([[1.0, 0.0]] * 8)
    probs[6] = torch.tensor([0.0, 1.0])
    averaged = average_views(probs, applies)
    torch.testing.assert_close(averaged, torch.tensor([[0.75, 0.25], [1.0, 0.0]]))
