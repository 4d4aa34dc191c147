"""Rasters larger than memory: read any rasterio-readable file row band by row band, slide windows over it and
write GeoTIFF outputs (class map, colour map, per-class probabilities, confidence) as rows become final.

Memory is bounded by the window band, not by the image: the input holds the rows the current window row needs,
the accumulator (`windows.BandAccumulator`) the rows windows still touch, and each writer one block row of its
output. CRS, transform and nodata of the source are kept; source nodata pixels are fed to the model as the mean
(zero after normalisation) and are nodata in every output.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import rasterio
import torch
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from torch import nn

from segwise.data.transforms import normalize, same_pixel_type
from segwise.models.spec import ModelSpec
from segwise.errors import ConfigError, DataError
from segwise.inference.sliding import SlidingWindow
from segwise.inference.tta import MultiScaleFlip
from segwise.inference.whole import InferenceMode, ResizedInput, WholeImage
from segwise.inference.windows import WindowPlan, blend_windows
from segwise.io_utils import temp_path
from segwise.progress import progress as show_progress

RASTER_EXTENSIONS = (".tif", ".tiff")
PROBS_KINDS = ("uint8", "float16")
DEFAULT_WINDOW = 1024  # used when the mode asks for the whole image, which a streamed raster never is
BLOCK = 256  # largest output tile side; writers buffer one block row so tiles are written once, whole
GDAL_CACHE_MB = 64  # bounds GDAL's own block cache (its default is 5 % of the machine's memory)
PROGRESS_MIN_WINDOWS = 64  # smaller rasters show no progress unless asked (`progress=True`)


@dataclass
class RasterStats:
    """What a streamed prediction used: windows run, rows held by the accumulator and the input, time taken."""

    windows: int = 0
    band_rows: int = 0  # rows allocated in the probability accumulator (≤ window height)
    input_rows: int = 0  # most input rows held at once (≤ window height)
    seconds: float = 0.0

    @property
    def windows_per_second(self) -> float:
        return self.windows / self.seconds if self.seconds else 0.0


@dataclass
class RasterResult:
    """Paths written (None where not asked for) and the run's statistics."""

    classes: Path
    color: Path | None = None
    probs: Path | None = None
    confidence: Path | None = None
    stats: RasterStats = field(default_factory=RasterStats)

    def paths(self) -> list[Path]:
        return [p for p in (self.classes, self.color, self.probs, self.confidence) if p is not None]


def output_paths(dst: Path, *, color: bool = False, probs: str | None = None,
                 confidence: bool = False) -> dict[str, Path]:
    """`dst` is the class raster; the others sit beside it as `<stem>_color.tif`, `_probs.tif`, `_confidence.tif`."""
    dst = Path(dst)
    paths = {"classes": dst}
    for kind, wanted in (("color", color), ("probs", probs), ("confidence", confidence)):
        if wanted:
            paths[kind] = dst.with_name(f"{dst.stem}_{kind}.tif")
    return paths


def streaming_mode(mode: InferenceMode | None) -> SlidingWindow:
    """The sliding mode a streamed raster runs: the mode itself, or for TTA its base with the TTA on every window.

    `WholeImage` (and TTA around it) becomes windows of DEFAULT_WINDOW pixels, since the raster is never whole.
    """
    if isinstance(mode, SlidingWindow):
        return mode
    if isinstance(mode, MultiScaleFlip):
        window_tta = dataclasses.replace(mode, base=WholeImage())
        base = mode.base if isinstance(mode.base, SlidingWindow) else SlidingWindow(DEFAULT_WINDOW)
        return dataclasses.replace(base, window_mode=window_tta)
    if mode is None or isinstance(mode, WholeImage):
        return SlidingWindow(DEFAULT_WINDOW)
    raise ConfigError(f"{type(mode).__name__} cannot stream a raster; use WholeImage, SlidingWindow or MultiScaleFlip")


def open_raster(path: Path):
    """Open a raster for reading, or raise a DataError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except Exception as exc:  # rasterio raises RasterioIOError and CPLE_* errors for unreadable files
        raise DataError(f"{path}: cannot be read as a raster ({exc}); check that it is a GeoTIFF or another "
                        "GDAL-readable image and not truncated") from None


def raster_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without reading pixels."""
    with open_raster(path) as src:
        return src.height, src.width


