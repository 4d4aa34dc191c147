"""Read images and masks from disk as numpy arrays, with errors that name the file and the fix."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import cv2
import numpy as np
import tifffile

from segwise.errors import DataError
from segwise.io_utils import atomic_write_bytes, atomic_write_stream

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
"""File suffixes read as images or masks (compared case-insensitively)."""

_TIFF_EXTENSIONS = (".tif", ".tiff")
_JPEG_EXTENSIONS = (".jpg", ".jpeg")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type → samples per pixel
_PNG_LIMIT = (1100, 2**16)  # deflate expands at most 1032:1: a PNG holds at most 1100 × its size in pixel bytes
_TIFF_LIMIT = (4096, 2**26)  # LZW reaches ~2700:1; past 64 MiB a TIFF claiming more than 4096 × its size is damaged


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix is one of IMAGE_EXTENSIONS (any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as H×W×C (RGB order for colour files), keeping uint8/uint16/float32 pixel values."""
    path = Path(path)
    if path.suffix.lower() in _TIFF_EXTENSIONS:
        array = _read_tiff(path)
    else:
        array, _ = _read_cv2(path)
    return _as_hwc(array, path)


def read_mask(path: str | Path, colours: bool = False) -> np.ndarray:
    """Read a mask as H×W raw values, or H×W×3 RGB for colour masks (alpha dropped, grey RGB collapsed).

    Palette PNGs return their stored palette indices (as VOC-style masks mean them), or with `colours=True` (a
    class map given by colours) the colours they display, so palette and RGB files of one data set read alike.
    """
    path = Path(path)
    if path.suffix.lower() in _TIFF_EXTENSIONS:
        array = _as_hwc(_read_tiff(path, one_page=True), path, keep_integers=True)
    else:
        array, data = _read_cv2(path)
        array = _as_hwc(array, path, keep_integers=True)
        palette = _png_palette(data)
        if palette is not None and array.shape[2] >= 3 and not colours:
            return _palette_indices(array[..., :3], palette)
    if array.shape[2] == 1:
        return array[..., 0]
    if array.shape[2] == 2:
        raise DataError(f"{path}: mask has 2 channels; save it as a single-channel index PNG/TIFF or as RGB colours.")
    rgb = array[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])
    return np.ascontiguousarray(rgb)


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8/uint16 H×W, H×W×1, RGB or RGBA array as PNG, creating parent folders.

    The write is atomic: a killed or failed write never leaves a truncated PNG under `path`, and an existing file
    there (an earlier, possibly damaged output) is replaced, never refused.
    """
    path = Path(path)
    if array.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: cannot write {array.dtype} pixels as PNG; convert to uint8 or uint16 first.")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    elif array.ndim != 2:
        raise DataError(f"{path}: cannot write an array of shape {array.shape} as PNG; use H×W, RGB or RGBA.")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise DataError(f"{path}: OpenCV could not encode the PNG.")
    atomic_write_bytes(path, encoded.tobytes())
    return path


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    """Write `array` as a `.npy` file atomically (replacing an existing one), creating parent folders."""
    path = Path(path)
    atomic_write_stream(path, lambda handle: np.save(handle, array))
    return path


def write_tiff(path: str | Path, array: np.ndarray) -> Path:
    """Write an H×W×C array as a band-interleaved TIFF atomically (any band count and pixel type PNG cannot hold)."""
    path = Path(path)
    if array.ndim == 3 and array.shape[2] == 1:  # tifffile refuses one contiguous band: store it as H×W
        array = array[..., 0]
    atomic_write_stream(path, lambda handle: tifffile.imwrite(handle, array, photometric="minisblack",
                                                              planarconfig="contig"))
    return path


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path or the data folder layout.")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes); re-export or re-download it, or remove it.")


def _read_bytes(path: Path) -> bytes:
    _check_file(path)
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error}); check permissions.") from None


def _read_cv2(path: Path) -> tuple[np.ndarray, bytes]:
    """Decode PNG/JPEG/BMP with OpenCV (BGR→RGB); return the array and the raw file bytes."""
    data = _read_bytes(path)
    suffix = path.suffix.lower()
    if data.startswith(_PNG_SIGNATURE) and _PNG_END not in data[-32:]:
        raise DataError(f"{path}: PNG is truncated (no IEND chunk); re-export or re-download it, or remove it.")
    if suffix in _JPEG_EXTENSIONS and not data.rstrip(b"\x00\r\n\t ").endswith(_JPEG_END):
        raise DataError(f"{path}: JPEG is truncated (no end marker); re-export or re-download it, or remove it.")
    if data.startswith(_PNG_SIGNATURE):
        _check_png_chunks(path, data)
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:  # OpenCV asserts on headers it refuses (e.g. more than 2**30 pixels)
        raise DataError(f"{path}: OpenCV cannot decode it ({_cv2_reason(error)}); re-export it, or save a very large "
                        "image as a tiled GeoTIFF (which `segwise predict` streams) or tile it (`segwise data tile`)"
                        ) from None
    if array is None:
        raise DataError(
            f"{path}: not a readable image (corrupt, or not really {suffix or 'an image'}); "
            "re-export it as PNG/TIFF or remove it."
        )
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
    return array, data


def _check_png_chunks(path: Path, data: bytes) -> None:
    """Every chunk must fit in the file and the header may not claim more pixels than the file can hold: OpenCV
    would allocate what a damaged length or size field says (gigabytes, or an assertion) before failing."""
    offset = len(_PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if offset + 12 + length > len(data):
            raise DataError(f"{path}: PNG chunk {kind.decode('latin-1')!r} at byte {offset} claims {length:,} bytes "
                            f"but the file has {len(data):,}; the file is damaged (re-export or re-download it, or "
                            "remove it)")
        if kind == b"IHDR" and length >= 10:
            _check_claimed_size(path, *_png_header(data[offset + 8 : offset + 18]), len(data), _PNG_LIMIT)
        if kind == b"IEND":
            return
        offset += 12 + length


def _png_header(ihdr: bytes) -> tuple[tuple[int, int], int]:
    """(height, width) and the decoded byte count an IHDR chunk claims (rows of filter byte + packed samples)."""
    width, height, depth, colour = struct.unpack(">IIBB", ihdr[:10])
    row_bytes = 1 + -(-width * _PNG_CHANNELS.get(colour, 4) * max(depth, 1) // 8)
    return (height, width), height * row_bytes


def _check_claimed_size(path: Path, shape: tuple[int, ...], claimed: int, file_bytes: int,
                        limit: tuple[int, int]) -> None:
    """Refuse a header that claims far more pixel bytes than the file can hold (more than `limit` = (ratio, floor):
    ratio × the file size, and at least floor), before anything is allocated or decoded."""
    ratio, floor = limit
    if claimed > max(floor, ratio * file_bytes):
        raise DataError(f"{path}: the header claims {'×'.join(map(str, shape))} pixels ({claimed:,} bytes), more than "
                        f"its {file_bytes:,} bytes can hold; the file is damaged (re-export or re-download it, or "
                        "remove it)")


def _cv2_reason(error: Exception) -> str:
    """The useful part of an OpenCV error (its message starts with the C++ source location)."""
    text = " ".join(str(error).split())
    return text.split(") ", 1)[-1][:200] if "error: (" in text else text[:200]


def _read_tiff(path: Path, one_page: bool = False) -> np.ndarray:
    """Read the first TIFF series with bands last: by the stored axes, else the smaller of first/last axis.

    one_page (masks): a file of several pages is refused rather than read as bands.
    """
    _check_file(path)
    try:
        with tifffile.TiffFile(path) as tiff:
            len(tiff.pages)  # indexes every page first: tifffile's series would loop forever on a circular IFD chain
            series = tiff.series[0]
            _check_claimed_size(path, series.shape, math.prod(series.shape) * series.dtype.itemsize,
                                path.stat().st_size, _TIFF_LIMIT)
            if one_page:
                _check_one_page(path, series.axes, series.shape)
            axes, array = series.axes, series.asarray()
    except DataError:
        raise
    except Exception as error:  # tifffile raises many types for damaged files
        raise DataError(
            f"{path}: TIFF cannot be read ({type(error).__name__}: {error}); re-export it or remove it."
        ) from None
    while array.ndim > 3 and 1 in array.shape:
        axis = array.shape.index(1)
        array, axes = array.squeeze(axis=axis), axes[:axis] + axes[axis + 1 :]
    if array.ndim == 3 and axes[-1] != "S" and (axes[0] in "SC" or array.shape[0] < array.shape[-1]):
        array = np.moveaxis(array, 0, -1)
    return array


def _check_one_page(path: Path, axes: str, shape: tuple[int, ...]) -> None:
    """A mask is one page of class values (or one RGB page); pages, planes or time steps would be mixed up."""
    extra = [f"{axis}={size}" for axis, size in zip(axes, shape) if axis not in "YXS" and size > 1]
    if extra:
        raise DataError(f"{path}: mask TIFF holds several pages ({', '.join(extra)} in axes {axes}, shape {shape}); "
                        "a mask is one page of class values: save each mask as a single-page TIFF or PNG")


def _as_hwc(array: np.ndarray, path: Path, keep_integers: bool = False) -> np.ndarray:
    """Give a decoded array a channel axis and a supported dtype (bool → uint8, other numbers → float32).

    keep_integers keeps every integer dtype (masks: class values must stay exact).
    """
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or min(array.shape) == 0:
        raise DataError(f"{path}: unsupported image shape {array.shape}; expected H×W, H×W×C or C×H×W.")
    integer = np.issubdtype(array.dtype, np.integer)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype in (np.uint8, np.uint16, np.float32) or (keep_integers and integer):
        pass
    elif integer or np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    else:
        raise DataError(f"{path}: unsupported pixel type {array.dtype}; save it as uint8, uint16 or float32.")
    return np.ascontiguousarray(array)


def _png_palette(data: bytes) -> np.ndarray | None:
    """Return the PLTE colours (N×3 uint8) of an indexed-colour PNG, else None."""
    if not data.startswith(_PNG_SIGNATURE) or len(data) < 33 or data[25] != 3:
        return None
    offset = len(_PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"PLTE":
            colours = np.frombuffer(data[offset + 8 : offset + 8 + length], np.uint8)
            return colours[: len(colours) // 3 * 3].reshape(-1, 3)
        if kind in (b"IDAT", b"IEND"):
            return None
        offset += 12 + length
    return None


def _palette_indices(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map decoded palette colours back to their palette index (lowest index for repeated colours)."""
    unique_codes, first = np.unique(pack_rgb(palette), return_index=True)
    index = first.astype(np.uint8)
    pixel_codes = pack_rgb(rgb)
    position = np.clip(np.searchsorted(unique_codes, pixel_codes), 0, len(unique_codes) - 1)
    return index[position]


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack the last axis (R, G, B) of an 8- or 16-bit array into one int64 code per pixel (16 bits a channel)."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 32) | (rgb[..., 1] << 16) | rgb[..., 2]
