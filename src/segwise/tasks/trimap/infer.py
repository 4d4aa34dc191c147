"""Trimap inference: predict 0/128/255 trimaps for matting folders and evaluate them per data set (IoU, and
optionally the alpha mattes they lead to).

The model input is RGB + the prompt mask as a 4th channel (see `segwise.models.trimap_vit`), so the inference
modes (whole image, sliding windows, TTA) run unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from segwise.data.io import write_png
from segwise.data.transforms import normalize
from segwise.data.matting import (
    MattingSample,
    find_matting_samples,
    model_input,
    prompt_from_alpha,
    read_grey,
    read_rgb,
    sample_target,
    trimap_png,
)
from segwise.data.matting_layouts import AUTO
from segwise.models.spec import ModelSpec
from segwise.errors import CheckpointError, ConfigError
from segwise.inference.predictor import Predictor
from segwise.inference.whole import InferenceMode
from segwise.io_utils import atomic_write_text, ensure_writable_dir
from segwise.metrics.confusion import nan_to_none
from segwise.metrics.trimap import Averaging, TrimapMeter, format_trimap_table, matting_errors
from segwise.progress import track
from segwise.visualize import overlay

PALETTE = [[0, 0, 0], [128, 128, 128], [255, 255, 255]]
OVERLAY_PALETTE = np.array([[40, 60, 200], [255, 200, 0], [0, 200, 90]], np.uint8)  # BG blue, unknown amber, FG green
DEFAULT_SIZE = 448
MATTING_METHODS = ("cf", "knn", "lkm", "rw", "sm", "lbdm")


def input_size(spec: ModelSpec) -> int:
    """Longest image side fed to the model: the ViT's `img_size` (its position grid), else 448 as in the trimap ViT."""
    return int(spec.args.get("img_size", DEFAULT_SIZE))


# ---- inference ------------------------------------------------------------------------------------------------
def load_predictor(model_path: Path, device: str | None = None, mode: InferenceMode | None = None) -> Predictor:
    predictor = Predictor.from_path(model_path, device, mode)
    if predictor.spec.in_channels != 4 or predictor.spec.num_classes != 3:
        raise CheckpointError(f"{model_path} is not a trimap model (it takes {predictor.spec.in_channels} channels "
                              f"and predicts {predictor.spec.num_classes} classes; expected 4 and 3)")
    return predictor


def predict_probs(predictor: Predictor, images: Sequence[np.ndarray], prompts: Sequence[np.ndarray],
                  size: int) -> list[np.ndarray]:
    """3×H×W probabilities of each image with its prompt: resized so the longest side is `size` (as in training),
    predicted, resized back. Inputs of one resized shape run as one batch; no input is padded for another, so a
    batch gives what one image at a time gives."""
    inputs = []
    for image, prompt in zip(images, prompts):
        height, width = image.shape[:2]
        scale = size / max(height, width)
        new = (max(round(width * scale), 1), max(round(height * scale), 1))
        pixels = model_input(cv2.resize(image, new, interpolation=cv2.INTER_LINEAR),
                             cv2.resize(prompt, new, interpolation=cv2.INTER_NEAREST))
        inputs.append(normalize(pixels, predictor.spec.mean, predictor.spec.std).transpose(2, 0, 1))
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, pixels in enumerate(inputs):
        by_shape.setdefault(pixels.shape, []).append(index)
    probs: list[np.ndarray] = [np.empty(0)] * len(inputs)
    with torch.inference_mode():
        for indices in by_shape.values():
            batch = torch.from_numpy(np.stack([inputs[i] for i in indices])).to(predictor.device)
            out = predictor.image_mode(predictor.model, batch, predictor.stride)
            for i, one in zip(indices, out):
                shape = images[i].shape[:2]
                probs[i] = F.interpolate(one[None], size=shape, mode="bilinear", align_corners=False)[0].cpu().numpy()
    return probs


def predicted(predictor: Predictor, samples: Sequence[MattingSample], *, size: int, prompt_threshold: int,
              batch: int, label: str) -> Iterator[tuple[MattingSample, np.ndarray, np.ndarray, np.ndarray]]:
    """(sample, image, alpha, predicted classes) of each sample, `batch` samples read and predicted at a time;
    `label` names the progress."""
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    pending = iter(track(samples, label, unit="images"))
    while chunk := list(islice(pending, batch)):
        images = [read_rgb(sample.image) for sample in chunk]
        alphas = [read_grey(sample.alpha, image.shape[:2]) for sample, image in zip(chunk, images)]
        probs = predict_probs(predictor, images, [prompt_from_alpha(a, prompt_threshold) for a in alphas], size)
        yield from zip(chunk, images, alphas, (p.argmax(0) for p in probs))


