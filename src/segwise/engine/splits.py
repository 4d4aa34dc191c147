"""Which samples train and which validate, for every pixel task: the validation folders a config names, or a share
of the training split held out by file name. Each task finds its own kind of samples; the choice is made here once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol, TypeVar

from segwise.config import DataConfig
from segwise.errors import DataError


class Named(Protocol):
    name: str


S = TypeVar("S", bound=Named)


def validation_sets(data: DataConfig, train: list[S], find: Callable[[str], list[S]]
                    ) -> tuple[list[S], dict[str, list[S]]]:
    """(training samples, {split name: validation samples}). `data.val_split` is read with `find` unless
    `data.val_fraction` holds a share of `train` out in its place or `data.extra_val_only` skips it; the
    `data.extra_val_splits` follow, in order."""
    replaced = data.extra_val_only or data.val_fraction is not None
    names = ([data.val_split] if data.val_split and not replaced else []) + list(data.extra_val_splits)
    vals = {name: find(name) for name in names}
    if data.val_fraction is not None and not data.extra_val_only:
        train, held_out = hold_out(train, data.val_fraction)
        vals = {data.val_split or "val": held_out, **vals}
    return train, vals


def hold_out(samples: list[S], fraction: float) -> tuple[list[S], list[S]]:
    """(training, validation) with about `fraction` of the samples held out for validation, chosen by a hash of the
    file name: the same files on every machine and run, and adding files never moves the others (pytorch-
    segmentation's `val_split`). Both sides keep at least one sample."""
    if len(samples) < 2:
        raise DataError(f"data.val_fraction needs at least 2 training samples to hold some out, found {len(samples)}; "
                        "add data or give a validation folder (data.val_split)")

    def rank(sample: S) -> int:
        return int(hashlib.sha1(sample.name.encode("utf-8")).hexdigest()[:12], 16)

    limit = fraction * 16 ** 12
    held = [s for s in samples if rank(s) < limit] or [min(samples, key=rank)]
    if len(held) == len(samples):
        held.remove(max(held, key=rank))
    held_names = {s.name for s in held}
    return [s for s in samples if s.name not in held_names], held
