"""Sketch semantic segmentation (ContextSeg, S0): config, data, the two training stages, eval and predict.

Stage 1 (`train_embed`) trains the stroke autoencoder on images of single strokes and of whole parts; stage 2
(`train_segment`) freezes it and trains the context transformer (or the per-stroke baseline) on sketches. Both
run under `segwise.engine.trainer` and export `model.safetensors` + `model.yaml` into their run directory.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from segwise.config import OptimizerConfig, RunConfig, SchedulerConfig, TrainerConfig, StrictModel, merge
from segwise.data.io import write_png
from segwise.data.sketch import Sketch, category_parts, normalize, read_sketches, read_spg_folder
from segwise.data.sketch_cache import load_prepared, prepare
from segwise.data.sketch_synthetic import SYNTHETIC_CATEGORIES, make_synthetic_sketches
from segwise.data.sketch_raster import augment_sketch, distance_field, render_strokes, render_union
from segwise.models.spec import ModelSpec, load_model
from segwise.engine.datamodule import SegmentationDataModule
from segwise.engine.module import SegwiseTask
from segwise.engine.run import open_run
from segwise.engine.trainer import fit
from segwise.errors import CheckpointError, ConfigError, DataError
from segwise.io_utils import atomic_write_text, ensure_writable_dir
from segwise.losses.sketch import EmbeddingLoss, FocalMembershipLoss
from segwise.metrics.sketch import sketch_metrics, write_sketch_metrics
from segwise.models import create_model
from segwise.models.contextseg import ContextSeg, StrokeClassifier, StrokeEmbedder, union_images
from segwise.visualize import default_palette, side_by_side

SKETCH_RESUME_KEYS = ("name", "args", "num_classes")  # e.g. another --embed architecture cannot resume a run
LOGGED_METRICS = {"p_metric": "P", "c_metric": "C", "sacc": "SAcc", "cacc": "CAcc"}  # metric key → log name
FRAME = 256  # sketches are normalised into this coordinate frame (S0.1) and drawn at any canvas size from it
# Matplotlib's tab10: distinct colours on a white page, one per part (more parts fall back to the VOC palette).
PART_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


# ---- config -------------------------------------------------------------------------------------------------
class SketchDataConfig(StrictModel):
    """Where the sketches come from and how strokes are drawn (S0.1)."""

    root: Path | None = Field(None, description="SPG folder (splits.json), a `sketch prepare` folder or one file")
    categories: list[str] | None = Field(None, description="None = every category of the source")
    train_split: str = "train"
    val_split: str | None = "valid"
    max_per_category: int | None = Field(None, ge=1, description="use only the first N training sketches of each")
    max_val_per_category: int | None = Field(None, ge=1)
    canvas: int = Field(256, ge=16, description="stage 1 image side; stage 2 takes the embedder's")
    line_width: int = Field(2, ge=1, description="pen width of stroke images (stage 1; stage 2 takes the embedder's)")
    df_k: float = Field(0.01, gt=0, description="distance field 1/(1 + k·e^d); 0.01 official, 0.001 paper")
    augment_p: float = Field(0.5, ge=0, le=1, description="probability of the shared affine / stroke dropping")
    batch_size: int = Field(8, ge=1)
    val_batch_size: int | None = Field(None, ge=1)
    num_workers: int = Field(2, ge=0)


class EmbedConfig(StrictModel):
    """Stage-1 stroke autoencoder: r = root_features, `depth` 2× poolings (canvas must be a multiple of 2^depth)."""

    root_features: int = Field(32, ge=1)
    depth: int = Field(5, ge=1)
    hidden: int = Field(4096, ge=1)
    code_size: int = Field(256, ge=2)
    df_weight: float = Field(0.5, ge=0, description="γ in L_recon + γ·L_df")


class TransformerConfig(StrictModel):
    d_model: int = Field(256, ge=2)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    d_ff: int = Field(2048, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerConfig:
        if self.d_model % self.num_heads or self.d_model % 2:
            raise ValueError(f"segment.transformer.d_model = {self.d_model} must be even and divisible by "
                             f"num_heads = {self.num_heads}")
        return self


class SegmentConfig(StrictModel):
    """Stage 2: the context transformer (or the no-context `stroke_classifier` baseline) and its schedule."""

    model: Literal["contextseg", "stroke_classifier"] = "contextseg"
    transformer: TransformerConfig = Field(default_factory=TransformerConfig)
    classifier_hidden: int = Field(256, ge=1)
    focal_gamma: float = Field(2.0, ge=0)
    teacher_forcing_start: float = Field(1.0, ge=0, le=1)
    teacher_forcing_end: float = Field(0.2, ge=0, le=1)
    teacher_forcing_steps: int = Field(50_000, ge=1, description="steps of the linear decay start → end")
    threshold: float = Field(0.5, gt=0, lt=1, description="membership probability that claims a stroke")


# The sketch task's own defaults (S0.4: Adam 1e-4, β 0.9/0.98, ε 1e-9; constant LR; monitor the C-metric),
# merged under whatever the YAML/flags give, so `--set trainer.max_steps=10` keeps the other sketch defaults.
SKETCH_DEFAULTS: dict[str, Any] = {
    "optimizer": {"name": "Adam", "lr": 1e-4, "weight_decay": 0.0, "args": {"betas": [0.9, 0.98], "eps": 1e-9}},
    "scheduler": {"name": "constant"},
    "trainer": {"monitor": "val/C", "monitor_mode": "max", "max_epochs": 50},
}


class SketchConfig(StrictModel):
    """Both ContextSeg stages; `segwise sketch train-embed/train` read it from YAML, flags and `--set`."""

    data: SketchDataConfig = Field(default_factory=SketchDataConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="before")
    @classmethod
    def _sketch_defaults(cls, raw: Any) -> Any:
        return merge(SKETCH_DEFAULTS, raw) if isinstance(raw, dict) else raw


# ---- data ---------------------------------------------------------------------------------------------------

def load_sketches(root: Path | None, split: str, categories: list[str] | None = None,
                  limit: int | None = None) -> list[Sketch]:
    """Sketches of `split` from an SPG folder, a `segwise sketch prepare` folder (`<split>.npz`) or one file."""
    if root is None:
        raise ConfigError("data.root is not set; pass the SPG folder, a `segwise sketch prepare` folder or a file")
    root = Path(root)
    if (root / "splits.json").is_file():
        sketches = read_spg_folder(root, categories, split)
    elif root.is_dir():
        if not (root / f"{split}.npz").is_file():
            raise DataError(f"{root} holds no splits.json and no prepared {split}.npz; run `segwise sketch prepare` "
                            "into it or pass the SPG folder")
        sketches = load_prepared(root / f"{split}.npz")
    elif root.is_file():
        sketches = load_prepared(root) if root.suffix == ".npz" else read_sketches(root)
    else:
        raise DataError(f"{root} does not exist; pass the SPG folder, a prepared folder or a sketch file")
    if categories:
        found = {s.category for s in sketches}
        missing = sorted(set(categories) - found)
        if missing:
            raise DataError(f"{root} [{split}] has no sketches of {', '.join(missing)}; "
                            f"it has {', '.join(sorted(found))}")
        sketches = [s for s in sketches if s.category in categories]
    if limit:
        sketches = first_per_category(sketches, limit)
    if not sketches:
        raise DataError(f"{root} [{split}] holds no sketches")
    return sketches


def first_per_category(sketches: list[Sketch], limit: int) -> list[Sketch]:
    """The first `limit` sketches of each category, in order (a reproducible slice of a split)."""
    taken: dict[str, int] = {}
    kept = []
    for sketch in sketches:
        taken[sketch.category] = taken.get(sketch.category, 0) + 1
        if taken[sketch.category] <= limit:
            kept.append(sketch)
    return kept


def prepare_splits(out_dir: Path, splits: list[str], source: Path | None = None, categories: list[str] | None = None,
                   synthetic: int | None = None, seed: int = 0) -> list[Path]:
    """Write `<out>/<split>.npz` for each split, from SPG/prepared data or (with `synthetic` = N training sketches
    per category; N/5 for the other splits) from the procedural generator."""
    if (source is None) == (synthetic is None):
        raise ConfigError("give either a SOURCE (SPG folder or sketch file) or --synthetic N, not both or neither")
    if source is not None and Path(source).is_file() and len(splits) != 1:
        raise ConfigError(f"{source} is one file: name the one split it becomes, e.g. --splits test")
    out_dir = ensure_writable_dir(out_dir)
    written = []
    for number, split in enumerate(splits):
        if synthetic is not None:
            count = synthetic if split == "train" else max(1, synthetic // 5)
            sketches = make_synthetic_sketches(count, categories=categories or len(SYNTHETIC_CATEGORIES),
                                               seed=seed + number)
        else:
            sketches = load_sketches(source, split, categories)
        written.append(prepare(sketches, out_dir / f"{split}.npz"))
    return written


def named_category_parts(sketches: list[Sketch]) -> dict[str, list[str]]:
    """Category → part names; training needs every category to name its parts."""
    parts = category_parts(sketches)
    for category, names in parts.items():
        if not names:
            raise DataError(f"category {category!r} has no part names; read it with part_names")
    return parts


def _keyed(key: int | tuple[int, int], seed: int) -> tuple[int, np.random.Generator]:
    """Item index and its augmentation randomness: the engine's sampler gives (epoch, index) keys, so the
    augmentation is a pure function of (seed, epoch, index) and a resumed run sees the same samples."""
    epoch, index = key if isinstance(key, tuple) else (0, key)
    return index, np.random.default_rng([seed, epoch, index])


class StrokeImageDataset(Dataset):
    """Stage 1: one image per stroke and one per part with ≥ 2 strokes, each with its distance-field target."""

    def __init__(self, sketches: list[Sketch], canvas: int, line_width: int, df_k: float, augment_p: float = 0.0,
                 seed: int = 0) -> None:
        self.sketches = [normalize(s, canvas=FRAME) for s in sketches]
        self.canvas, self.line_width, self.df_k = canvas, line_width, df_k
        self.augment_p, self.seed = augment_p, seed
        self.items: list[tuple[int, tuple[int, ...]]] = []
        for i, sketch in enumerate(sketches):
            self.items += [(i, (s,)) for s in range(sketch.num_strokes)]
            for part in np.unique(sketch.labels):
                ids = tuple(int(s) for s in np.flatnonzero(sketch.labels == part))
                if len(ids) >= 2:
                    self.items.append((i, ids))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        index, rng = _keyed(key, self.seed)
        i, ids = self.items[index]
        sketch = self.sketches[i]
        sketch = replace(sketch, strokes=[sketch.strokes[s] for s in ids], labels=sketch.labels[list(ids)])
        if self.augment_p:
            # S0.4 stage 1: one affine (translate ±10 %, shear ±5°) on image and DF alike; no stroke dropping.
            sketch = augment_sketch(sketch, rng, p=self.augment_p, drop_p=0.0, translate=0.1, shear=5.0, canvas=FRAME)
        ink = render_union(sketch, range(sketch.num_strokes), size=self.canvas, width=self.line_width, canvas=FRAME)
        return {"image": torch.from_numpy(ink > 0).float()[None],
                "df": torch.from_numpy(np.asarray(distance_field(ink > 0, self.df_k), np.float32))[None]}


class SketchDataset(Dataset):
    """Stage 2 / inference: a sketch's strokes drawn one per channel (S×H×W uint8), labels and part count."""

    def __init__(self, sketches: list[Sketch], parts: dict[str, list[str]], canvas: int, line_width: int,
                 augment_p: float = 0.0, seed: int = 0) -> None:
        unknown = sorted({s.category for s in sketches} - set(parts))
        if unknown:
            raise DataError(f"sketches of {', '.join(unknown)} but the model knows only {', '.join(parts)}; "
                            "train on those categories or pass sketches of known ones")
        self.sketches = [normalize(s, canvas=FRAME) for s in sketches]
        self.parts, self.canvas, self.line_width = parts, canvas, line_width
        self.augment_p, self.seed = augment_p, seed

    def __len__(self) -> int:
        return len(self.sketches)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = _keyed(key, self.seed)
        sketch = self.sketches[index]
        if self.augment_p:
            sketch = augment_sketch(sketch, rng, p=self.augment_p, canvas=FRAME)
        strokes = render_strokes(sketch, size=self.canvas, width=self.line_width, canvas=FRAME)
        return {"strokes": torch.from_numpy(np.ascontiguousarray(strokes > 0)),
                "labels": torch.from_numpy(sketch.labels.astype(np.int64)),
                "groups": len(self.parts[sketch.category]), "index": index}


