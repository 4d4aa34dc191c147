"""Uploaded files in, PNG bytes out: decode an upload as `segwise predict` reads a file, refuse what it cannot run."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np

from segwise.data.io import read_image
from segwise.errors import DataError
from segwise.inference.raster import raster_size

# leading bytes → the suffix the image reader decodes them by
SIGNATURES = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg", b"II*\x00": ".tif", b"MM\x00*": ".tif",
              b"II+\x00": ".tif", b"MM\x00+": ".tif"}

# raster_size silences rasterio's warning with warnings.catch_warnings, which is not thread-safe: one at a time
_HEADER_LOCK = threading.Lock()


class UploadError(Exception):
    """A request the server refuses: answered with `status` and `{"error": message}`; the server keeps serving."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def image_suffix(data: bytes, name: str) -> str:
    """The file type of an upload, from its first bytes (the file name may lie)."""
    if not data:
        raise UploadError(400, f"{name}: the upload is empty (0 bytes); send a PNG, JPEG or TIFF file")
    for signature, suffix in SIGNATURES.items():
        if data.startswith(signature):
            return suffix
    raise UploadError(415, f"{name}: not a PNG, JPEG or TIFF image (it starts with {data[:8]!r}); send one of those")


def decode_upload(data: bytes, name: str, bands: int, max_pixels: int) -> np.ndarray:
    """Upload bytes → H×W×C array, exactly as `segwise predict` reads the same file (`read_image`), after checking
    its size against `max_pixels` from the header alone and before its band count against the model's `bands`."""
    suffix = image_suffix(data, name)
    with tempfile.TemporaryDirectory(prefix="segwise-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            with _HEADER_LOCK:
                height, width = raster_size(path)
            if height * width > max_pixels:
                raise UploadError(413, f"{name}: {height}×{width} = {height * width:,} pixels is over the server's "
                                       f"limit of {max_pixels:,} (--max-pixels); send a smaller image or tile it "
                                       "(`segwise data tile`), or restart the server with a larger --max-pixels")
            image = read_image(path)
        except DataError as error:
            raise UploadError(400, str(error).replace(str(path), name)) from None
    if image.shape[2] != bands:
        raise UploadError(422, f"{name}: the image has {image.shape[2]} band(s) but the model takes {bands}; send an "
                               f"image with the training data's {bands} band(s)")
    return image


def encode_png(array: np.ndarray) -> bytes:
    """H×W (uint8/uint16) or H×W×3 RGB uint8 → PNG file bytes."""
    ok, encoded = cv2.imencode(".png", array[..., ::-1] if array.ndim == 3 else array)
    if not ok:
        raise UploadError(500, f"OpenCV could not encode a {array.dtype} array of shape {array.shape} as PNG")
    return encoded.tobytes()