def _working_dtype(dtype: np.dtype, path: Path) -> np.dtype:
    """The pixel type training used for this file type (as `read_image`): uint8/uint16/float32 kept, else float32."""
    dtype = np.dtype(dtype)
    if dtype in (np.uint8, np.uint16, np.float32):
        return dtype
    if np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating):
        return np.dtype(np.float32)
    raise DataError(f"{path}: unsupported pixel type {dtype}; convert the raster to uint8, uint16 or float32")


class RowReader:
    """Reads rows of one or more rasters on the same grid (an image and its extra planes) once, top to bottom,
    holding only the rows the current window row needs; their bands are stacked in order.

    The valid-pixel mask (valid in every source) comes with the rows; with `track_valid` it is also kept for rows
    read but not yet taken by the writers (`take_valid`).
    """

    def __init__(self, sources: Sequence, paths: Sequence[Path], track_valid: bool = True, start: int = 0) -> None:
        self.sources, self.paths = list(sources), list(paths)
        dtypes = [_working_dtype(src.dtypes[0], path) for src, path in zip(self.sources, self.paths)]
        self.dtype = same_pixel_type([np.empty(0, dtype) for dtype in dtypes])[0].dtype  # float32 when mixed
        self.width = self.sources[0].width
        self.top = start  # first row read (a process predicting part of the raster starts at its first window)
        self.data = np.empty((sum(src.count for src in self.sources), 0, self.width), self.dtype)
        self.masked = any(MaskFlags.all_valid not in band for src in self.sources for band in src.mask_flag_enums)
        self.track_valid = track_valid
        self.valid = np.empty((0, self.width), bool)
        self.valid_top = start
        self.max_rows = 0

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        window = Window(0, start, self.width, stop - start)
        planes, valid = [], None
        for src, path in zip(self.sources, self.paths):
            try:
                planes.append(src.read(window=window).astype(_working_dtype(src.dtypes[0], path), copy=False))
                if self.masked:
                    mask = src.dataset_mask(window=window) > 0
                    valid = mask if valid is None else valid & mask
            except Exception as exc:
                raise DataError(f"{path}: rows {start}..{stop} cannot be read ({exc}); the file may be "
                                "damaged") from None
        return np.concatenate(same_pixel_type(planes), axis=0), valid

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Pixels C×(stop-start)×W of rows [start, stop) (start never goes back), and their valid mask."""
        end = self.top + self.data.shape[1]
        if start > self.top:
            self.data = self.data[:, start - self.top:]
            self.top = start
            if not self.track_valid:  # no writer takes the mask: keep only the rows still read
                self.valid = self.valid[start - self.valid_top:]
                self.valid_top = start
        if stop > end:
            new, new_valid = self._read(end, stop)
            self.data = np.concatenate([self.data, new], axis=1)
            if new_valid is not None:
                self.valid = np.concatenate([self.valid, new_valid], axis=0)
        self.max_rows = max(self.max_rows, self.data.shape[1])
        valid = self.valid[start - self.valid_top:stop - self.valid_top] if self.masked else None
        return self.data[:, :stop - start], valid

    def take_valid(self, start: int, stop: int) -> np.ndarray | None:
        """The valid mask of rows [start, stop) (rows are taken in order, once), or None when all pixels are valid."""
        if not self.track_valid:
            raise RuntimeError("this RowReader does not keep the valid mask for writers (track_valid=False)")
        if not self.masked:
            return None
        valid = self.valid[start - self.valid_top:stop - self.valid_top]
        self.valid = self.valid[stop - self.valid_top:]
        self.valid_top = stop
        return valid


class BlockWriter:
    """Writes rows of one output in whole block rows (so compressed tiles are written once), masking nodata."""

    def __init__(self, dst, block: int, use_mask: bool) -> None:
        self.dst, self.block, self.use_mask = dst, block, use_mask
        self.top = 0
        self.parts: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.pending = 0

    def write(self, rows: np.ndarray, valid: np.ndarray | None) -> None:
        self.parts.append(rows)
        if self.use_mask:
            self.masks.append(np.full(rows.shape[1:], 255, np.uint8) if valid is None else valid.astype(np.uint8) * 255)
        self.pending += rows.shape[1]
        if self.pending >= self.block:
            self.flush(self.pending - self.pending % self.block)

    def flush(self, count: int | None = None) -> None:
        if not self.pending:
            return
        data = np.concatenate(self.parts, axis=1)
        count = data.shape[1] if count is None else count
        window = Window(0, self.top, data.shape[2], count)
        self.dst.write(data[:, :count], window=window)
        self.parts = [data[:, count:]] if count < data.shape[1] else []
        if self.use_mask:
            masks = np.concatenate(self.masks, axis=0)
            self.dst.write_mask(masks[:count], window=window)
            self.masks = [masks[count:]] if count < masks.shape[0] else []
        self.top += count
        self.pending -= count


def _class_dtype(num_classes: int) -> tuple[str, int]:
    """uint8 with nodata 255 for up to 255 classes, else uint16 with nodata 65535."""
    return ("uint8", 255) if num_classes <= 255 else ("uint16", 65535)


def _profiles(src, spec: ModelSpec, paths: dict[str, Path], probs: str | None, masked: bool,
              window_rows: int) -> dict[str, dict]:
    """GeoTIFF profiles: tiled (tiles no taller than the window, so a writer buffers at most ~window rows)."""
    block = min(BLOCK, -(-window_rows // 16) * 16)
    base = dict(driver="GTiff", width=src.width, height=src.height, crs=src.crs, transform=src.transform,
                tiled=True, blockxsize=block, blockysize=block, compress="deflate", BIGTIFF="IF_SAFER")
    class_dtype, class_nodata = _class_dtype(spec.num_classes)
    profiles = {"classes": dict(base, count=1, dtype=class_dtype, nodata=class_nodata if masked else None)}
    if "color" in paths:
        profiles["color"] = dict(base, count=3, dtype="uint8", photometric="RGB")
    if "probs" in paths:
        if probs == "uint8":
            profiles["probs"] = dict(base, count=spec.num_classes, dtype="uint8", interleave="band")
        else:  # GDAL 3.10 has no Float16 type; NBITS=16 stores Float32 bands as IEEE half floats
            profiles["probs"] = dict(base, count=spec.num_classes, dtype="float32", NBITS=16, interleave="band",
                                     nodata=float("nan") if masked else None)
    if "confidence" in paths:
        profiles["confidence"] = dict(base, count=1, dtype="uint8", nodata=0 if masked else None)
    return profiles


def _outputs(probs: torch.Tensor, kinds: dict[str, dict], palette: np.ndarray, valid: np.ndarray | None,
             threshold: float | None, probs_kind: str | None) -> dict[str, np.ndarray]:
    """K×n×W probabilities of finished rows → the arrays (bands×n×W) each output writes."""
    best, labels = probs.max(dim=0)  # first maximum, as argmax; max over dim 0 is ~3x faster than argmax on CPU
    if threshold is not None:
        labels = (probs[1] >= threshold).to(torch.int64)
    labels = labels.cpu().numpy()
    arrays: dict[str, np.ndarray] = {}
    class_profile = kinds["classes"]
    classes = labels.astype(class_profile["dtype"])
    if valid is not None:
        classes[~valid] = class_profile["nodata"]
    arrays["classes"] = classes[None]
    if "color" in kinds:
        color = palette[labels].transpose(2, 0, 1)
        if valid is not None:
            color[:, ~valid] = 0
        arrays["color"] = np.ascontiguousarray(color)
    if "confidence" in kinds:
        confidence = (best * 255).round_().clamp_(1, 255).to(torch.uint8).cpu().numpy()
        if valid is not None:
            confidence[~valid] = 0
        arrays["confidence"] = confidence[None]
    if "probs" in kinds:
        if probs_kind == "uint8":
            quantised = np.ascontiguousarray((probs * 255).round_().to(torch.uint8).cpu().numpy())  # band-major
            if valid is not None:
                quantised[:, ~valid] = 0
        else:
            quantised = np.ascontiguousarray(probs.cpu().numpy())
            if valid is not None:
                quantised[:, ~valid] = np.nan
        arrays["probs"] = quantised
    return arrays


def _normalised_window(pixels: np.ndarray, valid: np.ndarray | None, spec: ModelSpec) -> torch.Tensor:
    """C×h×w raw pixels → C×h×w float32 normalised like training; invalid pixels become 0 (the mean)."""
    array = normalize(np.moveaxis(pixels, 0, -1), spec.mean, spec.std)
    if valid is not None:
        array[~valid] = 0
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


@dataclass(frozen=True)
class RasterModel:
    """One network as streaming runs it: the eval-mode model, the spec of its preprocessing and its input stride."""

    model: nn.Module
    spec: ModelSpec
    stride: int = 32


def open_sources(paths: Sequence[Path], spec: ModelSpec) -> list:
    """Open the image raster and its extra planes; they must share the grid and give the model's band count."""
    sources = []
    try:
        for path in paths:
            sources.append(open_raster(path))
        first = sources[0]
        for path, src in zip(paths[1:], sources[1:]):
            if (src.height, src.width) != (first.height, first.width):
                raise DataError(f"{path}: extra plane is {src.height}x{src.width} but the image {paths[0]} is "
                                f"{first.height}x{first.width}; resample it to the image grid")
        bands = [src.count for src in sources]
        if sum(bands) != spec.in_channels:
            given = str(bands[0]) if len(bands) == 1 else (
                " + ".join(f"{count} ({path.name})" for count, path in zip(bands, paths)) + f" = {sum(bands)}")
            raise DataError(f"{paths[0]}: raster has {given} band(s) but the model takes {spec.in_channels} "
                            f"(image bands + extra channels {spec.extra_channels or 'none'}); give a raster with "
                            "the bands the model was trained on, in the same order")
    except BaseException:
        for src in sources:
            src.close()
        raise
    return sources


