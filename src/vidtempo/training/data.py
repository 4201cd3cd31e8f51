"""Datasets, augmentation, batching and class-balanced sampling over the feature store.

A split that fits in memory is read once (store.read_split) and items are views into that array, so no
gzip chunk is decompressed per item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from .sampling import BalancedBatchSampler
from ..features.frame_order import prefix_steps
from ..features.store import FeatureSplit

# Augmentation of the seed system (train split only, sequences longer than MIN_AUGMENT_FRAMES).
MIN_AUGMENT_FRAMES = 8
SUBSET_PROB, SUBSET_RATIO = 0.5, (0.7, 1.0)
SHIFT_PROB, MAX_SHIFT = 0.3, 3
NOISE_PROB, NOISE_STD = 0.2, 0.01
# Class weights N / (C * n_c) are clipped to this range.
CLASS_WEIGHT_RANGE = (0.5, 10.0)


# With prefix training on, the share of drawn videos cut to a prefix of their coarse-to-fine order.
PREFIX_PROB = 0.5


def prefix_of(seq: torch.Tensor, prefix_lengths: Sequence[int] | None) -> torch.Tensor:
    """With probability PREFIX_PROB, the steps of one of ``prefix_lengths`` (drawn among those shorter than the
    video) of the coarse-to-fine order, in time order (features/frame_order.py); else ``seq`` as it is."""
    length = seq.shape[0]
    shorter = [n for n in (prefix_lengths or ()) if n < length]
    if not shorter or torch.rand(()) >= PREFIX_PROB:
        return seq
    count = shorter[int(torch.randint(len(shorter), ()))]
    return seq[torch.from_numpy(prefix_steps(length, count))]


def augment_sequence(seq: torch.Tensor) -> torch.Tensor:
    """Random temporal subset, circular shift and Gaussian noise.

    Draws from torch's default generator: in a DataLoader worker that generator is seeded from the
    loader's own generator, so an epoch's augmentation is reproducible from the run's seed.
    """
    length = seq.shape[0]
    if length <= MIN_AUGMENT_FRAMES:
        return seq
    if torch.rand(()) < SUBSET_PROB:
        lo, hi = SUBSET_RATIO
        ratio = lo + (hi - lo) * float(torch.rand(()))
        keep = max(int(length * ratio), MIN_AUGMENT_FRAMES)
        seq = seq[torch.randperm(length)[:keep].sort().values]
    if torch.rand(()) < SHIFT_PROB:
        seq = torch.roll(seq, int(torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, ())), dims=0)
    if torch.rand(()) < NOISE_PROB:
        seq = seq + NOISE_STD * torch.randn_like(seq)
    return seq


class FeatureDataset(Dataset):
    """Items ``(features [T_i, D] float32, label, length)`` with ``T_i`` the video's own frame count.

    An in-memory split gives views into its array; a streamed one (``store.H5Features``) reads each video
    from the file, through a handle and bounded chunk cache of the process (DataLoader worker) reading it.
    """

    def __init__(self, split: FeatureSplit, augment: bool = False, prefix_lengths: Sequence[int] | None = None) -> None:
        self.split = split
        self.augment = augment
        self.prefix_lengths = list(prefix_lengths) if augment and prefix_lengths else None
        self._streamed = not isinstance(split.features, np.ndarray)
        self._features = split.features if self._streamed else torch.from_numpy(split.features)
        self.labels = torch.from_numpy(split.labels)
        self.lengths = torch.from_numpy(split.num_frames)

    def __len__(self) -> int:
        return self.split.num_videos

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        length = int(self.lengths[index])
        seq = self._features[index, :length]
        if self._streamed:
            seq = torch.from_numpy(seq)
        if self.prefix_lengths:
            seq = prefix_of(seq, self.prefix_lengths)
        if self.augment:
            seq = augment_sequence(seq)
        return seq, int(self.labels[index]), int(seq.shape[0])


@dataclass
class MixedBatch:
    """A training batch whose videos were mixed with partners from the same batch."""

    features: torch.Tensor  # [B, T, D]
    lengths: torch.Tensor  # [B]
    partner_targets: torch.Tensor  # [B]: the class of each video's partner
    own_share: torch.Tensor  # [B]: the share of each video's label that stays its own class
    partner: torch.Tensor  # [B]: the position in the batch of each video's partner

    def loss(self, per_sample_loss, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss against both labels, each weighted by its share."""
        share = self.own_share.to(logits.device)
        own, partner = per_sample_loss(logits, targets), per_sample_loss(logits, self.partner_targets)
        return (share * own + (1.0 - share) * partner).mean()


