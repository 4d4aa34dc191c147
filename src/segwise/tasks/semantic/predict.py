"""Prediction with a trained pixel model: index/colour/overlay PNGs, probabilities, streamed GeoTIFFs, RLE CSVs,
ensembles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segwise.data.classmap import ClassMap
from segwise.data.folder import Sample, read_sample_image
from segwise.data.readers import default_split, find_split, holds_images, reader
from segwise.data.io import IMAGE_EXTENSIONS, is_image_file, write_npy, write_png
from segwise.errors import ConfigError, DataError
from segwise.inference.distributed import Shard
from segwise.inference.ensemble import Ensemble
from segwise.inference.modes import DEFAULT_MAX_PIXELS
from segwise.inference.pipeline import default_workers, run_pipeline
from segwise.inference.predictor import Predictor
from segwise.inference.raster import RASTER_EXTENSIONS, RowPart, raster_size
from segwise.inference.rle import raster_rle_encode, rle_encode, write_rle_csv
from segwise.inference.onnx_backend import Runtime
from segwise.inference.whole import InferenceMode
from segwise.io_utils import ensure_writable_dir
from segwise.models.spec import ModelSpec
from segwise.progress import Progress, progress
from segwise.visualize import colorize, overlay


def spec_class_map(spec: ModelSpec) -> ClassMap:
    """The class mapping the model was trained with."""
    palette = spec.palette if not spec.class_values and not spec.binary else None
    return ClassMap(num_classes=spec.num_classes, ignore_index=spec.ignore_index,
                    values=tuple(spec.class_values) if spec.class_values else None,
                    palette=tuple(tuple(c) for c in palette) if palette else None,
                    binary=spec.binary, unmapped=spec.unmapped)


def save_prediction(out_dir: Path, name: str, image: np.ndarray, pred: np.ndarray, probs: np.ndarray | None,
                    spec: ModelSpec, kinds: set[str]) -> None:
    """Write the requested outputs: index PNG, colour PNG, overlay PNG, raw probabilities (.npy float16).

    Each file is written atomically and replaces what a previous run left under its name (even a file a killed
    run of an older version truncated), so running the same command again repairs every output.
    """
    palette = np.asarray(spec.palette, dtype=np.uint8)
    if "index" in kinds:
        write_png(out_dir / "index" / f"{name}.png", pred.astype(np.uint8 if spec.num_classes <= 256 else np.uint16))
    if "color" in kinds:
        write_png(out_dir / "color" / f"{name}.png", colorize(pred, palette, spec.ignore_index))
    if "overlay" in kinds:
        write_png(out_dir / "overlay" / f"{name}.png", overlay(image, pred, palette))
    if "probs" in kinds and probs is not None:
        write_npy(out_dir / "probs" / f"{name}.npy", probs.astype(np.float16))


def prediction_inputs(path: Path, extra_channels: list[str], format: str = "folder") -> list[Sample]:
    """A single image file, a folder of images, or a split folder with images/ (+ extra channel folders); in a layout
    that names its splits (`voc`, ...), a split ROOT/SPLIT or a data-set root (its val split)."""
    path = Path(path)
    if reader(format).splits is not None and not is_image_file(path):
        return find_split(format, default_split(format, path), extra_channels, require_masks=False)
    if path.is_file():
        if extra_channels:
            raise DataError(f"{path}: the model needs extra channel planes {extra_channels}; pass the split folder "
                            "that holds images/ and those folders instead of one file")
        return [Sample(path.stem, path, None, ())]
    if not path.is_dir():
        raise DataError(f"{path} does not exist; pass an image file or a folder of images")
    if holds_images(path):
        return find_split(format, path, extra_channels, require_masks=False)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [Sample(p.stem, p, None, ()) for p in files]


@dataclass
class RasterOptions:
    """How `predict` streams large inputs: the size limit for PNG/JPEG and the extra GeoTIFF outputs."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    probs: str | None = None  # "uint8" or "float16"
    confidence: bool = False
    color: bool = False
    overwrite: bool = False
    progress: bool | None = None  # None: shown for rasters of 64+ windows (a bar on a terminal, lines on a log)


def streams(sample: Sample, max_pixels: int) -> bool:
    """TIFFs, and images over `max_pixels`, go through the streaming raster path (with their extra planes)."""
    if sample.image.suffix.lower() in RASTER_EXTENSIONS:
        return True
    try:
        height, width = raster_size(sample.image)
    except DataError:
        return False  # let the ordinary reader report what is wrong with the file
    return height * width > max_pixels