def collate_sketches(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad to the most strokes/parts of the batch: blank images, label −1, and validity masks for both."""
    n, most = len(items), max(len(item["labels"]) for item in items)
    size = items[0]["strokes"].shape[1:]
    strokes = torch.zeros(n, most, *size, dtype=torch.bool)
    labels = torch.full((n, most), -1, dtype=torch.long)
    groups = torch.tensor([item["groups"] for item in items])
    for row, item in enumerate(items):
        count = len(item["labels"])
        strokes[row, :count] = item["strokes"]
        labels[row, :count] = item["labels"]
    group_valid = torch.arange(int(groups.max())) < groups[:, None]
    return {"strokes": strokes, "labels": labels, "stroke_valid": labels >= 0, "group_valid": group_valid,
            "index": torch.tensor([item["index"] for item in items])}


class SketchDataModule(SegmentationDataModule):
    """The engine's resumable, rank-sharded loaders with the sketch collation (default collation for stage 1)."""

    def __init__(self, train: Dataset, vals: list[Dataset], data: SketchDataConfig, seed: int,
                 collate: Any = None) -> None:
        super().__init__(train, vals, data.batch_size, data.val_batch_size or data.batch_size, data.num_workers,
                         seed, ignore_index=-1, stride=1)
        self.collate = collate


def membership(labels: Tensor, group_valid: Tensor) -> Tensor:
    """N×S labels → N×G×S float targets: 1 if stroke s is in part g, 0 if not, −1 for padded rows/columns."""
    groups = torch.arange(group_valid.size(1), device=labels.device).view(1, -1, 1)
    target = (labels.unsqueeze(1) == groups).float()
    valid = group_valid.unsqueeze(2) & (labels >= 0).unsqueeze(1)
    return target.masked_fill(~valid, -1.0)


# ---- drawing ------------------------------------------------------------------------------------------------
def part_palette(num_parts: int) -> np.ndarray:
    """num_parts×3 uint8 colours, tab10 first."""
    if num_parts <= len(PART_COLOURS):
        return np.asarray(PART_COLOURS[:num_parts], np.uint8)
    return np.concatenate([np.asarray(PART_COLOURS, np.uint8), default_palette(num_parts)[len(PART_COLOURS):]])


def draw_parts(sketch: Sketch, labels: np.ndarray, size: int = 256, width: int = 2) -> np.ndarray:
    """H×W×3 uint8 picture on white: each stroke in its part's colour (later strokes on top)."""
    strokes = render_strokes(normalize(sketch, canvas=FRAME), size=size, width=width, canvas=FRAME) > 0
    palette = part_palette(max(len(sketch.part_names), int(np.max(labels, initial=0)) + 1))
    picture = np.full((size, size, 3), 255, np.uint8)
    for ink, label in zip(strokes, labels):
        picture[ink] = palette[label]
    return picture


def sketch_svg(sketch: Sketch, labels: np.ndarray, size: int = 256, width: int = 2) -> str:
    """An SVG of the sketch, one polyline per stroke in its part's colour, with a legend of the part names."""
    drawn = normalize(sketch, canvas=size, box=round(size * 156 / 256))
    palette = part_palette(max(len(sketch.part_names), int(np.max(labels, initial=0)) + 1))
    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 {size} {size}">',
             f'<rect width="{size}" height="{size}" fill="white"/>']
    for stroke, label in zip(drawn.strokes, labels):
        r, g, b = (int(v) for v in palette[label])
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in stroke)
        lines.append(f'<polyline points="{points}" fill="none" stroke="rgb({r},{g},{b})" stroke-width="{width}" '
                     f'stroke-linecap="round" stroke-linejoin="round"><title>{_part_name(sketch, label)}</title>'
                     "</polyline>")
    for row, name in enumerate(sketch.part_names):
        r, g, b = (int(v) for v in palette[row])
        lines.append(f'<text x="4" y="{12 + 12 * row}" font-size="10" fill="rgb({r},{g},{b})">{_escape(name)}</text>')
    return "\n".join([*lines, "</svg>\n"])


