"""A resumable, seeded sampler: the batch order is a function of (seed, epoch) only.

Resuming mid-epoch skips the batches already consumed without loading them, so a resumed run
sees exactly the data an uninterrupted one would. Under DDP each rank takes every world_size-th
index of the same permutation.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, length: int, seed: int, rank: int = 0, world_size: int = 1):
        self.length, self.seed, self.rank, self.world_size = length, seed, rank, world_size
        self.epoch = 0
        self.skip = 0  # indices of this rank to skip at the start of the epoch

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.length, generator=gen).tolist()
        usable = self.length - self.length % self.world_size
        return order[self.rank:usable:self.world_size]

    def __iter__(self):
        return iter(self._indices()[self.skip:])

    def __len__(self) -> int:
        return max(0, self.length // self.world_size - self.skip)