def _whole_for_fixed_size(sliding: SlidingWindow, mode: InferenceMode | None, models: Sequence[RasterModel],
                          height: int, width: int) -> SlidingWindow:
    """One window covering the raster when every model has a fixed input size and the user chose no windows."""
    base = mode.base if isinstance(mode, MultiScaleFlip) else mode
    if isinstance(base, SlidingWindow) or not all(member.spec.image_size for member in models):
        return sliding
    return dataclasses.replace(sliding, window=(height, width), stride=(height, width), overlap=None)


def member_bands(member: RasterModel, reader: RowReader, plan: WindowPlan, sliding: SlidingWindow,
                 device: torch.device, on_batch: Callable[[int], None], stats: dict,
                 span: range | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """One model's finished probability row bands (first row, K×n×W) over the rows `reader` streams, running the
    windows `span` (raster-order indices, default all; see `needed_windows`).

    A fixed-input model (`spec.image_size`) gets each window resized to its input size, as a whole image would be.
    """
    wh, ww = plan.window
    window_mode = sliding.window_mode
    if member.spec.image_size:
        window_mode = ResizedInput(tuple(member.spec.image_size), window_mode or WholeImage())
    span = range(len(plan)) if span is None else span
    # The accumulator starts at `offset`, a multiple of the window height at or above the first window, so every
    # row sits in the accumulator ring where one process over the whole raster puts it (the same sums, bit for bit).
    offset = first_window_row(plan, span) // wh * wh
    shifted = dataclasses.replace(plan, height=plan.height - offset,
                                  ys=tuple(y - offset for y in plan.ys if y >= offset))

    def windows():
        rows_of = None
        for y, x in itertools.islice(plan, span.start, span.stop):
            if rows_of != y:
                pixels, valid = reader.rows(y, y + wh)
                rows_of = y
            yield y - offset, x, _normalised_window(pixels[:, :, x:x + ww],
                                                    None if valid is None else valid[:, x:x + ww], member.spec)

    bands = blend_windows(member.model, shifted, windows(), member.stride, batch_size=sliding.batch_size,
                          blend=sliding.blend, sigma_scale=sliding.sigma_scale, average=sliding.average,
                          window_mode=window_mode, device=device, on_batch=on_batch, stats=stats)
    return ((top + offset, band) for top, band in bands)


@dataclass(frozen=True)
class RowPart:
    """One process's share of a raster when `world` processes predict it (`segwise predict --devices N`).

    Process `rank` writes the rows `owned_rows` gives it into `part_path` files; after `barrier()` (every part is
    written) rank 0 merges the parts into the outputs, or with `vrt` writes a GDAL VRT over them instead.
    """

    rank: int
    world: int
    barrier: Callable[[], None]
    vrt: bool = False


def owned_rows(plan: WindowPlan, rank: int, world: int) -> tuple[int, int]:
    """Output rows [start, stop) process `rank` of `world` writes: its block of window rows (contiguous, in order)
    owns the rows from its first window row to the next block's first (the last block: to the bottom). A block is
    empty, and so are its rows, when the raster has fewer window rows than processes."""
    count = len(plan.ys)
    first, after = count * rank // world, count * (rank + 1) // world
    stop = plan.ys[after] if after < count else plan.height
    return (plan.ys[first], stop) if first < after else (stop, stop)


def needed_windows(plan: WindowPlan, rows: tuple[int, int], batch: int) -> range:
    """Raster-order indices of every window that touches rows [start, stop), widened to the batches of `batch`
    windows one process forms: a batched forward may differ from another batch's in the last bit, so running the
    same batches keeps the part's rows equal to one process's."""
    start, stop = rows
    if start >= stop:
        return range(0)
    columns = len(plan.xs)
    first_row = next(i for i, y in enumerate(plan.ys) if y + plan.window[0] > start)
    after_row = next((i for i, y in enumerate(plan.ys) if y >= stop), len(plan.ys))
    return range(first_row * columns // batch * batch, min(-(-after_row * columns // batch) * batch, len(plan)))


def first_window_row(plan: WindowPlan, span: range) -> int:
    """Top row of the first window in `span` (raster-order window indices); 0 for no windows."""
    return plan.ys[span.start // len(plan.xs)] if span else 0


def part_path(path: Path, rank: int) -> Path:
    """Where process `rank` writes its rows of the output `path`: `<stem>.part<rank>.tif` beside it."""
    return path.with_name(f"{path.stem}.part{rank}.tif")


def part_profiles(profiles: dict[str, dict], source, rows: tuple[int, int]) -> dict[str, dict]:
    """The outputs' profiles for a part holding rows [start, stop) of `source`: that height, placed at its rows."""
    window = Window(0, rows[0], source.width, rows[1] - rows[0])
    return {kind: dict(profile, height=rows[1] - rows[0], transform=source.window_transform(window))
            for kind, profile in profiles.items()}


@contextmanager
def written_outputs(paths: dict[str, Path], profiles: dict[str, dict], palette: np.ndarray,
                    masked: set[str]) -> Iterator[dict[str, BlockWriter]]:
    """A `BlockWriter` per output (those in `masked` also write a mask), writing temporary files that replace
    `paths` only when the block ends without an error: no output is ever left half-written."""
    temps = {kind: temp_path(path) for kind, path in paths.items()}  # segwise's temporary names: swept if killed
    datasets = {}
    try:
        Path(next(iter(paths.values()))).parent.mkdir(parents=True, exist_ok=True)
        for kind, profile in profiles.items():
            datasets[kind] = rasterio.open(temps[kind], "w", **profile)
        if profiles["classes"]["dtype"] == "uint8":
            datasets["classes"].write_colormap(1, {i: tuple(int(v) for v in c) for i, c in enumerate(palette)})
        writers = {kind: BlockWriter(ds, profiles[kind]["blockysize"], kind in masked) for kind, ds in datasets.items()}
        yield writers
        for writer in writers.values():
            writer.flush()
    except BaseException:
        for ds in datasets.values():
            ds.close()
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        raise
    for ds in datasets.values():
        ds.close()
    for kind, path in paths.items():
        os.replace(temps[kind], path)


def merge_parts(parts: Sequence[dict[str, Path]], writers: dict[str, BlockWriter]) -> None:
    """Copy the parts (top to bottom) into the merged outputs' writers, a block row at a time, every output in turn
    as `predict_raster` writes them, so the merged files are those one process writes."""
    for paths in parts:
        opened = {kind: open_raster(path) for kind, path in paths.items()}
        try:
            first = opened["classes"]
            step = writers["classes"].block
            for top in range(0, first.height, step):
                window = Window(0, top, first.width, min(step, first.height - top))
                for kind, writer in writers.items():
                    valid = opened[kind].dataset_mask(window=window) > 0 if writer.use_mask else None
                    writer.write(opened[kind].read(window=window), valid)
        finally:
            for src in opened.values():
                src.close()


GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "float32": "Float32"}


def write_vrt(path: Path, profile: dict, parts: Sequence[tuple[tuple[int, int], Path]], palette: np.ndarray | None,
              masked: bool) -> None:
    """A GDAL VRT (XML) that shows the part GeoTIFFs, each holding rows [start, stop), as one raster with the
    profile's size, georeference, nodata and colour table (`palette`); `masked`: their masks as its mask."""
    root = ET.Element("VRTDataset", rasterXSize=str(profile["width"]), rasterYSize=str(profile["height"]))
    if profile.get("crs") is not None:
        ET.SubElement(root, "SRS").text = profile["crs"].to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in profile["transform"].to_gdal())

    def add_sources(band: ET.Element, source_band: str) -> None:
        for (start, stop), part in parts:
            source = ET.SubElement(band, "SimpleSource")
            ET.SubElement(source, "SourceFilename", relativeToVRT="1").text = part.name
            ET.SubElement(source, "SourceBand").text = source_band
            size = dict(xSize=str(profile["width"]), ySize=str(stop - start))
            ET.SubElement(source, "SrcRect", xOff="0", yOff="0", **size)
            ET.SubElement(source, "DstRect", xOff="0", yOff=str(start), **size)

    interpretations = ("Red", "Green", "Blue") if profile.get("photometric") == "RGB" else ()
    for index in range(1, profile["count"] + 1):
        band = ET.SubElement(root, "VRTRasterBand", dataType=GDAL_TYPES[profile["dtype"]], band=str(index))
        if profile.get("nodata") is not None:
            ET.SubElement(band, "NoDataValue").text = repr(float(profile["nodata"]))
        if palette is not None:
            ET.SubElement(band, "ColorInterp").text = "Palette"
            table = ET.SubElement(band, "ColorTable")
            # 256 entries, the nodata one transparent: the table GDAL reads from the merged GeoTIFF
            for value, color in enumerate([*palette, *[(0, 0, 0)] * (256 - len(palette))]):
                alpha = "0" if value == profile.get("nodata") else "255"
                ET.SubElement(table, "Entry", c1=str(color[0]), c2=str(color[1]), c3=str(color[2]), c4=alpha)
        elif interpretations:
            ET.SubElement(band, "ColorInterp").text = interpretations[index - 1]
        add_sources(band, str(index))
    if masked:
        mask = ET.SubElement(ET.SubElement(root, "MaskBand"), "VRTRasterBand", dataType="Byte")
        add_sources(mask, "mask,1")
    ET.indent(root)
    temp = temp_path(path)
    ET.ElementTree(root).write(temp, encoding="unicode")
    os.replace(temp, path)


def join_parts(outputs: dict[str, Path], final: dict[str, Path], profiles: dict[str, dict], palette: np.ndarray,
               masked: set[str], rows: Sequence[tuple[int, int]], vrt: bool) -> None:
    """Rank 0, once every process wrote its `part_path` files (process r: rows[r]): merge them into `outputs` and
    delete them, or with `vrt` write the `final` VRTs over them."""
    parts = [(span, rank) for rank, span in enumerate(rows) if span[0] < span[1]]
    if vrt:
        for kind, path in final.items():
            table = palette if kind == "classes" and profiles[kind]["dtype"] == "uint8" else None
            write_vrt(path, profiles[kind], [(span, part_path(outputs[kind], rank)) for span, rank in parts], table,
                      kind in masked)
        return
    with written_outputs(outputs, profiles, palette, masked) as writers:
        merge_parts([{kind: part_path(path, rank) for kind, path in outputs.items()} for _, rank in parts], writers)
    for _, rank in parts:
        for path in outputs.values():
            part_path(path, rank).unlink()


@torch.inference_mode()
def predict_raster(models: Sequence[RasterModel], src: Path | Sequence[Path], dst: Path, *,
                   mode: InferenceMode | None = None,
                   combine: Callable[[Iterable[torch.Tensor]], torch.Tensor] | None = None,
                   device: torch.device | str | None = None, probs: str | None = None, confidence: bool = False,
                   color: bool = False, overwrite: bool = False, threshold: float | None = None,
                   progress: bool | None = None, whole_image_pixels: int | None = None,
                   part: RowPart | None = None) -> RasterResult:
    """Stream `src` through the models window by window and write the class raster `dst` (+ optional outputs).

    `src`: a raster, or the image raster followed by its extra channel planes (same grid, bands stacked in order).
    `models`: one model, or ensemble members whose probability bands `combine` merges (members may differ in
    architecture and normalisation; each streams its own copy of the rows, so memory grows with their number).
    The first model's spec gives classes and palette.
    `mode` gives window, stride/overlap, blending and TTA (see `streaming_mode`). `probs` is None, "uint8"
    (p·255 rounded) or "float16"; `confidence` writes max p as uint8 (p·255). Existing outputs are an error
    unless `overwrite`; outputs appear only when complete.
    `whole_image_pixels`: models trained at a fixed size (`spec.image_size`) see a raster of at most this many
    pixels whole (one window, resized to their size), as in-memory prediction does; larger ones window by window.
    `part`: this process predicts only its share of the rows (see `RowPart`); the outputs equal one process's.
    """
    paths = [Path(src)] if isinstance(src, (str, os.PathLike)) else [Path(p) for p in src]
    dst = Path(dst)
    if not models:
        raise ConfigError("predict_raster needs at least one model")
    if len(models) > 1 and combine is None:
        raise ConfigError("several models need a `combine` function (see segwise.inference.Ensemble)")
    spec = models[0].spec
    if probs is not None and probs not in PROBS_KINDS:
        raise ConfigError(f"probs must be one of {', '.join(PROBS_KINDS)}, got {probs!r}")
    if threshold is not None and spec.num_classes != 2:
        raise DataError(f"--threshold needs a two-class model; this one has {spec.num_classes} classes")
    outputs = output_paths(dst, color=color, probs=probs, confidence=confidence)
    final = {kind: path.with_suffix(".vrt") for kind, path in outputs.items()} if part and part.vrt else outputs
    existing = [str(p) for p in final.values() if p.exists()]
    if existing and not overwrite:
        raise DataError(f"output exists: {', '.join(existing)}; pass --overwrite (overwrite=True) to replace it, "
                        "or choose another output folder")
    sliding = streaming_mode(mode)
    device = torch.device(device) if device is not None else next(models[0].model.parameters()).device
    palette = np.asarray(spec.palette, dtype=np.uint8)
    stats = RasterStats()
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        sources = open_sources(paths, spec)
        try:
            source = sources[0]
            if whole_image_pixels and source.height * source.width <= whole_image_pixels:
                sliding = _whole_for_fixed_size(sliding, mode, models, source.height, source.width)
            plan = sliding.plan(source.height, source.width)
            rows = owned_rows(plan, part.rank, part.world) if part else (0, source.height)
            span = needed_windows(plan, rows, sliding.batch_size)
            readers = [RowReader(sources, paths, track_valid=index == 0, start=first_window_row(plan, span))
                       for index in range(len(models))]
            profiles = _profiles(source, spec, outputs, probs, readers[0].masked, plan.window[0])
            masked_kinds = {"color", "probs"} if probs == "uint8" else {"color"}  # no nodata value fits these
            masked = masked_kinds & set(profiles) if readers[0].masked else set()
            written = outputs if part is None else {kind: part_path(path, part.rank) for kind, path in outputs.items()}
            written_profiles = profiles if part is None else part_profiles(profiles, source, rows)
            total = len(span) * len(models)
            shown = progress if progress is not None else total >= PROGRESS_MIN_WINDOWS
            start = time.perf_counter()
            band_stats: dict = {}
            if rows[0] < rows[1]:
                with show_progress(total, paths[0].name, "windows", enabled=shown) as counter, \
                        written_outputs(written, written_profiles, palette, masked) as writers:

                    def advance(count: int) -> None:
                        stats.windows += count
                        counter.advance(count)

                    streams = [member_bands(member, reader, plan, sliding, device, advance,
                                            band_stats if i == 0 else {}, span)
                               for i, (member, reader) in enumerate(zip(models, readers))]
                    for bands in zip(*streams):  # every member yields the same row bands: they follow the one plan
                        top, stop = bands[0][0], bands[0][0] + bands[0][1].shape[1]
                        first, last = max(top, rows[0]), min(stop, rows[1])  # the band's rows this process owns
                        if first < last:
                            owned = [band[:, first - top:last - top] for _, band in bands]
                            band = owned[0] if combine is None else combine(owned)
                            valid = readers[0].take_valid(first, last)
                            for kind, array in _outputs(band, profiles, palette, valid, threshold, probs).items():
                                writers[kind].write(array, valid)
                        if stop >= rows[1]:
                            break
            stats.seconds = time.perf_counter() - start
            stats.band_rows = band_stats.get("band_rows", 0)
            stats.input_rows = max(reader.max_rows for reader in readers)
            if part is not None:
                part.barrier()  # every part is written
                if part.rank == 0:
                    join_parts(outputs, final, profiles, palette, masked,
                               [owned_rows(plan, rank, part.world) for rank in range(part.world)], part.vrt)
        finally:
            for opened in sources:
                opened.close()
    return RasterResult(final["classes"], final.get("color"), final.get("probs"), final.get("confidence"), stats)