def predict(model_path: Path, inputs: Path, out_dir: Path, *, overlay_images: bool = False, size: int | None = None,
            prompt_threshold: int = 30, layout: str = AUTO, batch: int = 1, device: str | None = None,
            mode: InferenceMode | None = None) -> list[Path]:
    """Write `<out>/<name>.png` trimaps (0/128/255) for a matting folder in any layout (images with their prompts:
    binary masks or alpha mattes), `batch` images per forward; `overlay_images` adds `<out>/overlay/<name>.png`."""
    predictor = load_predictor(model_path, device, mode)
    size = size or input_size(predictor.spec)
    samples = find_matting_samples(inputs, require_alpha=True, layout=layout)
    out_dir = ensure_writable_dir(out_dir)
    written = []
    for sample, image, _, classes in predicted(predictor, samples, size=size, prompt_threshold=prompt_threshold,
                                               batch=batch, label="predicting trimaps"):
        written.append(write_png(out_dir / f"{sample.name}.png", trimap_png(classes)))
        if overlay_images:
            write_png(out_dir / "overlay" / f"{sample.name}.png", overlay(image, classes, OVERLAY_PALETTE))
    return written


# ---- evaluation -----------------------------------------------------------------------------------------------
def solve_alpha(image: np.ndarray, classes: np.ndarray, method: str = "cf") -> np.ndarray:
    """Alpha matte in [0, 1] from an RGB image and a trimap (classes) with a pymatting solver (closed form by
    default); a trimap without both known background and foreground gives its own 0/0.5/1 map."""
    if method not in MATTING_METHODS:
        raise ConfigError(f"--matte {method!r} is unknown; choose one of {', '.join(MATTING_METHODS)}")
    trimap = classes.astype(np.float64) / 2
    if not ((classes == 0).any() and (classes == 2).any()) or not (classes == 1).any():
        return trimap
    import pymatting  # imported here: numba compiles it on first use

    solver = getattr(pymatting, f"estimate_alpha_{method}")
    return np.clip(solver(image.astype(np.float64) / 255, trimap), 0, 1)


def evaluate_dataset(predictor: Predictor, samples: list[MattingSample], *, size: int, band: int = 0,
                     prompt_threshold: int = 30, averaging: Averaging = "image", matte: str | None = None,
                     save_dir: Path | None = None, name: str = "", batch: int = 1) -> dict[str, Any]:
    """Trimap IoUs (per image and dataset-level) of one data set, plus mean SAD/MSE/gradient error of the alpha the
    predicted trimaps give (whole image, against the GT alpha) when `matte` names a pymatting solver; `name` labels
    its progress."""
    meter = TrimapMeter(predictor.spec.ignore_index, averaging)
    errors: list[dict[str, float]] = []
    for sample, image, alpha, classes in predicted(predictor, samples, size=size, prompt_threshold=prompt_threshold,
                                                   batch=batch, label=f"evaluating {name}".rstrip()):
        target = sample_target(sample, alpha, band)
        meter.update(torch.from_numpy(classes), torch.from_numpy(target.astype(np.int64)))
        if save_dir is not None:  # the trimap, and the image with its three classes over it (for reports)
            write_png(save_dir / f"{sample.name}.png", trimap_png(classes))
            write_png(save_dir / "overlay" / f"{sample.name}.png", overlay(image, classes, OVERLAY_PALETTE))
        if matte:
            errors.append(matting_errors(solve_alpha(image, classes, matte), alpha / 255.0))
    result = meter.compute()
    for key in ("sad", "mse", "grad"):
        if errors:
            result[key] = float(np.mean([e[key] for e in errors]))
    return result


def evaluate(model_path: Path, datasets: Sequence[Path], out_dir: Path | None = None, *, size: int | None = None,
             trimap_dir: str | None = None, band: int = 0, prompt_threshold: int = 30,
             averaging: Averaging = "image", matte: str | None = None, save: bool = False, layout: str = AUTO,
             batch: int = 1, device: str | None = None,
             mode: InferenceMode | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate on several matting folders (each in its own layout unless `layout` names one) in one call; writes
    `trimap_metrics.json` and returns {name: metrics}."""
    if matte is not None and matte not in MATTING_METHODS:
        raise ConfigError(f"--matte {matte!r} is unknown; choose one of {', '.join(MATTING_METHODS)}")
    predictor = load_predictor(model_path, device, mode)
    size = size or input_size(predictor.spec)
    # every folder checked up front
    found = {Path(d).name: find_matting_samples(d, trimap_dir, layout=layout) for d in datasets}
    if len(found) != len(datasets):
        raise ConfigError(f"data sets must have distinct folder names, got {[str(d) for d in datasets]}")
    out_dir = ensure_writable_dir(out_dir or default_eval_dir(model_path))
    results = {name: evaluate_dataset(predictor, samples, size=size, band=band, prompt_threshold=prompt_threshold,
                                      averaging=averaging, matte=matte,
                                      save_dir=out_dir / name if save else None, name=name, batch=batch)
               for name, samples in found.items()}
    atomic_write_text(out_dir / "trimap_metrics.json", json.dumps(nan_to_none(results), indent=2) + "\n")
    return results


def default_eval_dir(model_path: Path) -> Path:
    """Where `evaluate` writes without an output folder: `<run>/eval` (the run of a model file)."""
    model_path = Path(model_path)
    return (model_path if model_path.is_dir() else model_path.parent) / "eval"


def format_results(results: dict[str, dict[str, Any]]) -> str:
    return format_trimap_table(results, columns=("sad", "mse", "grad"))

