"""Class-balanced batches: bucketed by length and shared among processes, with the seed's draws."""

from __future__ import annotations

import torch
from torch.utils.data import WeightedRandomSampler

from vidtempo.training.sampling import BalancedBatchSampler


def _sampler(**kwargs):
    weights = torch.tensor([1.0] * 80 + [4.0] * 20)
    lengths = torch.randint(10, 70, (100,), generator=torch.Generator().manual_seed(1))
    return BalancedBatchSampler(weights, lengths, 16, torch.Generator().manual_seed(5), **kwargs), weights, lengths


def test_plain_batches_are_the_weighted_random_sampler_draws():
    sampler, weights, _ = _sampler()
    reference = WeightedRandomSampler(weights.double(), 100, replacement=True, generator=torch.Generator().manual_seed(5))
    assert [i for batch in sampler for i in batch] == list(reference)
    assert len(sampler) == 7


def test_bucketing_keeps_the_draws_and_cuts_padding():
    plain, _, lengths = _sampler()
    bucketed, _, _ = _sampler(bucket_by_length=True)
    plain_batches, bucketed_batches = list(plain), list(bucketed)
    assert sorted(i for b in plain_batches for i in b) == sorted(i for b in bucketed_batches for i in b)

    def padded_steps(batches):
        return sum(len(b) * int(lengths[b].max()) for b in batches)

    assert padded_steps(bucketed_batches) < 0.8 * padded_steps(plain_batches)


def test_processes_share_every_batch():
    shares = [list(_sampler(rank=r, world_size=2)[0]) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(_sampler(world_size=2)[0])
    whole = list(_sampler()[0])
    for batch, first, second in zip(whole, *shares):
        assert sorted(first + second) == sorted(batch)
