"""Class-balanced batch sampling: optionally grouped by length, optionally split across processes.

Every epoch draws ``N`` videos with replacement, each with its class weight (exactly the draws of the
seed's ``WeightedRandomSampler``, which uses the same ``torch.multinomial`` call), then:

- with ``bucket_by_length``, sorts the draws by length within windows of ``BUCKET_BATCHES`` batches and
  shuffles the order of the resulting batches, so a batch holds videos of similar length and little
  padding (the class balance of the epoch is unchanged: it is the same multiset of draws);
- with ``world_size > 1`` (distributed training), every process makes the same draws from the same seed
  and takes its own share of every batch, so together they see exactly one epoch's draws.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler

# Draws sorted together when bucketing: large enough to find similar lengths, small enough to stay random.
BUCKET_BATCHES = 50


class BalancedBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        weights: torch.Tensor,
        lengths: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        bucket_by_length: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.weights = weights.double()
        self.lengths = lengths
        self.batch_size = batch_size
        self.generator = generator
        self.bucket_by_length = bucket_by_length
        self.rank, self.world_size = rank, world_size
        self.num_samples = len(weights)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size) - int(self._drops_short_batch)

    @property
    def _drops_short_batch(self) -> bool:
        # Every process must take the same number of steps: a last batch too small to give each a share
        # is left out (at most world_size - 1 draws of an epoch).
        return 0 < self.num_samples % self.batch_size < self.world_size

    def global_batches(self) -> list[torch.Tensor]:
        """This epoch's batches before they are shared out among processes."""
        draws = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=self.generator)
        if not self.bucket_by_length:
            return list(draws.split(self.batch_size))
        batches = []
        window = BUCKET_BATCHES * self.batch_size
        for chunk in draws.split(window):
            order = torch.argsort(self.lengths[chunk], stable=True)
            batches.extend(chunk[order].split(self.batch_size))
        shuffle = torch.randperm(len(batches), generator=self.generator)
        return [batches[i] for i in shuffle]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            if len(batch) < self.world_size:
                continue
            yield batch[self.rank :: self.world_size].tolist()
