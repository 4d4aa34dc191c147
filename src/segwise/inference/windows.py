"""Sliding-window building blocks: the window planner, blending weight maps, the batched window forward and the
row-band accumulator that keeps memory bounded by window height × image width × classes, not by the image.

Placement follows MONAI's `sliding_window_inference` (and the official FactSeg evaluation): windows start at 0, stride,
2·stride, … and the last one is moved back so that it ends on the image border. A window larger than the image
shrinks to the image (the forward pads it to the model's stride, as `WholeImage` does), so one window over the
whole image is exactly whole-image inference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from segwise.data.tile import axis_starts
from segwise.errors import ConfigError
from segwise.inference.whole import InferenceMode, logits_to_probs, pad_to_multiple

BLENDS = ("constant", "gaussian")
AVERAGES = ("probs", "logits")
MIN_WEIGHT = 1e-3  # Gaussian weights are floored here (as in MONAI) so border pixels never get a zero weight
LOG_FLOOR = 1e-38  # probabilities are floored here before the log when logits are averaged
BAND_VALUES = 2**24  # finished rows are handed on in bands of at most this many values (64 MiB of float32)


def pair(value: int | tuple[int, int] | list[int], option: str) -> tuple[int, int]:
    """An int or a (height, width) pair → (height, width) of positive ints; `option` names the setting in errors."""
    values = [value, value] if isinstance(value, int) else list(value)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(isinstance(v, int) for v in values):
        raise ConfigError(f"{option} must be an integer or a pair H, W of integers, got {value!r}")
    if min(values) <= 0:
        raise ConfigError(f"{option} must be positive, got {value!r}")
    return values[0], values[1]


def resolve_stride(window: tuple[int, int], stride: int | tuple[int, int] | None = None,
                   overlap: float | tuple[float, float] | None = None) -> tuple[int, int]:
    """Stride per axis: explicit, or from an overlap fraction as MONAI computes it, int(window·(1 − overlap))."""
    if stride is not None and overlap is not None:
        raise ConfigError("give either a stride or an overlap, not both")
    if stride is not None:
        result = pair(stride, "stride")
    else:
        overlap = 0.25 if overlap is None else overlap
        overlaps = [overlap] * 2 if isinstance(overlap, (int, float)) else list(overlap)
        if len(overlaps) != 2 or not all(0 <= o < 1 for o in overlaps):
            raise ConfigError(f"overlap must be a fraction in [0, 1) (e.g. 0.25), got {overlap!r}")
        result = tuple(max(int(w * (1 - o)), 1) for w, o in zip(window, overlaps))
    if any(s > w for s, w in zip(result, window)):
        raise ConfigError(f"stride {result} is larger than the window {window}: pixels between windows would get no "
                          "prediction; use a stride ≤ the window")
    return result


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows of one image go, planned once: the row starts `ys`, column starts `xs` and window size."""

    height: int
    width: int
    window: tuple[int, int]  # (h, w) actually used: the requested window, shrunk to the image where it is larger
    stride: tuple[int, int]
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """(y, x) of every window in raster order (the order the accumulator relies on)."""
        return ((y, x) for y in self.ys for x in self.xs)

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)


def plan_windows(height: int, width: int, window: int | tuple[int, int],
                 stride: int | tuple[int, int] | None = None,
                 overlap: float | tuple[float, float] | None = None) -> WindowPlan:
    """Plan the windows over a height × width image (default overlap 0.25 when neither stride nor overlap is given)."""
    window = pair(window, "window")
    steps = resolve_stride(window, stride, overlap)
    used = (min(window[0], height), min(window[1], width))
    return WindowPlan(height, width, used, steps, tuple(axis_starts(height, used[0], steps[0])),
                      tuple(axis_starts(width, used[1], steps[1])))


