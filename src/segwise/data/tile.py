"""Offline patch extraction for large-image data sets (`segwise data tile`): fixed windows with the last row/column
moved back to end on the border (SimpleCV `sliding_window`, as FactSeg cuts iSAID into 896/512 patches), or, as the
smp trainer tiles, whole windows only from a start offset (`edge="drop"`), or partial edge windows padded.

Tiles are always `size`×`size`: images smaller than a window are padded with 0 (image, planes) and `ignore_index`
(mask). Masks are written as class-index PNGs, so the tiled set trains with the same class options and no colour
mapping; extra planes are cut with their image into folders of their own name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from segwise.data.classmap import ClassMap
from segwise.data.folder import Sample, display_path, read_sample_mask
from segwise.data.io import read_image, write_png, write_tiff
from segwise.errors import ConfigError, DataError
from segwise.progress import track

EDGES = ("shift", "pad", "drop")
"""What happens to the window at the far border: moved back to end on it (SimpleCV), padded, or left out."""


def axis_starts(size: int, window: int, stride: int, offset: int = 0, edge: str = "shift") -> list[int]:
    """Window starts along one axis: offset, offset + stride, … At the border the last window is moved back to end
    exactly on it (shift), runs over it and is padded (pad), or is left out unless it fits (drop: the smp trainer's
    tiling, which keeps whole windows only)."""
    if edge == "drop":
        return list(range(offset, size - window + 1, stride))
    if edge == "pad":
        starts = [offset] if offset < size else []
        while starts and starts[-1] + window < size:
            starts.append(starts[-1] + stride)
        return starts
    if window >= size:
        return [0]
    return [*range(offset, size - window, stride), size - window]


MaskDecoder = Callable[[Sample, tuple[int, int]], np.ndarray]
"""(sample, its image's H×W) → int64 H×W class indices (ignore_index where unlabelled), checked against the size."""


def class_map_decoder(class_map: ClassMap) -> MaskDecoder:
    """Decode masks with a ClassMap, as training reads them (the layout's own mask reader, or the image file with
    displayed colours for colour class maps, so palette-mode PNGs work too)."""

    def decode(sample: Sample, image_size: tuple[int, int]) -> np.ndarray:
        return read_sample_mask(sample, class_map, image_size)

    return decode


def tile_windows(height: int, width: int, size: int, stride: int, offset: int = 0,
                 edge: str = "shift") -> Iterator[tuple[int, int]]:
    """Top-left (y, x) of every window in raster order, starting `offset` pixels in; `edge` as in axis_starts."""
    for y in axis_starts(height, size, stride, offset, edge):
        for x in axis_starts(width, size, stride, offset, edge):
            yield y, x


def _crop(array: np.ndarray, y: int, x: int, size: int, fill: int) -> np.ndarray:
    """`size`×`size` crop at (y, x), padded bottom/right with `fill` where the array ends."""
    crop = array[y:y + size, x:x + size]
    pad = [(0, size - crop.shape[0]), (0, size - crop.shape[1])] + [(0, 0)] * (array.ndim - 2)
    return np.pad(crop, pad, constant_values=fill) if any(p[1] for p in pad) else crop


def _write_image(path: Path, image: np.ndarray) -> None:
    """PNG for 1/3/4-band 8/16-bit images, TIFF otherwise (more bands, float pixels)."""
    if image.shape[2] in (1, 3, 4) and image.dtype in (np.uint8, np.uint16):
        write_png(path.with_suffix(".png"), image)
    else:
        write_tiff(path.with_suffix(".tif"), image)


def _mask_dtype(ignore_index: int, num_values: int) -> type:
    if ignore_index < 0 or max(ignore_index, num_values) > np.iinfo(np.uint16).max:
        raise ConfigError(f"data.ignore_index {ignore_index}: tiled masks are PNGs, so it must lie in 0..65535")
    return np.uint8 if max(ignore_index, num_values) <= 255 else np.uint16


def tile_samples(samples: Sequence[Sample], out_dir: str | Path, decode: MaskDecoder, size: int | None = 896,
                 stride: int = 512, ignore_index: int = 255, num_classes: int = 256, prefix: str = "",
                 offset: int = 0, edge: str = "shift") -> int:
    """Write `out_dir/{images,masks,<plane>...}/<prefix><name>_<y>_<x>.png` for every window (whole images when size
    is None), the extra planes cut like their image; returns the number of tiles written."""
    _check_tiling(size, stride, offset, edge)
    out_dir = Path(out_dir)
    dtype = _mask_dtype(ignore_index, num_classes - 1)
    count = 0
    for sample in track(samples, "tiling", unit="images"):
        image = read_image(sample.image)
        mask = decode(sample, image.shape[:2])
        layers = [("images", image), *_read_planes(sample, image)]
        height, width = mask.shape
        windows = [(0, 0)] if size is None else tile_windows(height, width, size, stride, offset, edge)
        for y, x in windows:
            name = prefix + (sample.name if size is None else f"{sample.name}_{y}_{x}")
            for folder, array in layers:
                _write_image(out_dir / folder / name, array if size is None else _crop(array, y, x, size, 0))
            tile_mask = mask if size is None else _crop(mask, y, x, size, ignore_index)
            write_png(out_dir / "masks" / f"{name}.png", tile_mask.astype(dtype))
            count += 1
    return count


def _check_tiling(size: int | None, stride: int, offset: int, edge: str) -> None:
    if edge not in EDGES:
        raise ConfigError(f"tile edge {edge!r}: choose one of {', '.join(EDGES)}")
    if size is None:
        return
    if size <= 0 or not 0 < stride <= size:
        raise ConfigError(f"tile size {size} / stride {stride}: need size > 0 and 0 < stride <= size "
                          "(e.g. --size 896 --stride 512)")
    if not 0 <= offset < size:
        raise ConfigError(f"tile offset {offset}: the grid starts inside the first window, so give 0 <= offset < "
                          f"size {size} (e.g. --offset {size // 2} for a grid shifted by half a window)")


def _read_planes(sample: Sample, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(plane folder name, plane) for each extra plane of a sample; each must cover its image pixel for pixel."""
    planes = []
    for path in sample.extras:
        plane = read_image(path)
        if plane.shape[:2] != image.shape[:2]:
            raise DataError(f"{display_path(path)}: extra plane is {plane.shape[0]}×{plane.shape[1]} but its image is "
                            f"{image.shape[0]}×{image.shape[1]}; resample it to the image grid")
        planes.append((path.parent.name, plane))
    return planes