def predict(model_path: Path, inputs: Path, out_dir: Path, *, threshold: float | None = None,
            save: set[str] = frozenset({"index", "color", "overlay"}), device: str | None = None,
            ensemble: Sequence[Path] = (), ensemble_method: str | None = None,
            ensemble_weights: Sequence[float] | None = None, rle: Path | None = None,
            rle_class: int | None = None, mode: InferenceMode | None = None,
            raster: RasterOptions | None = None, format: str = "folder",
            runtime: Runtime | None = None, batch: int = 8, workers: int | None = None,
            shard: Shard | None = None, vrt: bool = False) -> list[Path]:
    """Predict every input image; returns the list of index-mask files written (`<out>/<name>.tif` for rasters).

    `rle`: also write a `name<TAB>rle` CSV (TianChi format) of class `rle_class`, or of every non-zero class.
    `mode`: whole image (default), sliding windows and/or TTA. TIFF inputs and inputs over `raster.max_pixels`
    are streamed window by window into GeoTIFFs (`predict_raster`), with their extra channel planes, through
    every ensemble member; their RLE is read back from the class GeoTIFF in column strips. `runtime`: torch
    (default), torch.compile or onnxruntime (fp32/int8) for every member's forward pass. Ordinary images go through
    `predict_images` (`batch` images of one size per forward, `workers` reader and writer threads, default
    `default_workers()`); the outputs equal those of one image at a time (`batch=1, workers=0`).
    `shard`: this process of several (`segwise.inference.distributed`) predicts its share of the images and its
    rows of every raster; rank 0 merges the rasters' parts (with `vrt`: writes `<name>.vrt` over them instead) and
    writes the RLE file. Every output equals one process's.
    """
    raster = raster or RasterOptions()
    predictor = Predictor.from_path(model_path, device, mode, runtime)
    predictor = with_ensemble(predictor, model_path, ensemble, ensemble_method, ensemble_weights)
    check_rle_options(rle, rle_class, predictor.spec)
    out_dir = ensure_writable_dir(out_dir)
    samples = prediction_inputs(inputs, predictor.spec.extra_channels, format)
    streamed = [streams(sample, raster.max_pixels) for sample in samples]
    if vrt and not any(streamed):
        raise ConfigError(f"--vrt: {inputs} holds no raster to predict in parts (a TIFF, or an image over "
                          "--max-pixels); drop --vrt")
    part = RowPart(shard.rank, shard.world, shard.barrier, vrt) if shard else None
    reports = shard is None or shard.rank == 0  # the process that writes one-file outputs (merged rasters, RLE)
    outputs: dict[int, tuple[Path, tuple[str, str] | None]] = {}
    ordinary = [i for i, is_raster in enumerate(streamed) if not is_raster]
    mine = shard.share(ordinary) if shard else ordinary
    with progress(len(streamed) - len(ordinary) + len(mine), "predicting", unit="images") as counter:
        for index in (i for i, is_raster in enumerate(streamed) if is_raster):
            sample = samples[index]
            result = predictor.predict_raster([sample.image, *sample.extras], out_dir / f"{sample.name}.tif",
                                              probs=raster.probs, confidence=raster.confidence, color=raster.color,
                                              overwrite=raster.overwrite, threshold=threshold,
                                              progress=raster.progress, whole_image_pixels=raster.max_pixels,
                                              part=part)
            encode = rle is not None and reports
            outputs[index] = (result.classes, (sample.image.name, raster_rle_encode(result.classes, rle_class))
                              if encode else None)
            counter.advance()
        outputs.update(zip(mine, predict_images(predictor, [samples[i] for i in mine], out_dir, save,
                                                threshold, rle is not None, rle_class, batch, workers, counter)))
    if shard:  # every process's images; rank 0's last, as only its raster entries hold RLE rows
        for gathered in reversed(shard.gather(outputs)):
            outputs.update(gathered)
    written = [outputs[i][0] for i in range(len(samples))]
    # rows are named by the file name, as in pytorch-segmentation's CSVs
    rle_rows = [outputs[i][1] for i in range(len(samples))]
    if rle is not None and reports:
        write_rle_csv(rle, rle_rows)
    return written


def predict_images(predictor: Predictor | Ensemble, samples: Sequence[Sample], out_dir: Path, save: set[str],
                   threshold: float | None, rle: bool, rle_class: int | None, batch: int, workers: int | None,
                   counter: Progress) -> list[tuple[Path, tuple[str, str] | None]]:
    """Each sample's index-mask path and RLE row (when `rle`), in input order: reading, the forward pass (batches of
    up to `batch` images of one size, for an ensemble one batch per member) and writing overlap. With saved
    probabilities every forward takes one image: a batched forward differs from a single one in the last bit of some
    probabilities (never, in the tests, in a label), and the .npy files must equal those of one image at a time."""

    def forward(images: list[np.ndarray], batch_samples: list[Sample]) -> np.ndarray:
        return predictor.predict_proba_batch(images, str(batch_samples[0].image))

    def write(sample: Sample, image: np.ndarray, probs: np.ndarray) -> tuple[Path, tuple[str, str] | None]:
        labels = predictor.labels(probs, threshold)
        save_prediction(out_dir, sample.name, image, labels, probs, predictor.spec, save)
        row = (sample.image.name, rle_encode(labels, rle_class)) if rle else None
        return out_dir / "index" / f"{sample.name}.png", row

    workers = default_workers() if workers is None else workers
    batch = 1 if "probs" in save else batch
    return run_pipeline(samples, read_sample_image, forward, write, batch=batch, workers=workers,
                        done=counter.advance)


def with_ensemble(predictor: Predictor, model_path: Path, members: Sequence[Path], method: str | None,
                  weights: Sequence[float] | None) -> Predictor | Ensemble:
    """The model alone, or an `Ensemble` of it and `members` (method: 'weighted' when weights are given, else
    'mean', unless set)."""
    if not members:
        if method is not None or weights is not None:
            raise ConfigError("--ensemble-method/--ensemble-weights need further models: add --ensemble RUN ...")
        return predictor
    method = method or ("weighted" if weights is not None else "mean")
    return Ensemble.extend(predictor, model_path, members, weights, method)


def check_rle_options(rle: Path | None, rle_class: int | None, spec: ModelSpec) -> None:
    """Fail before predicting anything on an RLE class the model lacks or an RLE file that cannot be written."""
    if rle is None:
        if rle_class is not None:
            raise ConfigError("--rle-class needs --rle FILE")
        return
    if rle_class is not None and not 0 <= rle_class < spec.num_classes:
        raise ConfigError(f"--rle-class {rle_class} is not a class of this model (0..{spec.num_classes - 1})")
    ensure_writable_dir(Path(rle).resolve().parent)
