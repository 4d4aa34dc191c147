"""`Predictor`: a trained model plus its preprocessing, turning H×W×C arrays into class probabilities."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from segwise.data.transforms import normalize
from segwise.engine.checkpoint import ModelSpec, load_model
from segwise.errors import DataError
from segwise.inference.raster import RasterResult, predict_raster
from segwise.inference.whole import InferenceMode, WholeImage
from segwise.models import input_stride


def pick_device(device: str | None) -> torch.device:
    """`None`/'auto' → CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """Preprocess exactly as in training (normalisation, optional fixed size), run a mode, return probabilities."""

    def __init__(self, model: nn.Module, spec: ModelSpec, device: str | torch.device | None = None,
                 mode: InferenceMode | None = None) -> None:
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        # channels_last: convolutions run 1.3x faster on the CPU (oneDNN) and use tensor cores on the GPU; the
        # results equal the default layout's to float rounding. Only 4-D weights change; other models are as they were.
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.spec = spec
        self.mode = mode or WholeImage()
        self.stride = input_stride(model)

    @classmethod
    def from_path(cls, path: Path, device: str | None = None, mode: InferenceMode | None = None) -> Predictor:
        """Load from a run directory, model.yaml/model.safetensors or a Lightning .ckpt."""
        model, spec = load_model(path)
        return cls(model, spec, device, mode)

    def _to_tensor(self, image: np.ndarray, source: str) -> torch.Tensor:
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[2] != self.spec.in_channels:
            raise DataError(f"{source}: image has {image.shape[2]} channels but the model takes "
                            f"{self.spec.in_channels} (extra channel folders: {self.spec.extra_channels or 'none'}); "
                            "give the input the same bands as the training data")
        if self.spec.image_size:
            height, width = self.spec.image_size
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
            if image.ndim == 2:
                image = image[..., None]
        array = normalize(image, self.spec.mean, self.spec.std)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]

    @torch.inference_mode()
    def predict_proba(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """H×W×C image → K×H×W float32 probabilities at the input's own size."""
        height, width = image.shape[:2]
        probs = self.mode(self.model, self._to_tensor(image, source).to(self.device), self.stride)[0]
        if probs.shape[-2:] != (height, width):
            probs = torch.nn.functional.interpolate(probs[None], size=(height, width), mode="bilinear",
                                                    align_corners=False)[0]
        return probs.cpu().numpy()

    def labels(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Argmax, or for a two-class model `P(class 1) >= threshold` when a threshold is given."""
        if threshold is not None:
            if probs.shape[0] != 2:
                raise DataError(f"--threshold needs a two-class model; this one has {probs.shape[0]} classes")
            return (probs[1] >= threshold).astype(np.int64)
        return probs.argmax(0).astype(np.int64)

    def predict(self, image: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """H×W×C image → H×W class indices."""
        return self.labels(self.predict_proba(image), threshold)

    def predict_raster(self, src: Path, dst: Path, *, probs: str | None = None, confidence: bool = False,
                       color: bool = False, overwrite: bool = False, threshold: float | None = None,
                       progress: bool | None = None) -> RasterResult:
        """Stream a raster of any size window by window into GeoTIFF outputs (see `segwise.inference.raster`).

        Uses this predictor's mode (sliding settings and TTA; `WholeImage` becomes 1024-pixel windows).
        Fixed-size models (`spec.image_size`) see windows at the raster's own resolution, not resized.
        """
        return predict_raster(self.model, self.spec, src, dst, mode=self.mode, stride=self.stride,
                              device=self.device, probs=probs, confidence=confidence, color=color,
                              overwrite=overwrite, threshold=threshold, progress=progress)
