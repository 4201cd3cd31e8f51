"""Batching, class-balanced sampling and augmentation."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from vidtempo import EnhancedTemporalModelTrainer, collate_features
from vidtempo.training.data import augment_sequence, class_weights


def test_collate_zero_pads_after_each_length():
    batch = [(torch.ones(3, 2), 1, 3), (2 * torch.ones(5, 2), 0, 5)]
    features, labels, lengths = collate_features(batch)
    assert features.shape == (2, 5, 2)
    assert labels.tolist() == [1, 0] and lengths.tolist() == [3, 5]
    assert torch.all(features[0, 3:] == 0) and torch.all(features[0, :3] == 1)


def test_class_weights_are_clipped():
    labels = np.array([0] * 90 + [1] * 9 + [2])
    weights = class_weights(labels, 4)
    # N / (C * n_c): 100/360, 100/36, 100/4, 100/0 -> clipped to [0.5, 10]
    np.testing.assert_allclose(weights.numpy(), [0.5, 100 / 36, 10.0, 10.0], rtol=1e-6)


def test_seed_create_dataloaders(small_features):
    trainer = EnhancedTemporalModelTrainer(small_features, small_features / "unused", device="cpu")
    train_loader, val_loader, test_loader = trainer.create_dataloaders(
        batch_size=48, num_workers=4, feature_file_suffix="_multiscale"
    )
    assert isinstance(train_loader.sampler, WeightedRandomSampler)
    assert train_loader.sampler.num_samples == 96 and train_loader.sampler.replacement
    assert len(val_loader.dataset) == 32 and len(test_loader.dataset) == 32
    features, labels, lengths = next(iter(val_loader))
    assert features.shape[0] == 32 and features.shape[1] == int(lengths.max())
    for row, length in zip(features, lengths):
        assert torch.all(row[length:] == 0)
        assert torch.any(row[:length] != 0)
    split = trainer.splits["val"]
    np.testing.assert_array_equal(features[0, : lengths[0]].numpy(), split.features[0, : lengths[0]])
    train_batch = next(iter(train_loader))
    assert len(train_batch) == 3 and train_batch[0].shape[0] == 48


def test_sampler_balances_classes(tmp_path):
    from vidtempo.training.data import balanced_sampler

    labels = np.array([0] * 80 + [1] * 20)
    sampler = balanced_sampler(labels, 2, torch.Generator().manual_seed(0))
    drawn = labels[np.array(list(iter(sampler)))]
    assert 0.4 < drawn.mean() < 0.6, "the rare class is drawn about as often as the common one"


def test_augmentation_keeps_frames_and_order():
    torch.manual_seed(0)
    seq = torch.arange(20, dtype=torch.float32).unsqueeze(1).repeat(1, 3)
    lengths = set()
    for _ in range(200):
        out = augment_sequence(seq)
        assert 8 <= out.shape[0] <= 20 and out.shape[1] == 3
        lengths.add(out.shape[0])
    assert len(lengths) > 3, "temporal subsets of varying length occur"
    short = torch.randn(8, 3)
    assert torch.equal(augment_sequence(short), short), "sequences of 8 frames or fewer are left alone"
