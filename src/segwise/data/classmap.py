"""One explicit mapping from raw mask values (or colours) to class indices, checked up front."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from segwise.data.io import pack_rgb
from segwise.errors import ConfigError, DataError

_INVALID = np.iinfo(np.int64).min
_UNMAPPED_CHOICES = ("error", "ignore", "background")
_MAX_LISTED = 20
Colour = tuple[int, int, int]


@dataclass(frozen=True)
class ClassMap:
    """How raw mask pixels become class indices in [0, num_classes) or ignore_index.

    Default: value v is class v. values: values[i] is the raw value of class i. palette: palette[i] is the RGB
    colour of class i in colour masks. The raw value ignore_index stays ignore_index; other values outside the map
    are an error, ignore_index when unmapped == "ignore", or class 0 when unmapped == "background" (iSAID's rule). binary (for 0/255 masks): 0 → 0 and every positive
    value → 1, 255 included, so binary masks have no void value (0/1/255 masks need num_classes 2, not binary).
    """

    num_classes: int
    ignore_index: int = 255
    values: tuple[int, ...] | None = None
    palette: tuple[Colour, ...] | None = None
    binary: bool = False
    unmapped: str = "error"

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, (int, np.integer)):
            raise ConfigError(f"data.num_classes must be an integer, got {self.num_classes!r}.")
        if self.num_classes < 1:
            raise ConfigError(f"data.num_classes must be at least 1, got {self.num_classes}.")
        if 0 <= self.ignore_index < self.num_classes:
            raise ConfigError(
                f"data.ignore_index {self.ignore_index} is a class index (classes 0..{self.num_classes - 1}); "
                "use a value outside the classes, e.g. 255 or -1."
            )
        if self.unmapped not in _UNMAPPED_CHOICES:
            raise ConfigError(f"data.unmapped must be one of {list(_UNMAPPED_CHOICES)}, got {self.unmapped!r}.")
        if self.binary and (self.num_classes != 2 or self.values is not None):
            raise ConfigError(
                "data.binary maps 0 → class 0 and every other value → class 1, so it needs num_classes 2 and "
                "no data.class_values; remove one of them."
            )
        if self.values is not None:
            values = tuple(int(v) for v in self.values)
            _check_count("data.class_values", len(values), self.num_classes)
            _check_unique("data.class_values", values)
            if self.ignore_index in values:
                raise ConfigError(
                    f"data.class_values contains ignore_index {self.ignore_index}; change data.ignore_index "
                    "or remove that value."
                )
            object.__setattr__(self, "values", values)
        if self.palette is not None:
            palette = tuple(parse_colour(c, f"data.palette[{i}]") for i, c in enumerate(self.palette))
            _check_count("data.palette", len(palette), self.num_classes)
            _check_unique("data.palette", palette)
            object.__setattr__(self, "palette", palette)

    @classmethod
    def from_options(
        cls,
        num_classes: int | None = None,
        class_values: Sequence[int] | None = None,
        max_mask_value: int | None = None,
        palette: Sequence[Any] | None = None,
        binary: bool = False,
        ignore_index: int = 255,
        unmapped: str = "error",
    ) -> ClassMap:
        """Build a ClassMap from user options, inferring num_classes and rejecting options that disagree."""
        if max_mask_value is not None and class_values is not None:
            raise ConfigError(
                "data.max_mask_value and data.class_values both set the class values; keep only one of them."
            )
        implied: list[tuple[str, int]] = []
        if max_mask_value is not None:
            if max_mask_value < 1:
                raise ConfigError(f"data.max_mask_value must be at least 1, got {max_mask_value}.")
            implied.append((f"data.max_mask_value {max_mask_value} (classes 0..{max_mask_value})", max_mask_value + 1))
        if class_values is not None:
            class_values = tuple(int(v) for v in class_values)
            implied.append((f"data.class_values ({len(class_values)} values)", len(class_values)))
        if palette is not None:
            implied.append((f"data.palette ({len(palette)} colours)", len(palette)))
        if binary:
            implied.append(("data.binary", 2))
        if num_classes is not None:
            implied.insert(0, ("data.num_classes", num_classes))
        if not implied:
            raise ConfigError(
                "the number of classes is unknown; set data.num_classes (or data.class_values, "
                "data.max_mask_value or data.palette)."
            )
        counts = {count for _, count in implied}
        if len(counts) > 1:
            listing = ", ".join(f"{name} → {count} classes" for name, count in implied)
            raise ConfigError(f"class options disagree: {listing}; make them agree or keep only one.")
        return cls(
            num_classes=implied[0][1],
            ignore_index=ignore_index,
            values=class_values,
            palette=tuple(palette) if palette is not None else None,
            binary=binary,
            unmapped=unmapped,
        )

    def default_names(self) -> list[str]:
        """Class names when the config gives none: named by mask value (`class_64`) when values are mapped."""
        if self.binary:
            return ["background", "foreground"]
        if self.values is not None:
            return [f"class_{value}" for value in self.values]
        return [f"class_{i}" for i in range(self.num_classes)]

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Map a raw H×W (values) or H×W×3 (RGB) mask to an int64 H×W index mask."""
        mapped = self._map(raw)
        bad = mapped == _INVALID
        if bad.any():
            if self.unmapped == "error":
                raise DataError(self.invalid_message(self._offending(raw, bad)))
            mapped[bad] = 0 if self.unmapped == "background" else self.ignore_index
        return mapped

    def invalid_values(self, raw: np.ndarray) -> list:
        """Sorted unique raw values (or RGB tuples) of a mask that are neither a class nor ignore_index."""
        mapped = self._map(raw)
        return self._offending(raw, mapped == _INVALID)

    def describe(self) -> str:
        """Name the accepted raw values in words, for messages."""
        ignore = f" (or ignore_index {self.ignore_index})"
        if self.binary:
            return "binary values (0 = class 0, positive = class 1)"
        if self.values is not None:
            return f"the data.class_values {_listing(list(self.values))}" + ignore
        return f"classes 0..{self.num_classes - 1}" + ignore

    def invalid_message(self, offending: list) -> str:
        """Explain which raw values are outside the class map and how to fix it."""
        if offending and isinstance(offending[0], tuple):
            return (
                f"colours {_listing(offending)} are not in data.palette; add them to data.palette "
                "or map them with data.unmapped: ignore"
            )
        return (
            f"values {_listing(offending)} are not {self.describe()}; set data.num_classes / data.class_values, "
            "or map them with data.unmapped: ignore"
        )

    def _map(self, raw: np.ndarray) -> np.ndarray:
        """Map every pixel to its class, ignore_index, or the _INVALID sentinel."""
        raw = np.asarray(raw)
        if raw.ndim == 3 and raw.shape[2] == 3:
            return self._map_colours(raw)
        if raw.ndim != 2:
            raise DataError(f"mask has shape {raw.shape}; expected H×W values or H×W×3 RGB colours.")
        if raw.dtype in (np.uint8, np.uint16):
            return self._lut(raw.dtype.itemsize * 8)[raw]
        if np.issubdtype(raw.dtype, np.floating):
            integral = np.isfinite(raw) & (raw == np.round(raw))
            mapped = self._map(np.where(integral, raw, 0).astype(np.int64))
            mapped[~integral] = _INVALID
            return mapped
        if not np.issubdtype(raw.dtype, np.integer):
            raise DataError(f"mask has pixel type {raw.dtype}; save masks as 8- or 16-bit integers.")
        unique, inverse = np.unique(raw, return_inverse=True)
        return self._map_values(unique.astype(np.int64))[inverse].reshape(raw.shape)

    def _map_values(self, values: np.ndarray) -> np.ndarray:
        """Class of each raw integer value (vectorised; _INVALID where it has none)."""
        if self.binary:
            return np.where(values > 0, 1, np.where(values == 0, 0, _INVALID)).astype(np.int64)
        if self.values is not None:
            order = np.argsort(self.values)
            sorted_values = np.asarray(self.values, np.int64)[order]
            position = np.clip(np.searchsorted(sorted_values, values), 0, len(sorted_values) - 1)
            mapped = np.where(sorted_values[position] == values, order[position], _INVALID).astype(np.int64)
        else:
            mapped = np.where((values >= 0) & (values < self.num_classes), values, _INVALID).astype(np.int64)
        mapped[values == self.ignore_index] = self.ignore_index
        return mapped

    def _lut(self, bits: int) -> np.ndarray:
        return self._lut8 if bits == 8 else self._lut16

    @cached_property
    def _lut8(self) -> np.ndarray:
        return self._map_values(np.arange(2**8, dtype=np.int64))

    @cached_property
    def _lut16(self) -> np.ndarray:
        return self._map_values(np.arange(2**16, dtype=np.int64))

    @cached_property
    def _palette_table(self) -> tuple[np.ndarray, np.ndarray]:
        codes = pack_rgb(np.asarray(self.palette, np.int64))
        order = np.argsort(codes)
        return codes[order], order.astype(np.int64)

    def _map_colours(self, rgb: np.ndarray) -> np.ndarray:
        if self.palette is None:
            raise DataError(
                "mask is an RGB colour image but no class colours are set; set data.palette to the colour of "
                "each class (e.g. [[0, 0, 0], [255, 0, 0]]), or save masks as single-channel class indices"
            )
        sorted_codes, classes = self._palette_table
        codes = pack_rgb(rgb)
        position = np.clip(np.searchsorted(sorted_codes, codes), 0, len(sorted_codes) - 1)
        return np.where(sorted_codes[position] == codes, classes[position], _INVALID)

    @staticmethod
    def _offending(raw: np.ndarray, bad: np.ndarray) -> list:
        if not bad.any():
            return []
        if raw.ndim == 3:
            colours = np.unique(raw[bad].astype(np.int64), axis=0)
            return [tuple(int(c) for c in colour) for colour in colours]
        return [v.item() for v in np.unique(raw[bad])]


def parse_colour(value: Any, key: str = "colour") -> Colour:
    """Parse an RGB colour given as [r, g, b] (0..255) or '#rrggbb'."""
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) == 6:
            try:
                return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
            except ValueError:
                pass
        raise ConfigError(f"{key}: cannot read colour {value!r}; write it as [r, g, b] or '#rrggbb'.")
    try:
        colour = tuple(int(c) for c in value)
    except (TypeError, ValueError):
        colour = ()
    if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
        raise ConfigError(f"{key}: colour {value!r} must be three integers 0..255, e.g. [255, 0, 0].")
    return colour  # type: ignore[return-value]


def _check_count(key: str, count: int, num_classes: int) -> None:
    if count != num_classes:
        raise ConfigError(f"{key} has {count} entries but data.num_classes is {num_classes}; make them agree.")


def _check_unique(key: str, items: Sequence[Any]) -> None:
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise ConfigError(f"{key} repeats {repeated}; each class needs its own entry.")


def _listing(items: list) -> str:
    shown = ", ".join(str(item) for item in items[:_MAX_LISTED])
    more = f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"[{shown}{more}]"
