"""Opening a run: the start-up sequence every task's training goes through, written once.

run directory → checkpoint to resume from → writable check → model description → resumable check → saved config
→ seeded RNGs. Every task calls `open_run` and hands the returned `Run` to the trainer.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from segwise.config import RunConfig, save_config
from segwise.engine.callbacks import read_checkpoint
from segwise.engine.optim import optimizer_class
from segwise.errors import CheckpointError
from segwise.io_utils import ensure_writable_dir
from segwise.losses import check_loss_options, parse_loss_spec
from segwise.models import model_entry
from segwise.models.spec import ModelSpec, peek_spec

PIXEL_RESUME_KEYS = ("name", "encoder", "in_channels", "num_classes")
"""What a pixel model may not change between a run and its resumption (its weights would not fit)."""


@dataclass(frozen=True)
class Run:
    """An opened run: its directory, the model it trains and the checkpoint it resumes from (None: a new run)."""

    directory: Path
    spec: ModelSpec
    resume_from: Path | None


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


def check_resumable(run_dir: Path, spec: ModelSpec, keys: Sequence[str] = PIXEL_RESUME_KEYS) -> None:
    """A run may only resume with the model it was started with (same `keys` of its model.yaml)."""
    stored_file = run_dir / "model.yaml"
    if not stored_file.is_file():
        return
    stored = peek_spec(run_dir)
    for key in keys:
        if getattr(stored, key) != getattr(spec, key):
            raise CheckpointError(
                f"run {run_dir} was trained with {key}={getattr(stored, key)!r} but the data/config now give "
                f"{getattr(spec, key)!r}; use another run.name (--name) or restore the original data/config")


RESUME_SETTINGS = ("optimizer.name", "optimizer.backbone_lr_factor", "optimizer.layer_decay", "scheduler.name")
"""Settings a run cannot change when it resumes: the saved optimizer and scheduler state only fit the same ones."""


def _setting(config: dict[str, Any], dotted: str) -> Any:
    section, key = dotted.split(".")
    return config.get(section, {}).get(key)


def check_resume_settings(checkpoint_path: Path, config: Any) -> None:
    """Refuse, in one message naming the setting, to resume `checkpoint_path` with another optimizer, backbone LR
    factor (another number of parameter groups) or scheduler; also refuses a damaged checkpoint before any work."""
    stored = read_checkpoint(checkpoint_path, mmap=True).get("segwise", {}).get("config")
    if not isinstance(stored, dict):
        return  # a checkpoint from before segwise stored its config: nothing to compare
    current = config.to_dict()
    for dotted in RESUME_SETTINGS:
        before, now = _setting(stored, dotted), _setting(current, dotted)
        if dotted == "optimizer.backbone_lr_factor":  # only one group or two matters to the saved state
            before, now = (before not in (None, 1, 1.0)), (now not in (None, 1, 1.0))
        if before != now:
            raise CheckpointError(
                f"{checkpoint_path.parent.parent} was trained with {dotted}={_setting(stored, dotted)!r} but the "
                f"config now gives {_setting(current, dotted)!r}; a resumed run continues its saved optimizer and "
                f"scheduler state, which fits only the same settings. Restore {dotted}, or start a new run with "
                "another --name (e.g. to fine-tune from this run's model.safetensors)")


def check_names(config: Any, tasks: tuple[str, ...]) -> None:
    """Fail on a misspelt model, a model of another task, a bad loss or optimizer before any data is read; another
    system's spelling of a model name becomes segwise's (`deeplabv3+` → `deeplabv3plus`)."""
    config.model.name = model_entry(config.model.name, tasks).name
    parse_loss_spec(config.loss.name)
    check_loss_options(config.loss.model_extra or {})
    optimizer_class(config.optimizer.name)


def open_run(config: Any, spec_for: Callable[[Path], ModelSpec], *name_parts: str | None,
             resume_keys: Sequence[str] = PIXEL_RESUME_KEYS) -> Run:
    """Open (or resume) the run of `config.run`: `spec_for(run directory)` describes the model to train (it may
    store data statistics in the directory); the config is saved and every RNG seeded before training."""
    directory = run_directory(config.run, *name_parts)
    resume_from = last_checkpoint(directory, config.run)
    if resume_from is not None:
        check_resume_settings(resume_from, config)
    ensure_writable_dir(directory)
    spec = spec_for(directory)
    check_resumable(directory, spec, resume_keys)
    save_config(config, directory / "config.yaml")
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    return Run(directory, spec, resume_from)
