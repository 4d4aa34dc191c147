"""Seeded splits of sketch data sets that ship without one (the official SPG folder): per category, reproducible,
and independent of which other categories are read.

A scheme is ``"A/B/C"``, train/valid/test percentages that sum to 100 (80/10/10 by default), or ``"official"``:
ContextSeg's split, 700 training sketches per category and the rest (100 in SPG) for testing, with no valid split.
Each category's sketches, in file order, are shuffled by a generator seeded with (seed, CRC-32 of the category
name); train takes the first share of that order, then valid, then test. Within a split sketches keep their file
order.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

from segwise.data.sketch.formats import SPLITS, Sketch
from segwise.errors import ConfigError, DataError

__all__ = ["DEFAULT_SCHEME", "OFFICIAL", "OFFICIAL_TRAIN", "scheme_splits", "split_sketches"]

DEFAULT_SCHEME = "80/10/10"
OFFICIAL = "official"
OFFICIAL_TRAIN = 700
"""Training sketches per category in ContextSeg's own split (``data_list[:700]`` of a shuffled SPG file)."""
_PERCENTAGES = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*$")


def _percentages(scheme: str) -> tuple[float, float, float] | None:
    """The three percentages of a scheme, None for the official one; a clear error for anything else."""
    if scheme == OFFICIAL:
        return None
    match = _PERCENTAGES.match(str(scheme))
    shares = tuple(float(value) for value in match.groups()) if match else ()
    if len(shares) != 3 or abs(sum(shares) - 100) > 1e-6 or shares[0] == 0:
        raise ConfigError(f"split scheme {scheme!r} (--split-scheme, data.split_scheme): give train/valid/test "
                          f"percentages that sum to 100 with some training share, e.g. {DEFAULT_SCHEME}, or "
                          f"'{OFFICIAL}' ({OFFICIAL_TRAIN} training sketches per category, the rest for testing)")
    return shares


def scheme_splits(scheme: str) -> tuple[str, ...]:
    """The splits a scheme makes: train, valid, test (official: train, test)."""
    return ("train", "test") if _percentages(scheme) is None else SPLITS


def _bounds(count: int, category: str, scheme: str) -> list[int]:
    """Where each split ends in the shuffled order of a category of ``count`` sketches."""
    shares = _percentages(scheme)
    if shares is None:
        if count <= OFFICIAL_TRAIN:
            raise DataError(f"category {category!r} has {count} sketches, but the official split trains on "
                            f"{OFFICIAL_TRAIN} and tests on the rest; use a percentage split such as {DEFAULT_SCHEME}")
        return [OFFICIAL_TRAIN, count]
    return [int(np.floor(count * share / 100 + 0.5)) for share in np.cumsum(shares)]


def split_sketches(sketches: Sequence[Sketch], scheme: str = DEFAULT_SCHEME, seed: int = 0) -> dict[str, list[Sketch]]:
    """Split name → its sketches, each category split on its own (see the module docstring)."""
    if seed < 0:
        raise ConfigError(f"split seed {seed} (--seed, data.split_seed) must be 0 or more")
    by_category: dict[str, list[Sketch]] = {}
    for sketch in sketches:
        by_category.setdefault(sketch.category, []).append(sketch)
    names = scheme_splits(scheme)
    out: dict[str, list[Sketch]] = {name: [] for name in names}
    for category, members in by_category.items():
        order = np.random.default_rng([seed, zlib.crc32(category.encode("utf-8"))]).permutation(len(members))
        starts = [0, *_bounds(len(members), category, scheme)]
        for name, start, stop in zip(names, starts, starts[1:]):
            out[name] += [members[i] for i in np.sort(order[start:stop])]
    return out