def _part_name(sketch: Sketch, label: int) -> str:
    return _escape(sketch.part_names[label]) if 0 <= label < len(sketch.part_names) else f"part {label}"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---- Lightning tasks ----------------------------------------------------------------------------------------
class _SketchTask(SegwiseTask):
    """What both stages add to the shared task: sketch panels in TensorBoard."""

    def _write_images(self, tag: str, panels: list[np.ndarray]) -> None:
        if self.global_rank != 0 or self.logger is None or not hasattr(self.logger, "experiment"):
            return
        for i, panel in enumerate(panels):
            self.logger.experiment.add_image(f"{tag}/{i}", panel, self.global_step, dataformats="HWC")


def _grey(image: Tensor) -> np.ndarray:
    """1×H×W values in [0, 1] → H×W×3 uint8, ink dark on white."""
    array = (255 * (1 - image[0].float().clamp(0, 1))).byte().cpu().numpy()
    return np.repeat(array[..., None], 3, axis=2)


class StrokeEmbedTask(_SketchTask):
    """Stage 1: reconstruction + distance-field autoencoder loss; validation logs loss, BCE and ink accuracy."""

    def __init__(self, model: StrokeEmbedder, spec: ModelSpec, config: SketchConfig) -> None:
        super().__init__(model, spec, config)
        self.loss = EmbeddingLoss(config.embed.df_weight)
        self._panels: list[np.ndarray] = []

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.model(batch["image"])
        loss = self.loss(out["recon"], out["df"], batch["image"], batch["df"])
        self.check_finite(loss, batch_idx)
        size = batch["image"].size(0)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for name, value in self.loss.last_values.items():
            self.log(f"train/loss_{name}", value, batch_size=size)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._panels = []

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self.model(batch["image"])
        size = batch["image"].size(0)
        self.log("val/loss", self.loss(out["recon"], out["df"], batch["image"], batch["df"]), batch_size=size,
                 sync_dist=True, prog_bar=True)
        self.log("val/recon_bce", self.loss.last_values["recon"], batch_size=size, sync_dist=True)
        accuracy = ((out["recon"] > 0) == (batch["image"] > 0.5)).float().mean()
        self.log("val/acc", accuracy, batch_size=size, sync_dist=True)
        for i in range(min(size, self.config.trainer.log_images - len(self._panels))):
            self._panels.append(side_by_side(
                [_grey(batch["image"][i]), _grey(out["recon"][i].sigmoid()), _grey(batch["df"][i]),
                 _grey(out["df"][i].sigmoid())], ["stroke", "reconstruction", "DF target", "DF predicted"]))

    def on_validation_epoch_end(self) -> None:
        self._write_images("val_embed", self._panels)


