"""Training on image folders: validated data → model description → a run of the shared engine."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from segwise.config import Config
from segwise.data.folder import SegmentationDataset
from segwise.data.transforms import build_eval_transform, build_train_transform
from segwise.engine.run import check_names, open_run
from segwise.engine.trainer import fit_segmentation
from segwise.errors import ConfigError
from segwise.models import create_model, input_stride
from segwise.models.spec import ModelSpec
from segwise.tasks.semantic.data import PreparedData, dataset_stats, prepare_data, with_dataset_defaults
from segwise.visualize import default_palette

TASKS = ("semantic",)
"""Registry tasks `segwise train` accepts: pixel models of the semantic contract."""


def model_spec(config: Config, prepared: PreparedData, mean: list[float], std: list[float]) -> ModelSpec:
    data, class_map = config.data, prepared.class_map
    num_classes = class_map.num_classes
    names = data.class_names or class_map.default_names()
    if len(names) != num_classes:
        raise ConfigError(f"data.class_names has {len(names)} names but the data has {num_classes} classes")
    palette = [list(c) for c in data.palette] if data.palette else default_palette(num_classes).tolist()
    return ModelSpec(name=config.model.name, encoder=config.model.encoder, args=dict(config.model.args),
                     in_channels=prepared.in_channels, num_classes=num_classes, class_names=list(names),
                     palette=palette, ignore_index=class_map.ignore_index, mean=mean, std=std,
                     extra_channels=list(data.extra_channels),
                     image_size=list(data.image_size) if data.image_size else None,
                     class_values=class_map.values and list(class_map.values),
                     binary=class_map.binary, unmapped=class_map.unmapped)


def check_sizes(config: Config) -> None:
    """Refuse, before any data is read, an image size the model cannot take whole (not a multiple of its input
    stride: export would refuse it too) and a crop larger than the resized image (it would be mostly padding)."""
    data = config.data
    if data.image_size and data.crop_size and any(c > i for c, i in zip(data.crop_size, data.image_size)):
        raise ConfigError(f"data.crop_size {data.crop_size[0]}x{data.crop_size[1]} is larger than data.image_size "
                          f"{data.image_size[0]}x{data.image_size[1]}: every crop would be mostly ignore padding; "
                          "use a crop no larger than the image size, or drop data.crop_size")
    if not data.image_size:
        return
    with torch.device("meta"):  # the architecture's stride without allocating its weights
        model = create_model(config.model.name, encoder=config.model.encoder, **config.model.args)
    stride = input_stride(model)
    if any(side % stride for side in data.image_size):
        fit = "x".join(str(-(-side // stride) * stride) for side in data.image_size)
        raise ConfigError(f"data.image_size {data.image_size[0]}x{data.image_size[1]} is not a multiple of "
                          f"{config.model.name}'s input stride {stride}; use e.g. --image-size {fit}")


def rare_classes(config: Config, prepared: PreparedData) -> list[int]:
    """The classes data.rare_class_crops targets: data.rare_classes, else those under 5 % of the training split's
    labelled pixels (from the data check; none when it is off)."""
    if config.data.rare_classes is not None or not config.data.rare_class_crops:
        return list(config.data.rare_classes or [])
    return prepared.report.rare_classes() if prepared.report is not None else []


def train(config: Config, callbacks: list[L.Callback] = ()) -> Path:
    """Validate data, build the model and train; re-running with the same run name resumes from last.ckpt.

    `callbacks` are added to segwise's own (e.g. for custom logging or benchmarks).
    """
    config = config.model_copy(update={"data": with_dataset_defaults(config.data)})
    check_names(config, TASKS)
    check_sizes(config)
    prepared = prepare_data(config.data)
    stats: dict[str, list[float]] = {}

    def spec_for(run_dir: Path) -> ModelSpec:
        stats["mean"], stats["std"] = dataset_stats(config.data, prepared, run_dir)
        return model_spec(config, prepared, stats["mean"], stats["std"])

    run = open_run(config, spec_for, config.model.name, config.model.encoder)
    data = config.data
    train_transform = build_train_transform(data.augment, crop_size=data.crop_size, image_size=data.image_size,
                                            scale_range=data.scale_range, hflip=data.hflip, vflip=data.vflip,
                                            rotate=data.rotate, blur=data.blur, ignore_index=data.ignore_index,
                                            num_channels=prepared.in_channels,
                                            rare_classes=rare_classes(config, prepared),
                                            rare_class_crops=data.rare_class_crops)
    eval_transform = build_eval_transform(data.image_size)
    datasets = dict(class_map=prepared.class_map, mean=run.spec.mean, std=run.spec.std)
    train_set = SegmentationDataset(prepared.train, transform=train_transform, seed=config.trainer.seed, **datasets)
    val_sets = {name: SegmentationDataset(s, transform=eval_transform, **datasets) for name, s in prepared.vals.items()}
    return fit_segmentation(config, run, train_set, val_sets, callbacks)
