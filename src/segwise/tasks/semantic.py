"""Semantic segmentation on image folders: config → validated data → model → Lightning run; eval and predict."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from torch.utils.data import Dataset

from segwise.config import Config, DataConfig, save_config
from segwise.data.classmap import ClassMap
from segwise.data.folder import Sample, SegmentationDataset, find_samples, read_sample_image, read_sample_mask
from segwise.data.io import IMAGE_EXTENSIONS, read_mask, write_png
from segwise.data.transforms import build_eval_transform, build_train_transform
from segwise.data.validate import DatasetReport, compute_mean_std, validate_samples
from segwise.engine.checkpoint import ModelSpec, resolve_model_path
from segwise.engine.datamodule import SegmentationDataModule
from segwise.engine.module import SegmentationTask
from segwise.engine.trainer import build_trainer, check_resumable, fit, last_checkpoint, run_directory
from segwise.engine.optim import optimizer_class
from segwise.errors import CheckpointError, ConfigError, DataError
from segwise.inference.ensemble import Ensemble
from segwise.inference.predictor import Predictor
from segwise.inference.raster import RASTER_EXTENSIONS, raster_size
from segwise.inference.whole import InferenceMode
from segwise.inference.rle import raster_rle_encode, rle_encode, write_rle_csv
from segwise.io_utils import atomic_write_text, ensure_writable_dir
from segwise.metrics import ConfusionMatrix, per_image_miou, write_metrics
from segwise.losses import parse_loss_spec
from segwise.models import create_model, input_stride, model_entry
from segwise.visualize import colorize, default_palette, overlay, side_by_side, to_display_rgb

DATASET_FILE = "dataset.yaml"  # optional class_names/palette/num_classes beside the splits
STATS_FILE = "dataset_stats.yaml"


# ---- data ---------------------------------------------------------------------------------------------------
def split_dir(root: Path | None, split: str) -> Path:
    """A split given as a name under `root`, or as a path of its own."""
    path = Path(split)
    if path.is_absolute() or root is None or (path.exists() and not (Path(root) / split).exists()):
        return path
    return Path(root) / split


def with_dataset_defaults(data: DataConfig) -> DataConfig:
    """Fill class names/palette/num_classes from `<root>/dataset.yaml` where the config leaves them unset."""
    if data.root is None or not (Path(data.root) / DATASET_FILE).is_file():
        return data
    defaults = yaml.safe_load((Path(data.root) / DATASET_FILE).read_text()) or {}
    updates = {k: v for k, v in defaults.items() if k in DataConfig.model_fields and getattr(data, k) is None}
    return data.model_copy(update=DataConfig.model_validate({**data.model_dump(), **updates}).model_dump())


def infer_num_classes(samples: list[Sample], ignore_index: int) -> int:
    """Largest index-mask value (other than ignore) + 1, for data sets that state no class list."""
    largest = 1
    for sample in samples:
        mask = read_mask(sample.mask)
        if mask.ndim == 3:
            raise DataError(f"{sample.mask}: RGB colour mask but no palette; set data.palette (one RGB colour per "
                            "class) so colours can be mapped to classes")
        values = np.unique(mask)
        values = values[values != ignore_index]
        if values.size:
            largest = max(largest, int(values.max()))
    return largest + 1


def build_class_map(data: DataConfig, samples: list[Sample] | None = None) -> ClassMap:
    """The one mapping from raw mask values to class indices, from the config (or the data when unstated)."""
    num_classes = data.num_classes or (len(data.class_names) if data.class_names else None)
    if num_classes is None and not (data.class_values or data.max_mask_value or data.palette or data.binary):
        if not samples:
            raise ConfigError("data.num_classes is not set and there are no masks to infer it from")
        num_classes = infer_num_classes(samples, data.ignore_index)
    return ClassMap.from_options(num_classes=num_classes, class_values=data.class_values,
                                 max_mask_value=data.max_mask_value, palette=data.palette, binary=data.binary,
                                 ignore_index=data.ignore_index, unmapped=data.unmapped)


@dataclass
class PreparedData:
    train: list[Sample]
    vals: dict[str, list[Sample]]
    class_map: ClassMap
    report: DatasetReport
    in_channels: int


def prepare_data(data: DataConfig) -> PreparedData:
    """Find and validate every split before training starts, reporting all bad files at once."""
    if data.root is None:
        raise ConfigError("data.root is not set; pass DATA_DIR to `segwise train` or set data.root")
    train = find_samples(split_dir(data.root, data.train_split), data.extra_channels)
    split_names = ([data.val_split] if data.val_split else []) + list(data.extra_val_splits)
    vals = {name: find_samples(split_dir(data.root, name), data.extra_channels) for name in split_names}
    class_map = build_class_map(data, train)
    report = validate_samples(train, class_map) if data.validate_data else None
    for samples in vals.values():
        if data.validate_data:
            validate_samples(samples, class_map)
    in_channels = report.channels if report else read_sample_image(train[0]).shape[2]
    return PreparedData(train, vals, class_map, report, in_channels)


def dataset_stats(data: DataConfig, prepared: PreparedData, run_dir: Path) -> tuple[list[float], list[float]]:
    """Mean/std: from the config, else from the run's stored statistics, else computed once and stored."""
    if data.mean is not None:
        return list(data.mean), list(data.std)
    stats_file = run_dir / STATS_FILE
    if stats_file.is_file():
        stored = yaml.safe_load(stats_file.read_text())
        return stored["mean"], stored["std"]
    mean, std = compute_mean_std(prepared.train)
    stats = {"mean": [float(v) for v in mean], "std": [float(max(v, 1e-6)) for v in std],
             "num_train": len(prepared.train), "in_channels": prepared.in_channels,
             "class_pixel_counts": [int(c) for c in prepared.report.class_pixel_counts] if prepared.report else None}
    atomic_write_text(stats_file, yaml.safe_dump(stats, sort_keys=False))
    return stats["mean"], stats["std"]