def teacher_forcing_ratio(step: int, segment: SegmentConfig) -> float:
    """r(step) = r0 − (r0 − r1)·min(step / T, 1), the S0 port's linear schedule of scheduled sampling."""
    start, end = segment.teacher_forcing_start, segment.teacher_forcing_end
    return start - (start - end) * min(step / segment.teacher_forcing_steps, 1.0)


class SketchSegmentTask(_SketchTask):
    """Stage 2: focal membership BCE with scheduled sampling; validation decodes auto-regressively (P/C/SAcc/CAcc)."""

    def __init__(self, model: ContextSeg | StrokeClassifier, spec: ModelSpec, config: SketchConfig,
                 val_sketches: list[Sketch]) -> None:
        super().__init__(model, spec, config)
        self.val_sketches = val_sketches
        self.loss = FocalMembershipLoss(config.segment.focal_gamma)
        self._predicted: dict[int, np.ndarray] = {}

    def segmentation_loss(self, batch: dict[str, Tensor], teacher_forcing: bool) -> Tensor:
        strokes, valid, groups = batch["strokes"].float(), batch["stroke_valid"], batch["group_valid"]
        target = membership(batch["labels"], groups)
        if teacher_forcing:
            decoder_images = union_images(strokes, target[:, :-1].clamp_min(0) > 0)
        else:
            _, decoder_images = self.model.decoder_inputs(strokes, valid, groups)
        return self.loss(self.model(strokes, valid, decoder_images, groups), target)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        ratio = teacher_forcing_ratio(self.global_step, self.config.segment)
        loss = self.segmentation_loss(batch, teacher_forcing=bool(torch.rand(()) < ratio))
        self.check_finite(loss, batch_idx)
        size = batch["labels"].size(0)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/teacher_forcing", ratio, batch_size=size)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._predicted = {}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.log("val/loss", self.segmentation_loss(batch, teacher_forcing=True), batch_size=batch["labels"].size(0),
                 sync_dist=True)
        labels = self.model.segment(batch["strokes"].float(), batch["stroke_valid"], batch["group_valid"]).cpu()
        for row, index in enumerate(batch["index"].tolist()):
            self._predicted[index] = labels[row, : self.val_sketches[index].num_strokes].numpy()

    def on_validation_epoch_end(self) -> None:
        if not self._predicted:
            return
        # Under DDP each rank scores its own shard of the validation sketches; the logged values are rank means.
        indices = sorted(self._predicted)
        sketches = [self.val_sketches[i] for i in indices]
        metrics = sketch_metrics(sketches, [self._predicted[i] for i in indices])
        for key, name in LOGGED_METRICS.items():
            self.log(f"val/{name}", float(metrics["mean"][key]), prog_bar=name == "C", sync_dist=True)
        canvas, width = self.spec.image_size[0], self.model.embedder.line_width
        panels = [side_by_side([draw_parts(s, s.labels, canvas, width),
                                draw_parts(s, self._predicted[i], canvas, width)],
                               ["ground truth", "prediction"], f"{s.category} {s.key}")
                  for i, s in zip(indices[: self.config.trainer.log_images], sketches)]
        self._write_images("val_sketches", panels)


