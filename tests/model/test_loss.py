"""FocalLoss: the seed's formula."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidtempo import FocalLoss


def test_matches_the_formula_by_hand():
    torch.manual_seed(0)
    logits, targets = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    alpha = torch.tensor([0.5, 1.0, 2.0, 4.0])
    loss = FocalLoss(alpha=alpha, gamma=2.0, smoothing=0.1)(logits, targets)
    expected = 0.0
    for row, y in zip(logits, targets):
        q = torch.full((4,), 0.1 / 3)
        q[y] = 0.9
        ce = -(q * torch.log_softmax(row, -1)).sum()
        expected += alpha[y] * (1 - torch.exp(-ce)) ** 2 * ce
    torch.testing.assert_close(loss, expected / 5)


def test_reduces_to_cross_entropy():
    torch.manual_seed(1)
    logits, targets = torch.randn(8, 3), torch.randint(0, 3, (8,))
    torch.testing.assert_close(FocalLoss(gamma=0.0, smoothing=0.0)(logits, targets), F.cross_entropy(logits, targets))