def mix_batch(features: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, mixup_alpha: float,
              cutmix_alpha: float) -> MixedBatch | None:
    """Mixup or cutmix over time for a padded batch (None when both are off). With both on, each batch
    uses one of them, drawn with equal odds. Each video is paired with another of the batch (a random
    permutation); the shares come from ``Beta(alpha, alpha)``.

    - mixup: ``lam * x + (1 - lam) * partner``, frame by frame, over the longer of the two lengths; the
      label is shared ``lam`` / ``1 - lam``.
    - cutmix: a stretch of ``round((1 - lam) * length)`` consecutive frames of the video is replaced by the
      partner's frames at the same relative times (so a partner of another length is stretched to fit);
      the label is shared by the share of frames each video keeps.

    Draws from torch's default generator, which the epoch's seed sets.
    """
    use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
    if not (use_mixup or use_cutmix):
        return None
    if use_mixup and use_cutmix:
        use_mixup = bool(torch.rand(()) < 0.5)
    partner = torch.randperm(features.shape[0])  # on the CPU, as lengths are
    partner_features, partner_targets = features[partner.to(features.device)], targets[partner.to(targets.device)]
    if use_mixup:
        lam = torch.distributions.Beta(mixup_alpha, mixup_alpha).sample(())
        return MixedBatch(lam * features + (1.0 - lam) * partner_features, torch.maximum(lengths, lengths[partner]),
                          partner_targets, torch.full((features.shape[0],), float(lam)), partner)
    return _cutmix(features, lengths, partner_features, lengths[partner], partner_targets, cutmix_alpha, partner)


def _cutmix(features: torch.Tensor, lengths: torch.Tensor, partner_features: torch.Tensor,
            partner_lengths: torch.Tensor, partner_targets: torch.Tensor, alpha: float,
            partner: torch.Tensor) -> MixedBatch:
    batch, steps, dim = features.shape
    lam = torch.distributions.Beta(alpha, alpha).sample((batch,))
    span = torch.round((1.0 - lam) * lengths).long()
    start = (torch.rand(batch) * (lengths - span + 1)).floor().long()
    time = torch.arange(steps)
    inside = (time >= start[:, None]) & (time < (start + span)[:, None])  # [B, T]: frames taken from the partner
    source = (time[None, :] * partner_lengths[:, None]) // lengths.clamp_min(1)[:, None]
    source = source.clamp(max=steps - 1).to(features.device)
    taken = partner_features.gather(1, source[..., None].expand(-1, -1, dim))
    mixed = torch.where(inside.to(features.device)[..., None], taken, features)
    own_share = 1.0 - span.float() / lengths.clamp_min(1).float()
    return MixedBatch(mixed, lengths, partner_targets, own_share, partner)


def collate_features(batch: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero-pad to the longest sequence of the batch: ``(features [B, T, D], labels [B], lengths [B])``."""
    lengths = torch.tensor([item[2] for item in batch], dtype=torch.long)
    labels = torch.tensor([item[1] for item in batch], dtype=torch.long)
    dim = batch[0][0].shape[1]
    features = torch.zeros(len(batch), int(lengths.max()), dim, dtype=torch.float32)
    for i, (seq, _, length) in enumerate(batch):
        features[i, :length] = seq
    return features, labels, lengths


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Per-class weight ``N / (C * n_c)`` clipped to CLASS_WEIGHT_RANGE (absent classes get the maximum)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    with np.errstate(divide="ignore"):
        weights = len(labels) / (num_classes * counts)
    return torch.tensor(np.clip(weights, *CLASS_WEIGHT_RANGE), dtype=torch.float32)


def balanced_sampler(labels: np.ndarray, num_classes: int, generator: torch.Generator) -> WeightedRandomSampler:
    """Each sample drawn with its class weight; N draws with replacement per epoch."""
    weights = class_weights(labels, num_classes)[torch.from_numpy(labels)]
    return WeightedRandomSampler(weights.double(), num_samples=len(labels), replacement=True, generator=generator)


def make_loader(
    split: FeatureSplit,
    batch_size: int,
    num_workers: int,
    train: bool = False,
    generator: torch.Generator | None = None,
    bucket_by_length: bool = False,
    rank: int = 0,
    world_size: int = 1,
    sampler_generator: torch.Generator | None = None,
    prefix_lengths: Sequence[int] | None = None,
) -> DataLoader:
    """A train loader (augmented, class-balanced sampling) or an evaluation loader (in order).

    ``generator`` seeds the loader's workers (their augmentation); ``sampler_generator`` (default: the same)
    draws the videos, and must be seeded alike in every process of a distributed run.
    """
    dataset = FeatureDataset(split, augment=train, prefix_lengths=prefix_lengths if train else None)
    common = dict(
        num_workers=num_workers,
        collate_fn=collate_features,
        generator=generator,
        # Train workers restart each epoch so their random streams derive from that epoch's seed.
        persistent_workers=num_workers > 0 and not train,
    )
    if not train:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, **common)
    if bucket_by_length or world_size > 1:
        weights = class_weights(split.labels, split.num_classes)[torch.from_numpy(split.labels)]
        batches = BalancedBatchSampler(weights, torch.from_numpy(split.num_frames), batch_size,
                                       sampler_generator or generator, bucket_by_length, rank, world_size)
        return DataLoader(dataset, batch_sampler=batches, **common)
    sampler = balanced_sampler(split.labels, split.num_classes, generator)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, **common)