class StrokeClassifierTask(SketchSegmentTask):
    """The no-context baseline: cross entropy of each stroke's part, restricted to its category's parts."""

    def segmentation_loss(self, batch: dict[str, Tensor], teacher_forcing: bool) -> Tensor:
        groups = batch["group_valid"].size(1)  # the batch's most parts; the head has the model's most
        logits = self.model(batch["strokes"].float(), batch["stroke_valid"])[..., :groups]
        logits = logits.masked_fill(~batch["group_valid"].unsqueeze(1), float("-inf"))
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-1)


# ---- training entry points ----------------------------------------------------------------------------------
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
    train = load_sketches(data.root, data.train_split, data.categories, data.max_per_category)
    vals = ([load_sketches(data.root, data.val_split, data.categories, data.max_val_per_category)]
            if data.val_split else [])
    seed = config.trainer.seed
    train_set = StrokeImageDataset(train, data.canvas, data.line_width, data.df_k, data.augment_p, seed)
    val_sets = [StrokeImageDataset(v, data.canvas, data.line_width, data.df_k) for v in vals]
    trainer_config = config.trainer.model_copy(update={"monitor": "val/loss", "monitor_mode": "min"})
    run = open_run(config, lambda _: spec, "sketch_embed", resume_keys=SKETCH_RESUME_KEYS)
    datamodule = SketchDataModule(train_set, val_sets, data, seed)
    return fit(trainer_config, run, StrokeEmbedTask(model, spec, config), datamodule, bool(vals),
                list(callbacks))


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
    train = load_sketches(data.root, data.train_split, data.categories, data.max_per_category)
    vals = (load_sketches(data.root, data.val_split, data.categories, data.max_val_per_category)
            if data.val_split else [])
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
    run = open_run(config, lambda _: spec, "sketch", spec.name, resume_keys=SKETCH_RESUME_KEYS)
    datamodule = SketchDataModule(train_set, val_sets, data, seed, collate=collate_sketches)
    return fit(trainer_config, run, task, datamodule, bool(vals), list(callbacks))


