"""Data loaders for training and validation: resumable training order, rank-sharded validation."""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from segwise.data.folder import collate_pad
from segwise.engine.loader import EpochSampler


class SegmentationDataModule(L.LightningDataModule):
    """Wraps ready datasets; batches are padded to the model stride (masks with ignore_index)."""

    def __init__(self, train: Dataset, vals: list[Dataset], batch_size: int, val_batch_size: int,
                 num_workers: int, seed: int, ignore_index: int, stride: int) -> None:
        super().__init__()
        self.train, self.vals = train, vals
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.collate = partial(collate_pad, ignore_index=ignore_index, multiple=stride)
        self._sampler: EpochSampler | None = None
        self._resume: dict[str, int] | None = None

    def _loader_options(self) -> dict[str, Any]:
        return {"num_workers": self.num_workers, "collate_fn": self.collate,
                "persistent_workers": self.num_workers > 0, "pin_memory": torch.cuda.is_available()}

    def state_dict(self) -> dict[str, int]:
        """Where training stands in the data: saved in every checkpoint, so a killed run resumes on the next batch."""
        if self._sampler is None:
            return {}
        return {"epoch": self._sampler.epoch,
                "batches_done": int(self.trainer.fit_loop.epoch_loop.batch_progress.current.processed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Called by Lightning before any loader is built; applied when the training loader is."""
        self._resume = dict(state) or None

    def train_dataloader(self) -> DataLoader:
        self._sampler = EpochSampler(len(self.train), shuffle=True, seed=self.seed,
                                     rank=self.trainer.global_rank, world_size=self.trainer.world_size)
        if self._resume:
            self._sampler.resume_at(self._resume["epoch"], self._resume["batches_done"], self.batch_size)
            self._resume = None
        return DataLoader(self.train, sampler=self._sampler, batch_size=self.batch_size,
                          generator=torch.Generator().manual_seed(self.seed), **self._loader_options())

    def val_dataloader(self) -> list[DataLoader]:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        # Shard without padding: each image is counted once when the confusion matrices are summed.
        return [DataLoader(Subset(val, range(rank, len(val), world)), batch_size=self.val_batch_size,
                           shuffle=False, **self._loader_options()) for val in self.vals]