def weight_map(height: int, width: int, blend: str = "constant", sigma_scale: float = 0.125,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Blending weights of one window (float32 h×w): all ones, or MONAI's Gaussian.

    Gaussian: exp(-d²/(2σ²)) per axis with d measured from the window centre ((n-1)/2), σ = sigma_scale · n,
    peak 1, floored at 1e-3 exactly like `monai.data.utils.compute_importance_map`.
    """
    if blend not in BLENDS:
        raise ConfigError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    if blend == "constant":
        return torch.ones(height, width, device=device)
    if sigma_scale <= 0:
        raise ConfigError(f"sigma_scale must be positive, got {sigma_scale}")
    axes = []
    for n in (height, width):
        x = torch.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=torch.float32, device=device)
        axes.append(torch.exp(x**2 / (-2 * (n * sigma_scale) ** 2)))
    weights = axes[0][:, None] * axes[1][None, :]
    return weights.clamp_(min=max(weights.min().item(), MIN_WEIGHT))


def window_batch(model: nn.Module, windows: torch.Tensor, stride: int, window_mode: InferenceMode | None = None,
                 average: str = "probs") -> torch.Tensor:
    """Forward a batch of windows B×C×h×w → B×K×h×w: probabilities, or log-probabilities when averaging logits.

    `window_mode` (default: whole image, padded to the model's stride) may be a TTA mode run on every window.
    Log-probabilities differ from the logits by one constant per pixel and window, so their weighted mean has the
    same softmax as the weighted mean of the logits.
    """
    if window_mode is None:
        height, width = windows.shape[-2:]
        logits = model(pad_to_multiple(windows, stride))
        return logits_to_probs(logits, log=average == "logits")[..., :height, :width]
    probs = window_mode(model, windows, stride)
    return probs.clamp_min(LOG_FLOOR).log() if average == "logits" else probs


class BandAccumulator:
    """Weighted sums and weight sums of the image rows that windows still touch, in a ring of `rows` rows.

    Windows must arrive in raster order. Before a window starting at row y is added, every row above y is final:
    `pop(y)` returns those rows normalised (K×n×W) and frees their ring rows for rows further down, so at most
    `rows` (the window height) are held and no row is ever moved. The sums are stored pixel-major (rows×W×K), the
    layout of a channels_last network's output, so adding a window reads and writes memory in order.
    """

    def __init__(self, classes: int, width: int, rows: int, device: torch.device | str | None = None) -> None:
        self.top = 0  # first image row not yet popped
        self.sums = torch.zeros(rows, width, classes, device=device)
        self.weights = torch.zeros(rows, width, device=device)
        self.rows = rows  # allocated band rows (the memory bound; tests read it)

    def _ring(self, start: int, stop: int) -> list[tuple[slice, slice]]:
        """(ring rows, rows of the block) holding image rows [start, stop): one pair, two where the ring wraps."""
        first, count = start % self.rows, stop - start
        if first + count <= self.rows:
            return [(slice(first, first + count), slice(0, count))]
        split = self.rows - first
        return [(slice(first, self.rows), slice(0, split)), (slice(0, count - split), slice(split, count))]

    def add(self, y: int, x: int, values: torch.Tensor, weights: torch.Tensor) -> None:
        """Add one window's K×h×w values, multiplied by its h×w weights, at image position (y, x)."""
        height, width = values.shape[-2:]
        if y < self.top or y + height > self.top + self.rows:
            raise RuntimeError(f"window at row {y} (height {height}) is outside the band "
                               f"{self.top}..{self.top + self.rows}; windows must come in raster order")
        pixels = values.permute(1, 2, 0)
        for ring, block in self._ring(y, y + height):
            self.sums[ring, x:x + width].addcmul_(pixels[block], weights[block, :, None])
            self.weights[ring, x:x + width] += weights[block]

    def pop(self, until: int) -> torch.Tensor:
        """Normalise and return the finished rows [top, until) as K×n×W and free them (`top` becomes `until`)."""
        until = max(min(until, self.top + self.rows), self.top)
        done = self.sums.new_empty(until - self.top, *self.sums.shape[1:])
        for ring, block in self._ring(self.top, until):
            torch.div(self.sums[ring], self.weights[ring, :, None], out=done[block])
            self.sums[ring].zero_()
            self.weights[ring].zero_()
        self.top = until
        return done.permute(2, 0, 1)


def blend_windows(model: nn.Module, plan: WindowPlan, windows: Iterable[tuple[int, int, torch.Tensor]], stride: int,
                  *, batch_size: int = 4, blend: str = "constant", sigma_scale: float = 0.125,
                  average: str = "probs", window_mode: InferenceMode | None = None,
                  device: torch.device | str | None = None, on_batch: Callable[[int], None] | None = None,
                  stats: dict | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Run windows (y, x, C×h×w normalised) in batches and yield finished row bands (first row, K×n×W probs).

    The bands come top to bottom, hold at most BAND_VALUES values each and together cover every row of the image
    once (at the same rows for every model over one plan and class count). `on_batch(n)` is called after
    each forward of n windows (progress bars); `stats['band_rows']` receives the accumulator's allocated rows.
    """
    if batch_size <= 0:
        raise ConfigError(f"window batch size must be positive, got {batch_size}")
    if average not in AVERAGES:
        raise ConfigError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")
    weights = None
    accumulator: BandAccumulator | None = None

    def finish(until: int) -> Iterator[tuple[int, torch.Tensor]]:
        """The rows above `until`, in bands of at most BAND_VALUES values (a 30 000-pixel-wide, 16-class image
        would otherwise need 0.7 GB for the finished rows of one window row)."""
        rows = max(1, BAND_VALUES // (plan.width * accumulator.sums.shape[2]))
        while accumulator.top < until:
            top = accumulator.top
            band = accumulator.pop(min(until, top + rows))
            yield top, band.softmax(dim=0) if average == "logits" else band

    pending: list[tuple[int, int, torch.Tensor]] = []

    def run(batch: list[tuple[int, int, torch.Tensor]]) -> Iterator[tuple[int, torch.Tensor]]:
        nonlocal weights, accumulator
        inputs = torch.stack([w for _, _, w in batch])
        if device is not None:
            inputs = inputs.to(device)
        outputs = window_batch(model, inputs, stride, window_mode, average)
        if accumulator is None:
            accumulator = BandAccumulator(outputs.shape[1], plan.width, plan.window[0], outputs.device)
            weights = weight_map(*plan.window, blend, sigma_scale, outputs.device)
            if stats is not None:
                stats["band_rows"] = accumulator.rows
        for (y, x, _), values in zip(batch, outputs):
            yield from finish(y)
            accumulator.add(y, x, values, weights)
        if on_batch is not None:
            on_batch(len(batch))

    for item in windows:
        pending.append(item)
        if len(pending) == batch_size:
            yield from run(pending)
            pending = []
    if pending:
        yield from run(pending)
    if accumulator is not None:
        yield from finish(plan.height)