# ---- evaluation and prediction ------------------------------------------------------------------------------
def load_segmenter(model_path: Path, device: str | None = None) -> tuple[ContextSeg | StrokeClassifier, ModelSpec]:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, spec = load_model(Path(model_path), device)
    if not isinstance(model, (ContextSeg, StrokeClassifier)):
        raise CheckpointError(f"{model_path} holds a {spec.name} model; pass a run directory made by "
                              "`segwise sketch train`")
    return model, spec


def segment_sketches(model: ContextSeg | StrokeClassifier, sketches: list[Sketch],
                     batch_size: int = 16) -> list[np.ndarray]:
    """Part label of every stroke of every sketch (auto-regressive decoding with last-wins for ContextSeg)."""
    device = next(model.parameters()).device
    dataset = SketchDataset(sketches, model.categories, model.embedder.image_size, model.embedder.line_width)
    labels: list[np.ndarray] = []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_sketches):
        out = model.segment(batch["strokes"].to(device).float(), batch["stroke_valid"].to(device),
                            batch["group_valid"].to(device)).cpu()
        labels += [out[row, : sketches[index].num_strokes].numpy() for row, index in enumerate(batch["index"].tolist())]
    return labels


def evaluate(model_path: Path, data_root: Path, split: str = "test", categories: list[str] | None = None,
             out_dir: Path | None = None, limit: int | None = None, device: str | None = None) -> dict[str, Any]:
    """P/C/SAcc/CAcc per category and their mean on a split; written to `<out>/metrics.json` and `.csv`."""
    model, spec = load_segmenter(model_path, device)
    sketches = load_sketches(data_root, split, categories or list(model.categories), limit)
    metrics = sketch_metrics(sketches, segment_sketches(model, sketches))
    out_dir = ensure_writable_dir(out_dir or Path(model_path) / "eval")
    metrics = {**metrics, "split": split, "model": str(model_path)}
    write_sketch_metrics(metrics, out_dir)
    return {**metrics, "out_dir": str(out_dir)}


