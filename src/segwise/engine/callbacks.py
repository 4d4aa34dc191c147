"""Callbacks and plugins we need on top of Lightning: atomic checkpoints, the portable best-model export and a
progress bar that shows the run's real length."""

from __future__ import annotations

import math
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import RichProgressBar

from segwise.errors import CheckpointError
from segwise.io_utils import atomic_write
from segwise.metrics.tables import PER_EPOCH_FILES, table_path, write_table
from segwise.models.spec import save_model


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically (a kill never leaves a truncated one) and read without executing pickled code
    (`weights_only=True`, whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says: it only overrides an unset argument)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        try:
            atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))
        except RuntimeError as exc:  # torch's C++ writer reports a full disk as "file write failed"
            free = shutil.disk_usage(Path(path).parent).free
            raise CheckpointError(f"cannot write checkpoint {path}: the disk is full ({free // 2**20} MiB free; "
                                  f"{str(exc).splitlines()[0][:120]}); free some space and run the same command to "
                                  "resume from the previous checkpoint, which was kept") from None

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> Any:
        return read_checkpoint(Path(path), map_location or "cpu")


def read_checkpoint(path: Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A Lightning checkpoint as a dict, read with `weights_only=True`; a damaged or foreign file is one clear
    error naming it."""
    try:
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if not mmap or "mmap" not in str(exc):
                raise
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)  # a pre-zip file
    except Exception as exc:  # truncated, empty, garbage or a pickle holding code: all refused the same way
        raise CheckpointError(f"{path} is damaged or not a checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else 'no detail'}); move it away to "
                              "restart the run from its previous checkpoint or from scratch") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict); move it away to restart the run")
    return checkpoint


class StopRequested(Exception):
    """Raised by `GracefulInterrupt` once the checkpoint of the finished batch is written."""


class GracefulInterrupt(L.Callback):
    """Ctrl-C during training finishes the current batch, saves `last.ckpt` there and stops; a second Ctrl-C stops
    at once. (Python raises KeyboardInterrupt between any two bytecodes, e.g. halfway through an optimizer step,
    so the first one is only noted and acted on at the batch boundary.)"""

    def __init__(self, last: Path) -> None:
        self.last = last
        self.requested = False
        self.stopped_at: int | None = None
        self._previous: Any = None

    def _note(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)

    def on_train_start(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._note)

    def on_train_batch_end(self, trainer: L.Trainer, task: L.LightningModule, *args: Any) -> None:
        if self.requested:
            # Saved here, mid-epoch, like ModelCheckpoint's step checkpoints, and left by raising: a stop through
            # `trainer.should_stop` would end the epoch, and its epoch-end checkpoint would mark it as finished.
            trainer.save_checkpoint(self.last)
            self.stopped_at = trainer.global_step
            raise StopRequested

    def on_train_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, task: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


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


class EpochScoreTable(L.Callback):
    """`RUN/val_per_epoch.csv` (or the smp trainer's `_iou_per_epoch_val.csv`): after every validation, the epoch,
    the step and each validation set's mIoU, the monitored score first. The rows live in the checkpoint, so a
    resumed run rewrites the file as it stood at the step it resumes from, never with rows of steps it redoes."""

    def __init__(self, run_dir: Path, monitor: str, style: str = "plain") -> None:
        self.path = table_path(run_dir, PER_EPOCH_FILES, style)
        self.monitor, self.style = monitor, style
        self.rows: list[list[Any]] = []

    def _columns(self, task: L.LightningModule) -> list[str]:
        scores = [f"{prefix}/miou" for prefix in getattr(task, "val_prefixes", [])]
        if len(scores) > int(getattr(task, "has_main_val", False)):
            scores.append("val_extra/miou")
        return [self.monitor, *[key for key in scores if key != self.monitor]]

    def on_validation_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        columns = self._columns(task)
        values = [trainer.callback_metrics.get(key) for key in columns]
        self.rows.append([trainer.current_epoch, trainer.global_step,
                          *[None if value is None else float(value) for value in values]])
        if not trainer.is_global_zero:
            return
        if self.style == "smp":  # "epoch; iou": the score the run selects on
            write_table(self.path, None, [row[:1] + row[2:3] for row in self.rows], "smp")
        else:
            write_table(self.path, ["epoch", "step", *columns], self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [list(row) for row in state.get("rows", [])]


class RunProgressBar(RichProgressBar):
    """Lightning's rich bar labelled with the run's real length: `epoch 3/20`, or for a run measured in steps one
    bar over the whole run, `step 5/4000` (Lightning's own reads `Epoch 0/-2` there and restarts every epoch)."""

    @property
    def by_steps(self) -> bool:
        return self.trainer.max_steps > 0  # -1 unless the run is measured in steps (see build_trainer)

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps if self.by_steps else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if self.by_steps:
            return f"step {self.trainer.global_step}/{self.trainer.max_steps}"
        return f"epoch {current_epoch + 1}/{self.trainer.max_epochs}"

    def on_train_epoch_start(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, task)
        self._show_steps(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, task: L.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, task, *args)
        self._show_steps(trainer)

    def _show_steps(self, trainer: L.Trainer) -> None:
        """In a step-based run the bar counts optimizer steps since the run began (a resumed run starts part-way)."""
        if self.by_steps and self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, completed=trainer.global_step,
                                 description=self._get_train_description(trainer.current_epoch))
            self.refresh()
