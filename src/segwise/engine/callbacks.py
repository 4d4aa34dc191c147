"""Callbacks and plugins we need on top of Lightning: atomic checkpoints and the portable best-model export."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from segwise.models.spec import save_model
from segwise.io_utils import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each .ckpt to a temporary file and rename it, so a kill never leaves a truncated checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))


class ExportBestModel(L.Callback):
    """Keep `model.safetensors` + `model.yaml` in the run directory equal to the best (or, without val, last) model."""

    def __init__(self, run_dir: Path, monitor: str | None, mode: str) -> None:
        self.run_dir, self.monitor, self.mode = Path(run_dir), monitor, mode
        self.best: float | None = None

    def _improved(self, value: float) -> bool:
        if self.best is None or math.isnan(self.best):
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def _export(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        if trainer.is_global_zero:
            save_model(task.model, task.spec, self.run_dir)

    def on_validation_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and self._improved(float(value)):
            self.best = float(value)
            self._export(trainer, task)

    def on_train_epoch_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        if self.monitor is None:
            self._export(trainer, task)

    def on_fit_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        if self.monitor is None or not (self.run_dir / "model.safetensors").exists():
            self._export(trainer, task)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
