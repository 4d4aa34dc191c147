"""Training data order that is a pure function of (seed, epoch, rank), so an interrupted run resumes exactly.

The position in the epoch (epoch, batches trained) is saved and restored by the data module
(`SegmentationDataModule.state_dict`), not by the loader: Lightning builds the training loader once before it
restores a checkpoint (to count the steps of the LR schedule) and never hands a loader's own state back after
that, while a data module's state is restored before any loader is built.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index) keys (the dataset seeds augmentation with them); the order is shuffled by
    (seed, epoch), sharded by rank and can start mid-epoch."""

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch`; a mid-epoch skip (set by `resume_at`) lasts only for its own epoch."""
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.size // self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        per_rank = len(self)
        order += order[: per_rank * self.world_size - self.size]  # pad so every rank gets as many samples
        mine = order[self.rank :: self.world_size]
        # `skip` lasts for the whole epoch, not one iter(): Lightning creates the iterator of a restored loader
        # twice (once in setup_data, again when the epoch loop starts), and both must start after the trained
        # batches. It is cleared when the next epoch is set.
        return iter([(self.epoch, i) for i in mine[self.skip:]])

    def resume_at(self, epoch: int, batches_done: int, batch_size: int) -> None:
        """Continue after `batches_done` batches of `epoch` (the next epoch when that one was complete)."""
        if batches_done * batch_size >= len(self):
            self.set_epoch(epoch + 1)
            return
        self.set_epoch(epoch)
        self.skip = batches_done * batch_size
