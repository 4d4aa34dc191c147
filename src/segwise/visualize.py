"""Turn images, masks and predictions into uint8 RGB arrays for plots, reports and TensorBoard.

Everything here returns numpy arrays and never writes files (use ``segwise.data.io`` for that).
Only numpy and OpenCV are used, so plotting needs no extra dependency.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

MAX_PALETTE_CLASSES = 65536
# Percentile stretch statistics are estimated on at most this many pixels per channel (strided sample).
_MAX_STAT_PIXELS = 1 << 20
_BACKGROUND = (32, 32, 32)
_TEXT = (255, 255, 255)
_OUTLINE = (128, 128, 128)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.5
_FONT_THICKNESS = 1
_PAD = 4
_GAP = 4


def default_palette(num_classes: int) -> np.ndarray:
    """Return the Pascal VOC bit-interleaved palette as a ``K×3`` uint8 array (class 0 is black).

    Bit ``k`` of the class index goes to bit ``7 - k // 3`` of channel ``k % 3``, so neighbouring
    indices get clearly different colours and every index up to 65536 gets a unique one.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__} {num_classes!r}")
    if not 1 <= num_classes <= MAX_PALETTE_CLASSES:
        raise ValueError(
            f"num_classes={num_classes} is out of range: the default palette supports 1 to "
            f"{MAX_PALETTE_CLASSES} classes; pass your own K×3 uint8 palette for more"
        )
    index = np.arange(num_classes, dtype=np.int64)
    palette = np.zeros((num_classes, 3), dtype=np.int64)
    for bit in range(int(num_classes - 1).bit_length()):
        palette[:, bit % 3] |= ((index >> bit) & 1) << (7 - bit // 3)
    return palette.astype(np.uint8)


def _as_palette(palette: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Validate a ``K×3`` palette with values in 0..255 and return it as uint8."""
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] == 0:
        raise ValueError(f"palette must have shape K×3 with K >= 1, got shape {array.shape}")
    if array.dtype != np.uint8:
        if not (np.issubdtype(array.dtype, np.number) and np.all(np.isfinite(array))):
            raise ValueError(f"palette must hold numbers in 0..255, got dtype {array.dtype}")
        if array.min() < 0 or array.max() > 255:
            raise ValueError(
                f"palette values must lie in 0..255, got range [{array.min()}, {array.max()}]; "
                "scale 0..1 colours by 255"
            )
        array = np.rint(array).astype(np.uint8)
    return array


def _as_index_mask(mask: np.ndarray) -> np.ndarray:
    """Validate an ``H×W`` integer (or bool) mask and return it as int64."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(
            f"mask must be H×W, got shape {array.shape}; encode colour masks with ClassMap first"
        )
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64, copy=False)
    raise ValueError(
        f"mask must have an integer dtype, got {array.dtype}; cast it with mask.astype(np.int64)"
    )


def _valid_pixels(mask: np.ndarray, num_colors: int, ignore_index: int) -> np.ndarray:
    """Pixels that carry a class with a palette colour (not ignore, not negative, not >= K)."""
    return (mask >= 0) & (mask < num_colors) & (mask != ignore_index)


