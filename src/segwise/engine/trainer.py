"""The one Lightning trainer every task runs under: callbacks, precision, DDP, atomic checkpoints and resume."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import Dataset

from segwise.config import TrainerConfig
from segwise.engine.callbacks import (AtomicCheckpointIO, EpochScoreTable, ExportBestModel, GracefulInterrupt,
                                      RunProgressBar, StopRequested)
from segwise.engine.datamodule import SegmentationDataModule
from segwise.engine.module import SegmentationTask
from segwise.engine.run import Run
from segwise.errors import Interrupted
from segwise.models import create_model, input_stride
from segwise.progress import duration, quiet_lightning


def is_global_zero() -> bool:
    """Whether this process is rank 0, the one that reports (a multi-device run starts a process per device)."""
    return rank_zero_only.rank == 0


def describe(trainer: L.Trainer, resume_from: Path | None, max_time: float | None = None) -> str:
    """What Lightning's device lines should have said, in one line: `training 4000 steps on 2 cuda devices (DDP),
    bf16-mixed precision; resuming from runs/x/checkpoints/last.ckpt`."""
    length = f"{trainer.max_steps} steps" if trainer.max_steps > 0 else f"{trainer.max_epochs} epochs"
    if max_time:
        length += f" or {duration(max_time)} of training, whichever ends first"
    kind = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()
    processes = "processes" if kind == "cpu" else "devices"
    where = f"{trainer.world_size} {kind} {processes} (DDP)" if trainer.world_size > 1 else trainer.strategy.root_device
    resume = f"; resuming from {resume_from}" if resume_from else ""
    return f"training {length} on {where}, {trainer.precision} precision{resume}"


def precision_for(t: TrainerConfig) -> str:
    if t.precision != "auto":
        return t.precision
    if torch.cuda.is_available() and t.accelerator not in ("cpu",):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


class PeriodicCheckpoint(ModelCheckpoint):
    """The kept `epochNNN.ckpt` files. A class of its own because Lightning keys a checkpoint callback's state by
    class and cadence, and every 1 epoch is also the cadence of the `last.ckpt` callback: two equal keys abort."""


def build_callbacks(t: TrainerConfig, run_dir: Path, has_val: bool) -> list[L.Callback]:
    monitor = t.monitor if has_val else None
    ckpt_dir = run_dir / "checkpoints"
    callbacks: list[L.Callback] = [
        # No version counter: a resumed run whose checkpoint cadence changed must still overwrite last.ckpt, not
        # write last-v1.ckpt beside it (the next resume would reload the stale last.ckpt).
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=0, save_last=True,
                        every_n_train_steps=t.checkpoint_every_steps, enable_version_counter=False),
        ExportBestModel(run_dir, monitor, t.monitor_mode),
        LearningRateMonitor(logging_interval="step"),
    ]
    if monitor:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor,
                                         mode=t.monitor_mode, save_top_k=1, enable_version_counter=False))
    if t.checkpoint_every_epochs:
        callbacks.append(PeriodicCheckpoint(dirpath=ckpt_dir, filename="epoch{epoch:03d}", save_top_k=-1,
                                         every_n_epochs=t.checkpoint_every_epochs, auto_insert_metric_name=False))
    if monitor and t.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode=t.monitor_mode, patience=t.early_stopping_patience))
    if t.progress_bar:
        callbacks.append(RunProgressBar())
    return callbacks


def build_trainer(t: TrainerConfig, run_dir: Path, has_val: bool,
                  callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """A Lightning Trainer configured from `trainer.*`; `callbacks` come after segwise's own."""
    multi = (isinstance(t.devices, int) and t.devices > 1) or t.num_nodes > 1
    with quiet_lightning():  # its device and tip lines come from the constructor
        return L.Trainer(
            default_root_dir=run_dir,
            logger=TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""),
            callbacks=[*build_callbacks(t, run_dir, has_val), *callbacks],
            plugins=[AtomicCheckpointIO()],
            max_epochs=t.max_epochs if t.max_steps is None else -1,
            max_steps=t.max_steps or -1,
            max_time=timedelta(seconds=t.max_time) if t.max_time else None,
            check_val_every_n_epoch=None if t.val_every_steps else t.val_every_epochs,
            val_check_interval=t.val_every_steps,
            limit_val_batches=None if has_val else 0,
            gradient_clip_val=t.grad_clip,
            gradient_clip_algorithm=t.grad_clip_algorithm,
            accumulate_grad_batches=t.accumulate,
            precision=precision_for(t),
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy="ddp" if multi else "auto",
            sync_batchnorm=t.sync_batchnorm and multi,
            deterministic=t.deterministic,
            log_every_n_steps=t.log_every_steps,
            enable_progress_bar=t.progress_bar,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            enable_model_summary=False,
        )


def fit(trainer_config: TrainerConfig, run: Run, task: L.LightningModule, datamodule: L.LightningDataModule,
        has_val: bool, callbacks: Sequence[L.Callback] = ()) -> Path:
    """Train `task` in the opened `run` (resuming when it has a checkpoint) and leave `last.ckpt` at the final step;
    returns the run directory. Ctrl-C stops at the end of the current batch with `last.ckpt` saved there and
    raises `Interrupted`."""
    last = run.directory / "checkpoints" / "last.ckpt"
    interrupt = GracefulInterrupt(last)
    trainer = build_trainer(trainer_config, run.directory, has_val=has_val, callbacks=[*callbacks, interrupt])
    if trainer.is_global_zero:
        print(describe(trainer, run.resume_from, trainer_config.max_time))
    with quiet_lightning():
        try:
            trainer.fit(task, datamodule=datamodule, ckpt_path=run.resume_from)
        except StopRequested:
            raise Interrupted(f"stopped by Ctrl-C after step {interrupt.stopped_at}; {last} holds that step: run "
                              "the same command to resume from it") from None
        if not trainer.interrupted:
            trainer.save_checkpoint(last, weights_only=False)
    return run.directory


def fit_segmentation(config: Any, run: Run, train_set: Dataset, val_sets: dict[str, Dataset],
                     callbacks: Sequence[L.Callback] = ()) -> Path:
    """Build the run's pixel model and train it as a `SegmentationTask` (semantic and trimap training alike)."""
    spec = run.spec
    model = create_model(spec.name, in_channels=spec.in_channels, classes=spec.num_classes,
                         encoder=spec.encoder, encoder_weights=config.model.encoder_weights, **spec.args)
    if config.trainer.compile:
        model.compile()
    data = config.data
    datamodule = SegmentationDataModule(train_set, list(val_sets.values()), data.batch_size,
                                        data.val_batch_size or data.batch_size, data.num_workers, config.trainer.seed,
                                        data.ignore_index, input_stride(model))
    task = SegmentationTask(model, spec, config, {name: len(samples) for name, samples in val_sets.items()})
    if val_sets:
        callbacks = [EpochScoreTable(run.directory, config.trainer.monitor, config.run.csv_style), *callbacks]
    return fit(config.trainer, run, task, datamodule, has_val=bool(val_sets), callbacks=callbacks)