def predict(model_path: Path, input_path: Path, out_dir: Path, category: str | None = None,
            device: str | None = None) -> list[Path]:
    """Colour each stroke by its predicted part: `<out>/<key>.svg` and `.png`, plus `labels.json`."""
    model, spec = load_segmenter(model_path, device)
    if category is not None and category not in model.categories:
        raise ConfigError(f"--category {category!r} is not one of the model's: {', '.join(model.categories)}")
    sketches = read_sketches(input_path, category=category)
    if category is None and len(model.categories) == 1:
        only = next(iter(model.categories))
        sketches = [s if s.category in model.categories else replace(s, category=only) for s in sketches]
    sketches = [replace(s, part_names=model.categories.get(s.category, s.part_names)) for s in sketches]
    out_dir = ensure_writable_dir(out_dir)
    canvas, width = model.embedder.image_size, model.embedder.line_width
    written, table = [], {}
    for number, (sketch, labels) in enumerate(zip(sketches, segment_sketches(model, sketches))):
        name = sketch.key or f"sketch_{number:05d}"
        atomic_write_text(out_dir / f"{name}.svg", sketch_svg(sketch, labels, canvas, width))
        written.append(write_png(out_dir / f"{name}.png", draw_parts(sketch, labels, canvas, width)))
        table[name] = {"category": sketch.category, "labels": labels.tolist(),
                       "parts": [sketch.part_names[int(k)] for k in labels]}
    atomic_write_text(out_dir / "labels.json", json.dumps(table, indent=1))
    return written
