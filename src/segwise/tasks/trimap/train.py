"""Trimap training: a mask-prompted pixel model on matting folders, trained with 3 classes by the shared engine."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L

from segwise.data.matting import MEAN, STD, MattingDataset, MattingSample, PromptCorruption, find_matting_samples
from segwise.data.readers import split_dir
from segwise.engine.run import check_names, open_run
from segwise.engine.splits import validation_sets
from segwise.engine.trainer import fit_segmentation
from segwise.errors import ConfigError
from segwise.metrics.trimap import TRIMAP_CLASSES
from segwise.models.spec import ModelSpec
from segwise.tasks.trimap.config import TrimapConfig
from segwise.tasks.trimap.infer import PALETTE, input_size

TASKS = ("trimap", "semantic")
"""Registry tasks `segwise trimap train` accepts: the trimap ViT, or any pixel model given the 4-channel input."""


def trimap_spec(config: TrimapConfig) -> ModelSpec:
    return ModelSpec(name=config.model.name, encoder=config.model.encoder, args=dict(config.model.args),
                     in_channels=4, num_classes=3, class_names=list(TRIMAP_CLASSES), palette=PALETTE,
                     ignore_index=config.data.ignore_index, mean=list(MEAN), std=list(STD))


def corruption(config: TrimapConfig) -> PromptCorruption:
    t = config.trimap
    return PromptCorruption(edge_noise=t.edge_noise, contour_jitter=t.contour_jitter, hole_drop=t.hole_drop)


def training_samples(config: TrimapConfig) -> list[MattingSample]:
    """The samples of every training set (`trimap.train_sets`, else `data.train_split`), concatenated in order as
    the trimap ViT's recipe concatenates its data sets; each set in its own layout."""
    data, options = config.data, config.trimap
    if data.root is None and not options.train_sets:
        raise ConfigError("data.root is not set; pass DATA_DIR to `segwise trimap train` (or the training sets with "
                          "--train A B ...)")
    folders = [split_dir(data.root, name) for name in options.train_sets or [data.train_split]]
    twice = sorted({str(f) for f in folders if folders.count(f) > 1})
    if twice:
        raise ConfigError(f"trimap.train_sets (--train) names {', '.join(twice)} more than once; name each training "
                          "set once")
    return [sample for folder in folders
            for sample in find_matting_samples(folder, options.trimap_dir, layout=options.format)]


def train(config: TrimapConfig, callbacks: Sequence[L.Callback] = ()) -> Path:
    """Train on the training sets (`data.root/train_split`, or `trimap.train_sets`) and validate on
    `data.root/{val_split, extra_val_splits}` (or on a held-out share, `data.val_fraction`), matting folders in any
    layout, with the shared engine; the same run name resumes."""
    check_names(config, TASKS)
    data, options = config.data, config.trimap
    train_samples, vals = validation_sets(
        data, training_samples(config),
        lambda name: find_matting_samples(split_dir(data.root, name), options.trimap_dir, layout=options.format))
    run = open_run(config, lambda _: trimap_spec(config), config.model.name, config.model.args.get("size"))
    common = dict(size=input_size(run.spec), band=options.unknown_band, prompt_threshold=options.prompt_threshold)
    train_set = MattingDataset(train_samples, train=True, seed=config.trainer.seed, corruption=corruption(config),
                               **common)
    val_sets = {name: MattingDataset(samples, train=False, **common) for name, samples in vals.items()}
    return fit_segmentation(config, run, train_set, val_sets, callbacks)
