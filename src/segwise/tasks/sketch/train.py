"""Training of the two ContextSeg stages under the shared engine: `train_embed` (stroke autoencoder) and
`train_segment` (context transformer or per-stroke baseline on the frozen embedder).

Each exports `model.safetensors` + `model.yaml` into its run directory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import Dataset

from segwise.config import TrainerConfig
from segwise.data.sketch.datasets import (SketchDataset, StrokeImageDataset, collate_sketches, first_per_category,
                                          named_category_parts, read_splits)
from segwise.data.sketch.formats import Sketch
from segwise.engine.datamodule import SegmentationDataModule
from segwise.engine.run import open_run
from segwise.engine.trainer import fit
from segwise.errors import CheckpointError
from segwise.models import create_model
from segwise.models.contextseg import StrokeEmbedder
from segwise.models.spec import ModelSpec, load_model
from segwise.tasks.sketch.config import SketchConfig, SketchDataConfig
from segwise.tasks.sketch.draw import part_palette
from segwise.tasks.sketch.module import SketchSegmentTask, StrokeClassifierTask, StrokeEmbedTask

SKETCH_RESUME_KEYS = ("name", "args", "num_classes")  # e.g. another --embed architecture cannot resume a run


class SketchDataModule(SegmentationDataModule):
    """The engine's resumable, rank-sharded loaders with the sketch collation (default collation for stage 1)."""

    def __init__(self, train: Dataset, vals: list[Dataset], data: SketchDataConfig, seed: int,
                 collate: Any = None) -> None:
        super().__init__(train, vals, data.batch_size, data.val_batch_size or data.batch_size, data.num_workers,
                         seed, ignore_index=-1, stride=1)
        self.collate = collate


def read_data(data: SketchDataConfig) -> tuple[list[Sketch], list[Sketch]]:
    """The training and validation sketches (the latter empty without `data.val_split`), the source read once."""
    names = [data.train_split, *([data.val_split] if data.val_split else [])]
    sets = read_splits(data.root, names, data.categories, scheme=data.split_scheme, seed=data.split_seed)
    train = first_per_category(sets[data.train_split], data.max_per_category)
    vals = first_per_category(sets[data.val_split], data.max_val_per_category) if data.val_split else []
    return train, vals


def _embed_spec(config: SketchConfig) -> ModelSpec:
    e, d = config.embed, config.data
    args = {"image_size": d.canvas, "root": e.root_features, "depth": e.depth, "hidden": e.hidden,
            "code_size": e.code_size, "line_width": d.line_width}
    return ModelSpec(name="contextseg_embed", encoder=None, args=args, in_channels=1, num_classes=1,
                     class_names=["ink"], palette=[[0, 0, 0]], ignore_index=-1, image_size=[d.canvas, d.canvas])


def train_embed(config: SketchConfig, callbacks: list[L.Callback] = ()) -> Path:
    """Stage 1: train the stroke autoencoder; monitors val/loss (lower is better) whatever trainer.monitor says."""
    data = config.data
    spec = _embed_spec(config)
    model = create_model(spec.name, **spec.args)  # checks canvas vs depth before any data is read
    train, val = read_data(data)
    vals = [val] if val else []
    seed = config.trainer.seed
    train_set = StrokeImageDataset(train, data.canvas, data.line_width, data.df_k, data.augment_p, seed)
    val_sets = [StrokeImageDataset(v, data.canvas, data.line_width, data.df_k) for v in vals]
    trainer_config = config.trainer.model_copy(update={"monitor": "val/loss", "monitor_mode": "min"})
    return _fit(config, trainer_config, spec, StrokeEmbedTask(model, spec, config), train_set, val_sets,
                callbacks, ("sketch_embed",))


def load_embedder(embed_run: Path) -> tuple[StrokeEmbedder, ModelSpec]:
    """The trained stage-1 network of a run directory (or its model.yaml / .ckpt)."""
    model, spec = load_model(Path(embed_run))
    if not isinstance(model, StrokeEmbedder):
        raise CheckpointError(f"{embed_run} holds a {spec.name} model, not a stroke embedder; pass the run directory "
                              "made by `segwise sketch train-embed`")
    return model, spec


def _segment_spec(config: SketchConfig, embed_spec: ModelSpec, parts: dict[str, list[str]]) -> ModelSpec:
    s = config.segment
    groups = max(len(names) for names in parts.values())
    args: dict[str, Any] = {"embed": dict(embed_spec.args), "categories": parts}
    if s.model == "contextseg":
        args["transformer"] = s.transformer.model_dump()
        args["threshold"] = s.threshold
    else:
        args["hidden"] = s.classifier_hidden
    names = next(iter(parts.values())) if len(parts) == 1 else [f"part_{g}" for g in range(groups)]
    return ModelSpec(name=s.model, encoder=None, args=args, in_channels=1, num_classes=groups, class_names=names,
                     palette=part_palette(groups).tolist(), ignore_index=-1, image_size=list(embed_spec.image_size))


def train_segment(config: SketchConfig, embed_run: Path, callbacks: list[L.Callback] = ()) -> Path:
    """Stage 2: freeze the embedder of `embed_run` and train the context transformer (or the baseline)."""
    embedder, embed_spec = load_embedder(embed_run)
    data, seed = config.data, config.trainer.seed
    train, vals = read_data(data)
    parts = named_category_parts(train + vals)
    spec = _segment_spec(config, embed_spec, parts)
    model = create_model(spec.name, **spec.args)
    model.embedder.load_state_dict(embedder.state_dict())
    canvas, width = embedder.image_size, embedder.line_width
    train_set = SketchDataset(train, parts, canvas, width, data.augment_p, seed)
    val_sets = [SketchDataset(vals, parts, canvas, width)] if vals else []
    task_class = SketchSegmentTask if spec.name == "contextseg" else StrokeClassifierTask
    task = task_class(model, spec, config, vals)
    trainer_config = config.trainer
    if not vals and trainer_config.monitor.startswith("val/"):
        trainer_config = trainer_config.model_copy(update={"monitor": "train/loss", "monitor_mode": "min"})
    return _fit(config, trainer_config, spec, task, train_set, val_sets, callbacks, ("sketch", spec.name),
                collate=collate_sketches)


def _fit(config: SketchConfig, trainer_config: TrainerConfig, spec: ModelSpec, task: L.LightningModule,
         train_set: Dataset, val_sets: list[Dataset], callbacks: Sequence[L.Callback], name_parts: tuple[str, ...],
         collate: Callable[[list[Any]], Any] | None = None) -> Path:
    """Open (or resume) the run directory named by `name_parts` and train `task` in it; returns the directory."""
    run = open_run(config, lambda _: spec, *name_parts, resume_keys=SKETCH_RESUME_KEYS)
    datamodule = SketchDataModule(train_set, val_sets, config.data, config.trainer.seed, collate=collate)
    return fit(trainer_config, run, task, datamodule, bool(val_sets), list(callbacks))