def colorize(
    mask: np.ndarray,
    palette: np.ndarray,
    ignore_index: int = 255,
    ignore_color: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
    """Map an ``H×W`` class-index mask to an ``H×W×3`` uint8 RGB image with one lookup.

    Pixels equal to ``ignore_index`` and values with no palette entry (negative or >= K) get ``ignore_color``.
    """
    index = _as_index_mask(mask)
    colors = _as_palette(palette)
    fill = np.asarray(ignore_color)
    if fill.shape != (3,) or fill.min() < 0 or fill.max() > 255:
        raise ValueError(f"ignore_color must be three values in 0..255, got {ignore_color!r}")
    lut = np.concatenate([colors, fill.astype(np.uint8)[None]], axis=0)
    lookup = np.where(_valid_pixels(index, len(colors), ignore_index), index, len(colors))
    return lut[lookup]


def _select_rgb_channels(image: np.ndarray) -> np.ndarray:
    """Return an ``H×W×3`` view/copy: first three channels, grey replicated, or two channels zero-padded."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] == 0:
        raise ValueError(f"image must be H×W or H×W×C with C >= 1, got shape {image.shape}")
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 2:
        return np.concatenate([image, np.zeros_like(image[:, :, :1])], axis=2)
    return image[:, :, :3]


def _stretch_channel(channel: np.ndarray) -> np.ndarray:
    """Linearly map the 2nd..98th percentile of one channel to 0..255, ignoring NaN/inf."""
    sample = channel.reshape(-1)
    if sample.size > _MAX_STAT_PIXELS:
        sample = sample[:: -(-sample.size // _MAX_STAT_PIXELS)]
    sample = sample.astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return np.zeros(channel.shape, dtype=np.uint8)
    low, high = np.percentile(sample, [2.0, 98.0])
    if high <= low:
        # Mostly-constant channel (e.g. sparse bright objects on zero): fall back to the full range.
        low, high = float(sample.min()), float(sample.max())
    if high <= low:
        return np.zeros(channel.shape, dtype=np.uint8)
    scaled = channel.astype(np.float32)
    scaled -= np.float32(low)
    scaled *= np.float32(255.0 / (high - low))
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return np.rint(scaled, out=scaled).astype(np.uint8)


def to_display_rgb(image: np.ndarray) -> np.ndarray:
    """Make any ``H×W×C`` image displayable as ``H×W×3`` uint8 RGB.

    Uses the first three channels (one channel is replicated as grey, two are padded with zeros).
    uint8 values are kept as they are; every other dtype (uint16, float, multispectral) gets a robust
    per-channel 2–98 percentile stretch so a few outliers do not wash out the picture.
    """
    array = _select_rgb_channels(np.asarray(image))
    if array.dtype == np.uint8:
        return np.array(array, order="C", copy=True)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"image must have a real numeric dtype, got {array.dtype}")
    return np.stack([_stretch_channel(array[:, :, c]) for c in range(3)], axis=2)


def _class_boundaries(mask: np.ndarray) -> np.ndarray:
    """Pixels whose class differs from a 4-neighbour; each side of an edge is marked in its own colour."""
    edges = np.zeros(mask.shape, dtype=bool)
    horizontal = mask[:, 1:] != mask[:, :-1]
    edges[:, 1:] |= horizontal
    edges[:, :-1] |= horizontal
    vertical = mask[1:, :] != mask[:-1, :]
    edges[1:, :] |= vertical
    edges[:-1, :] |= vertical
    return edges


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.5,
    ignore_index: int = 255,
) -> np.ndarray:
    """Blend class colours over an image (``H×W×3`` uint8); ignore pixels and values with no palette
    colour show the image unchanged.

    Class boundaries are drawn 1 px wide in a darker shade of each class colour at double opacity,
    so small objects stay visible; ``alpha=0`` returns the display image itself.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    rgb = to_display_rgb(image)
    index = _as_index_mask(mask)
    if index.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {index.shape} does not match image size {rgb.shape[:2]}")
    colors = _as_palette(palette)
    valid = _valid_pixels(index, len(colors), ignore_index)
    color = colorize(index, colors, ignore_index=ignore_index).astype(np.float32)

    weight = np.where(valid, np.float32(alpha), np.float32(0.0))
    edges = _class_boundaries(index) & valid
    weight[edges] = min(1.0, 2.0 * float(alpha))
    color[edges] *= 0.5
    weight = weight[:, :, None]
    blended = rgb.astype(np.float32) * (1.0 - weight) + color * weight
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _text_size(text: str) -> tuple[int, int, int]:
    """Width, height above the baseline and baseline depth of ``text`` in the shared font."""
    (width, height), baseline = cv2.getTextSize(text, _FONT, _FONT_SCALE, _FONT_THICKNESS)
    return width, height, baseline


def _fit_text(text: str, max_width: int) -> str:
    """Shorten ``text`` with a trailing '...' until it fits ``max_width`` pixels (may become empty)."""
    text = " ".join(str(text).split())
    if _text_size(text)[0] <= max_width:
        return text
    while text and _text_size(text + "...")[0] > max_width:
        text = text[:-1]
    return text + "..." if text else ""


def _line_height() -> int:
    """Height of one text strip: the tallest glyphs plus descenders plus padding."""
    _, height, baseline = _text_size("Ag|")
    return height + baseline + 2 * _PAD


def _put_text(canvas: np.ndarray, text: str, x: int, top: int) -> None:
    """Draw white ``text`` with its box's top-left corner at (x, top) inside a strip of ``_line_height``."""
    if not text:
        return
    _, height, _ = _text_size("Ag|")
    origin = (x, top + _PAD + height)
    cv2.putText(canvas, text, origin, _FONT, _FONT_SCALE, _TEXT, _FONT_THICKNESS, cv2.LINE_AA)


def _check_rgb_panel(panel: np.ndarray, position: int) -> np.ndarray:
    """Return ``panel`` as an array, or explain how to make it an ``H×W×3`` uint8 panel."""
    array = np.asarray(panel)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(
            f"panel {position} must be an H×W×3 uint8 array, got shape {array.shape} dtype {array.dtype}; "
            "convert it with to_display_rgb, colorize or overlay first"
        )
    return array


def side_by_side(
    panels: Sequence[np.ndarray],
    titles: Sequence[str],
    caption: str | None = None,
) -> np.ndarray:
    """Place ``H×W×3`` uint8 panels left to right with a title above each and an optional caption below.

    Panels of different heights are top-aligned on a dark background; text is white and cut with '...'
    when it is wider than its panel. Returns one ``H'×W'×3`` uint8 image (e.g. image | truth | prediction).
    """
    arrays = [_check_rgb_panel(panel, i) for i, panel in enumerate(panels)]
    titles = list(titles)
    if not arrays:
        raise ValueError("side_by_side needs at least one panel")
    if len(titles) != len(arrays):
        raise ValueError(f"got {len(arrays)} panels but {len(titles)} titles; pass one title per panel")

    strip = _line_height()
    panel_height = max(a.shape[0] for a in arrays)
    width = sum(a.shape[1] for a in arrays) + _GAP * (len(arrays) + 1)
    height = strip + panel_height + _GAP + (strip if caption else 0)
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = _BACKGROUND

    x = _GAP
    for array, title in zip(arrays, titles):
        _put_text(canvas, _fit_text(title, array.shape[1]), x, 0)
        canvas[strip : strip + array.shape[0], x : x + array.shape[1]] = array
        x += array.shape[1] + _GAP
    if caption:
        _put_text(canvas, _fit_text(caption, width - 2 * _GAP), _GAP, strip + panel_height + _GAP)
    return canvas


def legend(
    class_names: Sequence[str],
    palette: np.ndarray,
    max_rows: int = 32,
) -> np.ndarray:
    """Draw a colour swatch and the name of each class (``H×W×3`` uint8), in columns of ``max_rows``."""
    names = [str(name) for name in class_names]
    colors = _as_palette(palette)
    if not names:
        raise ValueError("legend needs at least one class name")
    if len(colors) < len(names):
        raise ValueError(
            f"palette has {len(colors)} colours but there are {len(names)} class names; "
            f"use default_palette({len(names)}) or extend the palette"
        )
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")

    row = _line_height()
    swatch = row - 2 * _PAD
    rows = min(max_rows, len(names))
    columns = -(-len(names) // rows)
    column_widths = []
    for c in range(columns):
        chunk = names[c * rows : (c + 1) * rows]
        column_widths.append(_PAD + swatch + _PAD + max(_text_size(n)[0] for n in chunk) + 2 * _PAD)
    canvas = np.empty((rows * row + _PAD, sum(column_widths) + _PAD, 3), dtype=np.uint8)
    canvas[:] = _BACKGROUND

    for i, name in enumerate(names):
        column, r = divmod(i, rows)
        left = _PAD + sum(column_widths[:column])
        top = _PAD + r * row
        corner = (left + _PAD, top + _PAD)
        canvas[corner[1] : corner[1] + swatch, corner[0] : corner[0] + swatch] = colors[i]
        # A grey outline keeps dark swatches (VOC background is black) visible on the dark background.
        far = (corner[0] + swatch - 1, corner[1] + swatch - 1)
        cv2.rectangle(canvas, corner, far, _OUTLINE, 1)
        _put_text(canvas, name, left + 2 * _PAD + swatch, top)
    return canvas
