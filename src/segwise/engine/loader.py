"""Training data order that is a pure function of (seed, epoch, rank), so an interrupted run resumes exactly.

Lightning saves `state_dict()` of a loader that has one and calls `load_state_dict()` before the loader's
iterator is created on restart; we use that to skip the batches the killed run had already trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index) keys (the dataset seeds augmentation with them); the order is shuffled by
    (seed, epoch), sharded by rank and can start mid-epoch."""

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
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
        start, self.skip = self.skip, 0
        return iter([(self.epoch, i) for i in mine[start:]])


class ResumableLoader(DataLoader):
    """A DataLoader over an EpochSampler whose state is (epoch, batches already trained this epoch)."""

    def __init__(self, dataset: Any, sampler: EpochSampler, batches_done: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches_done": int(self.batches_done())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["batches_done"] >= len(self):  # saved on the epoch's last batch: resume at the next epoch
            self.sampler.set_epoch(state["epoch"] + 1)
            return
        self.sampler.set_epoch(state["epoch"])
        self.sampler.skip = state["batches_done"] * (self.batch_size or 1)