def model_spec(config: Config, prepared: PreparedData, mean: list[float], std: list[float]) -> ModelSpec:
    data, num_classes = config.data, prepared.class_map.num_classes
    names = data.class_names or [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(f"data.class_names has {len(names)} names but the data has {num_classes} classes")
    palette = [list(c) for c in data.palette] if data.palette else default_palette(num_classes).tolist()
    return ModelSpec(name=config.model.name, encoder=config.model.encoder, args=dict(config.model.args),
                     in_channels=prepared.in_channels, num_classes=num_classes, class_names=list(names),
                     palette=palette, ignore_index=data.ignore_index, mean=mean, std=std,
                     extra_channels=list(data.extra_channels),
                     image_size=list(data.image_size) if data.image_size else None,
                     class_values=prepared.class_map.values and list(prepared.class_map.values),
                     binary=data.binary, unmapped=data.unmapped)


# ---- training -----------------------------------------------------------------------------------------------
def check_names(config: Config) -> None:
    """Fail on a misspelt model, loss or optimizer before any data is read or any directory is made."""
    model_entry(config.model.name)
    parse_loss_spec(config.loss.name)
    optimizer_class(config.optimizer.name)


def train(config: Config, callbacks: list[L.Callback] = ()) -> Path:
    """Validate data, build the model and train; re-running with the same run name resumes from last.ckpt.

    `callbacks` are added to segwise's own (e.g. for custom logging or benchmarks).
    """
    config = config.model_copy(update={"data": with_dataset_defaults(config.data)})
    check_names(config)
    run_dir = run_directory(config.run, config.model.name, config.model.encoder)
    resume_from = last_checkpoint(run_dir, config.run)
    prepared = prepare_data(config.data)
    ensure_writable_dir(run_dir)
    mean, std = dataset_stats(config.data, prepared, run_dir)
    spec = model_spec(config, prepared, mean, std)
    check_resumable(run_dir, spec)
    save_config(config, run_dir / "config.yaml")
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    data = config.data
    train_transform = build_train_transform(data.augment, crop_size=data.crop_size, image_size=data.image_size,
                                            scale_range=data.scale_range, hflip=data.hflip, vflip=data.vflip,
                                            rotate=data.rotate, blur=data.blur, ignore_index=data.ignore_index,
                                            num_channels=prepared.in_channels)
    eval_transform = build_eval_transform(data.image_size)
    datasets = dict(class_map=prepared.class_map, mean=mean, std=std)
    train_set = SegmentationDataset(prepared.train, transform=train_transform, seed=config.trainer.seed, **datasets)
    val_sets = {name: SegmentationDataset(s, transform=eval_transform, **datasets) for name, s in prepared.vals.items()}
    fit_segmentation(config, spec, run_dir, resume_from, train_set, val_sets, callbacks)
    return run_dir


def fit_segmentation(config: Config, spec: ModelSpec, run_dir: Path, resume_from: Path | None, train_set: Dataset,
                     val_sets: dict[str, Dataset], callbacks: Sequence[L.Callback] = ()) -> None:
    """Build the spec's model and train it as a `SegmentationTask` under the shared trainer (every pixel task)."""
    model = create_model(spec.name, in_channels=spec.in_channels, classes=spec.num_classes,
                         encoder=spec.encoder, encoder_weights=config.model.encoder_weights, **spec.args)
    if config.trainer.compile:
        model.compile()
    data = config.data
    datamodule = SegmentationDataModule(train_set, list(val_sets.values()), data.batch_size,
                                        data.val_batch_size or data.batch_size, data.num_workers, config.trainer.seed,
                                        data.ignore_index, input_stride(model))
    task = SegmentationTask(model, spec, config, list(val_sets))
    trainer = build_trainer(config.trainer, run_dir, has_val=bool(val_sets), callbacks=callbacks)
    fit(trainer, task, datamodule, run_dir, resume_from)


# ---- evaluation and prediction ------------------------------------------------------------------------------
def eval_split(data_dir: Path) -> Path:
    """Accept a split folder (with images/) or a data-set root (then its val/ split)."""
    data_dir = Path(data_dir)
    if not any((data_dir / name).is_dir() for name in ("images", "imgs", "image")) and (data_dir / "val").is_dir():
        return data_dir / "val"
    return data_dir


def spec_class_map(spec: ModelSpec) -> ClassMap:
    """The class mapping the model was trained with."""
    palette = spec.palette if not spec.class_values and not spec.binary else None
    return ClassMap(num_classes=spec.num_classes, ignore_index=spec.ignore_index,
                    values=tuple(spec.class_values) if spec.class_values else None,
                    palette=tuple(tuple(c) for c in palette) if palette else None,
                    binary=spec.binary, unmapped=spec.unmapped)


def save_prediction(out_dir: Path, name: str, image: np.ndarray, pred: np.ndarray, probs: np.ndarray | None,
                    spec: ModelSpec, kinds: set[str]) -> None:
    """Write the requested outputs: index PNG, colour PNG, overlay PNG, raw probabilities (.npy float16)."""
    palette = np.asarray(spec.palette, dtype=np.uint8)
    if "index" in kinds:
        write_png(out_dir / "index" / f"{name}.png", pred.astype(np.uint8 if spec.num_classes <= 256 else np.uint16))
    if "color" in kinds:
        write_png(out_dir / "color" / f"{name}.png", colorize(pred, palette, spec.ignore_index))
    if "overlay" in kinds:
        write_png(out_dir / "overlay" / f"{name}.png", overlay(image, pred, palette))
    if "probs" in kinds and probs is not None:
        (out_dir / "probs").mkdir(parents=True, exist_ok=True)
        np.save(out_dir / "probs" / f"{name}.npy", probs.astype(np.float16))


def evaluate(model_path: Path, data_dir: Path, out_dir: Path | None = None, *, threshold: float | None = None,
             save: set[str] = frozenset(), plots: int = 0, device: str | None = None,
             ensemble: Sequence[Path] = (), ensemble_method: str | None = None,
             ensemble_weights: Sequence[float] | None = None, mode: InferenceMode | None = None,
             background_index: int | None = None) -> dict[str, Any]:
    """Dataset-level confusion-matrix metrics of a trained model on a folder; writes metrics.json/csv to out_dir.

    `mode`: whole image (default), sliding windows and/or TTA (`segwise.inference.build_mode`).
    `background_index`: also report the mIoU without that class (`miou_foreground`).
    """
    predictor = Predictor.from_path(model_path, device, mode)
    predictor = with_ensemble(predictor, model_path, ensemble, ensemble_method, ensemble_weights)
    spec = predictor.spec
    samples = find_samples(eval_split(data_dir), spec.extra_channels)
    class_map = spec_class_map(spec)
    report = validate_samples(samples, class_map)
    if report.channels != spec.in_channels:
        raise CheckpointError(f"{model_path} takes {spec.in_channels} channels but {data_dir} has {report.channels}; "
                              "evaluate on data with the bands the model was trained on")
    out_dir = ensure_writable_dir(out_dir or resolve_model_path(model_path)[0].parent / "eval")
    matrix = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    worst: list[tuple[float, int, str, np.ndarray]] = []
    counter = itertools.count()
    for sample in samples:
        image = read_sample_image(sample)
        target = read_sample_mask(sample, class_map, image.shape[:2])
        probs = predictor.predict_proba(image, str(sample.image))
        pred = predictor.labels(probs, threshold)
        matrix.update(torch.from_numpy(pred), torch.from_numpy(target))
        if save:
            save_prediction(out_dir / "predictions", sample.name, image, pred, probs, spec, set(save))
        if plots:
            miou = per_image_miou(torch.from_numpy(pred)[None], torch.from_numpy(target)[None], spec.num_classes,
                                  spec.ignore_index).item()
            item = (-miou, next(counter), sample.name, pred)
            (heapq.heappush if len(worst) < plots else heapq.heappushpop)(worst, item)
    metrics = matrix.compute(spec.class_names, background_index)
    metrics["threshold"] = threshold
    metrics["out_dir"] = str(out_dir)
    write_metrics(metrics, out_dir)
    if plots:
        write_plots(out_dir / "plots", sorted(worst, reverse=True), samples, class_map, spec)
    return metrics


def write_plots(plot_dir: Path, worst: list[tuple[float, int, str, np.ndarray]], samples: list[Sample],
                class_map: ClassMap, spec: ModelSpec) -> None:
    """image | ground truth | prediction panels, worst image first (file names start with the rank)."""
    by_name = {s.name: s for s in samples}
    palette = np.asarray(spec.palette, dtype=np.uint8)
    for rank, (neg_iou, _, name, pred) in enumerate(worst):
        sample = by_name[name]
        image = read_sample_image(sample)
        target = read_sample_mask(sample, class_map, image.shape[:2])
        panel = side_by_side([to_display_rgb(image), colorize(target, palette, spec.ignore_index),
                              colorize(pred, palette, spec.ignore_index)], ["image", "ground truth", "prediction"],
                             f"{name}  mIoU {-100 * neg_iou:.1f}%")
        write_png(plot_dir / f"{rank:03d}_{name}.png", panel)


def prediction_inputs(path: Path, extra_channels: list[str]) -> list[Sample]:
    """A single image file, a folder of images, or a split folder with images/ (+ extra channel folders)."""
    path = Path(path)
    if path.is_file():
        if extra_channels:
            raise DataError(f"{path}: the model needs extra channel planes {extra_channels}; pass the split folder "
                            "that holds images/ and those folders instead of one file")
        return [Sample(path.stem, path, None, ())]
    if not path.is_dir():
        raise DataError(f"{path} does not exist; pass an image file or a folder of images")
    if any((path / name).is_dir() for name in ("images", "imgs", "image")):
        return find_samples(path, extra_channels, require_masks=False)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [Sample(p.stem, p, None, ()) for p in files]


@dataclass
class RasterOptions:
    """How `predict` streams large inputs: the size limit for PNG/JPEG and the extra GeoTIFF outputs."""

    max_pixels: int = 100_000_000
    probs: str | None = None  # "uint8" or "float16"
    confidence: bool = False
    color: bool = False
    overwrite: bool = False
    progress: bool | None = None  # None: a progress bar for long jobs on a terminal


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
            raster: RasterOptions | None = None) -> list[Path]:
    """Predict every input image; returns the list of index-mask files written (`<out>/<name>.tif` for rasters).

    `rle`: also write a `name<TAB>rle` CSV (TianChi format) of class `rle_class`, or of every non-zero class.
    `mode`: whole image (default), sliding windows and/or TTA. TIFF inputs and inputs over `raster.max_pixels`
    are streamed window by window into GeoTIFFs (`predict_raster`), with their extra channel planes, through
    every ensemble member; their RLE is read back from the class GeoTIFF in column strips.
    """
    raster = raster or RasterOptions()
    predictor = Predictor.from_path(model_path, device, mode)
    predictor = with_ensemble(predictor, model_path, ensemble, ensemble_method, ensemble_weights)
    check_rle_options(rle, rle_class, predictor.spec)
    out_dir = ensure_writable_dir(out_dir)
    written, rle_rows = [], []
    for sample in prediction_inputs(inputs, predictor.spec.extra_channels):
        if streams(sample, raster.max_pixels):
            result = predictor.predict_raster([sample.image, *sample.extras], out_dir / f"{sample.name}.tif",
                                              probs=raster.probs, confidence=raster.confidence, color=raster.color,
                                              overwrite=raster.overwrite, threshold=threshold,
                                              progress=raster.progress)
            if rle is not None:
                rle_rows.append((sample.image.name, raster_rle_encode(result.classes, rle_class)))
            written.append(result.classes)
            continue
        image = read_sample_image(sample)
        probs = predictor.predict_proba(image, str(sample.image))
        labels = predictor.labels(probs, threshold)
        save_prediction(out_dir, sample.name, image, labels, probs, predictor.spec, save)
        if rle is not None:
            rle_rows.append((sample.image.name, rle_encode(labels, rle_class)))  # the file name, as in S2 CSVs
        written.append(out_dir / "index" / f"{sample.name}.png")
    if rle is not None:
        write_rle_csv(rle, rle_rows)
    return written


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


def check_data(config: Config) -> str:
    """Validate every split of a data set (or one split folder) and describe it: sizes, channels, class pixels."""
    data = with_dataset_defaults(config.data)
    root = Path(data.root)
    splits = [p for p in sorted(root.iterdir()) if p.is_dir() and any((p / n).is_dir() for n in ("images", "imgs", "image"))]
    if any((root / n).is_dir() for n in ("images", "imgs", "image")):
        splits = [root]
    if not splits:
        raise DataError(f"{root} holds no split folder with images/ (expected {root}/train/images, ...)")
    found = {split.name: find_samples(split, data.extra_channels) for split in splits}
    class_map = build_class_map(data, [s for samples in found.values() for s in samples])
    names = data.class_names or [f"class_{i}" for i in range(class_map.num_classes)]
    parts = [f"== {name} ({split_samples and len(split_samples)} samples) ==\n"
             f"{validate_samples(split_samples, class_map).format(names)}" for name, split_samples in found.items()]
    return "\n\n".join(parts) + f"\n\n{len(found)} split(s) valid."
