"""Trimap inference: predict 0/128/255 trimaps for matting folders and evaluate them per data set (IoU, and
optionally the alpha mattes they lead to).

The model input is RGB + the prompt mask as a 4th channel (see `segwise.models.trimap_vit`), so the inference
modes (whole image, sliding windows, TTA) run unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from segwise.data.io import write_png
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


def predict_probs(predictor: Predictor, image: np.ndarray, prompt: np.ndarray, size: int,
                  source: str = "image") -> np.ndarray:
    """3×H×W probabilities: resize so the longest side is `size` (as in training), predict, resize back."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new = (max(round(width * scale), 1), max(round(height * scale), 1))
    pixels = model_input(cv2.resize(image, new, interpolation=cv2.INTER_LINEAR),
                         cv2.resize(prompt, new, interpolation=cv2.INTER_NEAREST))
    probs = torch.from_numpy(predictor.predict_proba(pixels, source))
    return F.interpolate(probs[None], size=(height, width), mode="bilinear", align_corners=False)[0].numpy()


def predict(model_path: Path, inputs: Path, out_dir: Path, *, overlay_images: bool = False, size: int | None = None,
            prompt_threshold: int = 30, device: str | None = None, mode: InferenceMode | None = None) -> list[Path]:
    """Write `<out>/<name>.png` trimaps (0/128/255) for a folder with original/ (or images/) and mask/ (or alpha/)
    prompts (binary masks or alpha mattes); `overlay_images` adds `<out>/overlay/<name>.png`."""
    predictor = load_predictor(model_path, device, mode)
    size = size or input_size(predictor.spec)
    out_dir = ensure_writable_dir(out_dir)
    written = []
    for sample in track(find_matting_samples(inputs, require_alpha=True), "predicting trimaps", unit="images"):
        image = read_rgb(sample.image)
        prompt = prompt_from_alpha(read_grey(sample.alpha, image.shape[:2]), prompt_threshold)
        classes = predict_probs(predictor, image, prompt, size, str(sample.image)).argmax(0)
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
                     save_dir: Path | None = None, name: str = "") -> dict[str, Any]:
    """Trimap IoUs (per image and dataset-level) of one data set, plus mean SAD/MSE/gradient error of the alpha the
    predicted trimaps give (whole image, against the GT alpha) when `matte` names a pymatting solver; `name` labels
    its progress."""
    meter = TrimapMeter(predictor.spec.ignore_index, averaging)
    errors: list[dict[str, float]] = []
    for sample in track(samples, f"evaluating {name}".rstrip(), unit="images"):
        image = read_rgb(sample.image)
        alpha = read_grey(sample.alpha, image.shape[:2])
        target = sample_target(sample, alpha, band)
        probs = predict_probs(predictor, image, prompt_from_alpha(alpha, prompt_threshold), size, str(sample.image))
        classes = probs.argmax(0)
        meter.update(torch.from_numpy(classes), torch.from_numpy(target.astype(np.int64)))
        if save_dir is not None:
            write_png(save_dir / f"{sample.name}.png", trimap_png(classes))
        if matte:
            errors.append(matting_errors(solve_alpha(image, classes, matte), alpha / 255.0))
    result = meter.compute()
    for key in ("sad", "mse", "grad"):
        if errors:
            result[key] = float(np.mean([e[key] for e in errors]))
    return result


def evaluate(model_path: Path, datasets: Sequence[Path], out_dir: Path | None = None, *, size: int | None = None,
             trimap_dir: str | None = None, band: int = 0, prompt_threshold: int = 30,
             averaging: Averaging = "image", matte: str | None = None, save: bool = False,
             device: str | None = None, mode: InferenceMode | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate on several matting folders in one call; writes `trimap_metrics.json` and returns {name: metrics}."""
    if matte is not None and matte not in MATTING_METHODS:
        raise ConfigError(f"--matte {matte!r} is unknown; choose one of {', '.join(MATTING_METHODS)}")
    predictor = load_predictor(model_path, device, mode)
    size = size or input_size(predictor.spec)
    found = {Path(d).name: find_matting_samples(d, trimap_dir) for d in datasets}  # every folder checked up front
    if len(found) != len(datasets):
        raise ConfigError(f"data sets must have distinct folder names, got {[str(d) for d in datasets]}")
    out_dir = ensure_writable_dir(out_dir or default_eval_dir(model_path))
    results = {name: evaluate_dataset(predictor, samples, size=size, band=band, prompt_threshold=prompt_threshold,
                                      averaging=averaging, matte=matte,
                                      save_dir=out_dir / name if save else None, name=name)
               for name, samples in found.items()}
    atomic_write_text(out_dir / "trimap_metrics.json", json.dumps(nan_to_none(results), indent=2) + "\n")
    return results


def default_eval_dir(model_path: Path) -> Path:
    """Where `evaluate` writes without an output folder: `<run>/eval` (the run of a model file)."""
    model_path = Path(model_path)
    return (model_path if model_path.is_dir() else model_path.parent) / "eval"


def format_results(results: dict[str, dict[str, Any]]) -> str:
    return format_trimap_table(results, columns=("sad", "mse", "grad"))

