"""`Predictor`: a trained model plus its preprocessing, turning H×W×C arrays into class probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from segwise.data.transforms import normalize
from segwise.models import model_entry
from segwise.models.spec import ModelSpec, load_model, peek_spec
from segwise.errors import DataError
from segwise.inference.onnx_backend import OnnxModel, Runtime, load_onnx, runtime_model
from segwise.inference.raster import RasterModel, RasterResult, predict_raster
from segwise.inference.whole import InferenceMode, ResizedInput, WholeImage
from segwise.models import input_stride


def pick_device(device: str | None) -> torch.device:
    """`None`/'auto' → CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The eval-mode `model` with each BatchNorm that follows a convolution folded into the convolution's weights.

    BatchNorm is ~9 % of a ResNet-Unet's CPU forward and folding it is exact up to float rounding. torch.fx traces
    the model; a model it cannot trace, whose output is not one tensor, or whose folded copy disagrees with it on
    `example` is returned as it is.
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    try:
        folded = fuse(model.eval())  # a traced copy; the model itself is not changed
    except Exception:  # noqa: BLE001 - fx raises several types for Python control flow it cannot trace
        return model
    with torch.inference_mode():
        expected, got = model(example), folded(example)
    if not (isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor) and got.shape == expected.shape):
        return model
    tolerance = 1e-4 * float(expected.abs().max()) + 1e-5
    return folded if torch.allclose(got, expected, rtol=1e-4, atol=tolerance) else model


PIXEL_TASKS = ("semantic", "trimap")  # models whose input is an image and whose output is per-pixel logits


class Predictor:
    """Preprocess exactly as in training (normalisation, optional fixed size), run a mode, return probabilities."""

    def __init__(self, model: nn.Module | OnnxModel, spec: ModelSpec, device: str | torch.device | None = None,
                 mode: InferenceMode | None = None, runtime: Runtime | None = None) -> None:
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        self.spec = spec
        self.mode = mode or WholeImage()
        self.runtime = runtime or Runtime()
        self.stride = input_stride(model)
        if isinstance(model, OnnxModel):  # an exported graph: BatchNorm already folded, layout its own
            self.model = model
            return
        example = torch.randn(1, spec.in_channels, *(spec.image_size or (2 * self.stride, 2 * self.stride)),
                              generator=torch.Generator().manual_seed(0))
        model = fold_batchnorm(model.eval(), example.to(next(model.parameters()).device))
        # channels_last: convolutions run 1.3x faster on the CPU (oneDNN) and use tensor cores on the GPU; the
        # results equal the default layout's to float rounding. Only 4-D weights change; other models are as they were.
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()

    @property
    def image_mode(self) -> InferenceMode:
        """The mode an in-memory image runs: for a model trained at a fixed size (`spec.image_size`) the whole
        normalised image is resized to it and the probabilities back, exactly as a streamed raster that fits in one
        window is (`predict_raster(whole_image_pixels=...)`), so both give the same labels."""
        return ResizedInput(tuple(self.spec.image_size), self.mode) if self.spec.image_size else self.mode

    @classmethod
    def from_path(cls, path: Path, device: str | torch.device | None = None, mode: InferenceMode | None = None,
                  runtime: Runtime | None = None) -> Predictor:
        """Load a pixel model (semantic or trimap) from a run directory, model.yaml/model.safetensors, a .ckpt or an
        exported .onnx file, run by `runtime` (default: eager torch); a model of another task (e.g. a sketch model)
        is refused before its weights are read. onnxruntime runs on the CPU."""
        runtime = runtime or Runtime()
        runtime.check()
        if runtime.backend == "onnxruntime" or Path(path).suffix.lower() == ".onnx":
            device = "cpu" if device in (None, "auto") else device
            if torch.device(device).type != "cpu":
                raise DataError(f"--device {device}: onnxruntime runs on the CPU here; use --device cpu, or "
                                "--backend torch for the GPU")
        if Path(path).suffix.lower() == ".onnx":
            model, spec = load_onnx(path, replace(runtime, backend="onnxruntime"))
            return cls(model, spec, device, mode, runtime)
        model_entry(peek_spec(path).name, PIXEL_TASKS)
        model, spec = load_model(path)
        predictor = cls(model, spec, device, mode, runtime)
        predictor.model = runtime_model(predictor.model, spec, predictor.stride, Path(path), runtime)
        return predictor

    def _to_tensor(self, image: np.ndarray, source: str) -> torch.Tensor:
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[2] != self.spec.in_channels:
            raise DataError(f"{source}: image has {image.shape[2]} channels but the model takes "
                            f"{self.spec.in_channels} (extra channel folders: {self.spec.extra_channels or 'none'}); "
                            "give the input the same bands as the training data")
        array = normalize(image, self.spec.mean, self.spec.std)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]

    def predict_proba(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """H×W×C image → K×H×W float32 probabilities at the input's own size."""
        return self.predict_proba_batch([image], source)[0]

    @torch.inference_mode()
    def predict_proba_batch(self, images: Sequence[np.ndarray], source: str = "image") -> np.ndarray:
        """N images of one size → N×K×H×W float32 probabilities from one forward of the mode (the server's
        micro-batches); `predict_proba` is this with N = 1, so both give the same labels."""
        height, width = images[0].shape[:2]
        if any(image.shape[:2] != (height, width) for image in images):
            raise DataError(f"{source}: a batch needs images of one size, got "
                            f"{sorted({image.shape[:2] for image in images})}; group the images by size")
        batch = torch.cat([self._to_tensor(image, source) for image in images]).to(self.device)
        probs = self.image_mode(self.model, batch, self.stride)
        if probs.shape[-2:] != (height, width):
            probs = torch.nn.functional.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
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

    def raster_model(self) -> RasterModel:
        """The network as `predict_raster` streams it."""
        return RasterModel(self.model, self.spec, self.stride)

    def predict_raster(self, src: Path | Sequence[Path], dst: Path, **options: Any) -> RasterResult:
        """Stream a raster of any size window by window into GeoTIFF outputs with this predictor's mode (sliding
        settings and TTA; `WholeImage` becomes 1024-pixel windows). `src` and `options` (probs, confidence, color,
        overwrite, threshold, progress) as in `segwise.inference.predict_raster`.
        """
        return predict_raster([self.raster_model()], src, dst, mode=self.mode, device=self.device, **options)
