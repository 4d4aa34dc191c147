"""What long commands show while they work, the same everywhere: a bar with count, rate and time left on a terminal;
on a log (stderr not a terminal) a plain line every ~10 s and a final count-and-rate line. `notice` is the one way
to tell the user something that stops nothing (a skipped record): one clean line on stderr.

Only rich and the standard library are imported, so every layer may use it. In the extra processes of a
multi-device (DDP) run nothing is shown: rank 0 reports for all of them.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
LOG_SECONDS = 10.0
"""On a log, a progress line at most this often (and one at the end)."""

_display: Any = None  # the rich Progress drawn by the outermost bar; bars started inside it add a row to it


def notice(message: str) -> None:
    """Print `message` as one plain line on stderr (above a bar being drawn); silent in DDP's extra processes."""
    if not _extra_rank():
        print(message, file=sys.stderr, flush=True)


def _extra_rank() -> bool:
    """True in a process other than rank 0 of a multi-process run (torchrun and Lightning set these variables)."""
    return any(os.environ.get(name, "0") != "0" for name in ("RANK", "LOCAL_RANK"))


def duration(seconds: float) -> str:
    """`4.2 s` under a minute, else `1:02:03` (h:mm:ss)."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


QUIET_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # torch deprecating what Lightning's own code uses
    r"Checkpoint directory .* exists and is not empty",  # every resume: the run's checkpoints are meant to be there
    r"The number of training batches .* is smaller than the logging interval",  # short epochs: nothing to fix
    r"The '\w+_dataloader' does not have many workers",  # the user chose --workers
    r"It is recommended to use `self.log\('.*sync_dist=True",  # segwise's metrics come from all-reduced matrices
    r"You're resuming from a checkpoint that ended before the epoch ended",  # the data module resumes mid-epoch
)
"""Messages of Lightning and its dependencies that tell a segwise user nothing to act on."""


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning without its boilerplate for the block: no info lines (GPU/TPU available, tips, `max_steps`
    reached) and none of `QUIET_WARNINGS`; its real warnings and errors still show."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class Progress:
    """The running count of one loop: a row of the bar on a terminal, lines on a log, or nothing (`mode` "bar",
    "log" or "off"). Call `advance` after each item, or with the size of each batch of items."""

    def __init__(self, total: int | None, description: str, unit: str, mode: str) -> None:
        self.total, self.description, self.unit, self.mode = total, description, unit, mode
        self.count = 0
        self.start = self._logged = time.perf_counter()
        self._row = _bar_row(self) if mode == "bar" else None

    @property
    def rate(self) -> float:
        return self.count / max(time.perf_counter() - self.start, 1e-9)

    def advance(self, count: int = 1) -> None:
        self.count += count
        if self._row is not None:
            _display.update(self._row, advance=count)
        elif self.mode == "log" and time.perf_counter() - self._logged >= LOG_SECONDS:
            self._logged = time.perf_counter()
            print(self.line(), file=sys.stderr, flush=True)

    def line(self, final: bool = False) -> str:
        """`predicting: 40/200 images (3.9 images/s, 41.0 s left)`, or at the end `predicting: 200 images in
        51.2 s (3.9 images/s)`."""
        prefix = f"{self.description}: " if self.description else ""
        rate = f"{self.rate:.1f} {self.unit}/s"
        if final:
            return f"{prefix}{self.count} {self.unit} in {duration(time.perf_counter() - self.start)} ({rate})"
        if not self.total:
            return f"{prefix}{self.count} {self.unit} ({rate})"
        left = (self.total - self.count) / max(self.rate, 1e-9)
        return f"{prefix}{self.count}/{self.total} {self.unit} ({rate}, {duration(left)} left)"

    def close(self, finished: bool) -> None:
        """End the row (the outermost bar stays on screen, inner rows go); on a log, the final line."""
        if self.mode == "log" and finished:
            print(self.line(final=True), file=sys.stderr, flush=True)
        if self._row is not None:
            _close_row(self._row)


@contextmanager
def progress(total: int | None, description: str, unit: str = "items", enabled: bool = True) -> Iterator[Progress]:
    """A `Progress` for a loop of `total` items (None: unknown); `enabled=False` shows nothing."""
    if not enabled or _extra_rank():
        mode = "off"
    else:
        mode = "bar" if _display is not None or sys.stderr.isatty() else "log"
    counter = Progress(total, description, unit, mode)
    finished = False
    try:
        yield counter
        finished = True
    finally:
        counter.close(finished)


def track(items: Iterable[T], description: str, *, unit: str = "items", total: int | None = None,
          enabled: bool = True) -> Iterator[T]:
    """Yield `items`, showing their progress (total from `len(items)` unless given)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(total, description, unit, enabled) as counter:
        for item in items:
            yield item
            counter.advance()


def _bar_row(counter: Progress) -> Any:
    """Add the counter's row to the bar being drawn, starting the display when it is the first."""
    global _display
    if _display is None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)
        from rich.progress import Progress as RichProgress

        _display = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                _rate_column()(), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True))
        _display.start()
    return _display.add_task(counter.description, total=counter.total, unit=counter.unit)


def _close_row(row: Any) -> None:
    """Remove an inner row; stop the display when the outermost row ends (its last frame stays)."""
    global _display
    if _display is None:
        return
    if row == _display.task_ids[0]:
        _display.stop()
        _display = None
    else:
        _display.remove_task(row)


def _rate_column() -> type:
    """A rich column showing `3.9 images/s` (rich has a speed column for bytes only)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = f"{task.speed:.1f}" if task.speed else "-"
            return Text(f"{speed} {task.fields.get('unit', 'items')}/s")

    return RateColumn
