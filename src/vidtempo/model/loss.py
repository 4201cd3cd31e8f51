"""Focal loss with label smoothing and per-class weights, as in the seed system."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    """``mean(alpha[y] * (1 - pt)^gamma * ce)`` with ``ce`` the cross-entropy against smoothed targets
    (``1 - s`` on the true class, ``s / (C - 1)`` elsewhere) and ``pt = exp(-ce)``."""

    def __init__(self, alpha: torch.Tensor | None = None, gamma: float = 2.0, smoothing: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))
        self.gamma = gamma
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.per_sample(logits, targets).mean()

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``[B]``: each video's loss (``forward`` is their mean)."""
        logits = logits.float()
        num_classes = logits.shape[-1]
        off_value = self.smoothing / (num_classes - 1) if num_classes > 1 else 0.0
        smoothed = torch.full_like(logits, off_value)
        smoothed.scatter_(1, targets.unsqueeze(1), 1.0 - self.smoothing)
        ce = -(smoothed * F.log_softmax(logits, dim=-1)).sum(dim=-1)
        pt = torch.exp(-ce)
        loss = (1.0 - pt) ** self.gamma * ce
        if self.alpha is not None:
            loss = self.alpha.to(logits.device)[targets] * loss
        return loss
