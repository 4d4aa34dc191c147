"""`build_mode`: the one place where user options (CLI flags, API keywords) become an inference mode."""

from __future__ import annotations

from collections.abc import Sequence

from segwise.errors import ConfigError
from segwise.inference.sliding import SlidingWindow
from segwise.inference.tta import MultiScaleFlip
from segwise.inference.whole import InferenceMode, WholeImage

MODES = ("whole", "slide")
FLIPS = ("h", "v", "hv")
DEFAULT_WINDOW = 512
DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image (pixels) read whole into memory, and the bound on an image grown by test-time scales."""


def build_mode(mode: str = "whole", *, window: int | Sequence[int] | None = None,
               stride: int | Sequence[int] | None = None, overlap: float | None = None, window_batch: int = 4,
               blend: str = "constant", sigma_scale: float = 0.125, average: str = "probs",
               scales: Sequence[float] | None = None, flip: str | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> InferenceMode:
    """`whole` or `slide` (window, stride or overlap, batch of windows, blend), wrapped in TTA when scales/flip are set.

    flip: 'h' (horizontal), 'v' (vertical) or 'hv' (both, as two extra views). Sliding options with `whole` are an
    error rather than silently ignored. `max_pixels` bounds an image grown by a test-time scale.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if flip is not None and flip not in FLIPS:
        raise ConfigError(f"flip must be one of {', '.join(FLIPS)}, got {flip!r}")
    if mode == "whole":
        given = [name for name, value in (("window", window), ("stride", stride), ("overlap", overlap))
                 if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to sliding windows; add --mode slide")
        base: InferenceMode = WholeImage()
    else:
        size = DEFAULT_WINDOW if window is None else window if isinstance(window, int) else tuple(window)
        steps = stride if stride is None or isinstance(stride, int) else tuple(stride)
        base = SlidingWindow(size, steps, overlap, window_batch, blend, sigma_scale, average)
    if scales is None and flip is None:
        return base
    return MultiScaleFlip(base, tuple(scales or (1.0,)), hflip="h" in (flip or ""), vflip="v" in (flip or ""),
                          max_pixels=max_pixels)
