"""The one Lightning trainer every task runs under: callbacks, precision, DDP, atomic checkpoints and resume."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from segwise.config import RunConfig, TrainerConfig
from segwise.engine.callbacks import AtomicCheckpointIO, ExportBestModel
from segwise.engine.checkpoint import ModelSpec
from segwise.errors import CheckpointError


def run_directory(run: RunConfig, *default_name_parts: str | None) -> Path:
    """`<log_dir>/<name>`; without a name, the given parts and a time stamp."""
    parts = [*default_name_parts, f"{datetime.datetime.now():%Y%m%d-%H%M%S}"]
    name = run.name or "_".join(p for p in parts if p)
    return Path(run.log_dir) / name


def last_checkpoint(run_dir: Path, run: RunConfig) -> Path | None:
    """The checkpoint to resume from, or None for a new run; refuses to overwrite a run when resume is off."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file() and not run.resume:
        raise CheckpointError(f"run {run_dir} already exists and run.resume is off (--no-resume); "
                              "choose another --name, or drop --no-resume to continue it")
    return last if last.is_file() else None


def check_resumable(run_dir: Path, spec: ModelSpec,
                    keys: Sequence[str] = ("name", "encoder", "in_channels", "num_classes")) -> None:
    """A run may only resume with the model it was started with (same `keys` of its model.yaml)."""
    stored_file = run_dir / "model.yaml"
    if not stored_file.is_file():
        return
    stored = ModelSpec.from_dict(yaml.safe_load(stored_file.read_text()), str(stored_file))
    for key in keys:
        if getattr(stored, key) != getattr(spec, key):
            raise CheckpointError(
                f"run {run_dir} was trained with {key}={getattr(stored, key)!r} but the data/config now give "
                f"{getattr(spec, key)!r}; use another run.name (--name) or restore the original data/config")


def precision_for(t: TrainerConfig) -> str:
    if t.precision != "auto":
        return t.precision
    if torch.cuda.is_available() and t.accelerator not in ("cpu",):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_callbacks(t: TrainerConfig, run_dir: Path, has_val: bool) -> list[L.Callback]:
    monitor = t.monitor if has_val else None
    ckpt_dir = run_dir / "checkpoints"
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=0, save_last=True,
                        every_n_train_steps=t.checkpoint_every_steps),
        ExportBestModel(run_dir, monitor, t.monitor_mode),
        LearningRateMonitor(logging_interval="step"),
    ]
    if monitor:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor,
                                         mode=t.monitor_mode, save_top_k=1, enable_version_counter=False))
    if t.checkpoint_every_epochs:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="epoch{epoch:03d}", save_top_k=-1,
                                         every_n_epochs=t.checkpoint_every_epochs, auto_insert_metric_name=False))
    if monitor and t.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode=t.monitor_mode, patience=t.early_stopping_patience))
    if t.progress_bar:
        callbacks.append(RichProgressBar())
    return callbacks


def build_trainer(t: TrainerConfig, run_dir: Path, has_val: bool,
                  callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """A Lightning Trainer configured from `trainer.*`; `callbacks` come after segwise's own."""
    multi = (isinstance(t.devices, int) and t.devices > 1) or t.num_nodes > 1
    return L.Trainer(
        default_root_dir=run_dir,
        logger=TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""),
        callbacks=[*build_callbacks(t, run_dir, has_val), *callbacks],
        plugins=[AtomicCheckpointIO()],
        max_epochs=t.max_epochs if t.max_steps is None else -1,
        max_steps=t.max_steps or -1,
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


def fit(trainer: L.Trainer, task: L.LightningModule, datamodule: L.LightningDataModule, run_dir: Path,
        resume_from: Path | None) -> None:
    """Train (resuming from `resume_from` when given) and leave `last.ckpt` at the final step."""
    trainer.fit(task, datamodule=datamodule, ckpt_path=resume_from)
    if not trainer.interrupted:
        trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
