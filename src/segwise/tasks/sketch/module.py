"""The two ContextSeg stages as LightningModules: the stroke autoencoder (stage 1) and the context transformer or
its per-stroke baseline (stage 2), with their losses, validation metrics and TensorBoard panels."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from segwise.data.sketch.formats import Sketch
from segwise.engine.module import SegwiseTask
from segwise.losses.sketch import EmbeddingLoss, FocalMembershipLoss
from segwise.metrics.sketch import sketch_metrics
from segwise.models.contextseg import ContextSeg, StrokeClassifier, StrokeEmbedder, union_images
from segwise.models.spec import ModelSpec
from segwise.tasks.sketch.config import SegmentConfig, SketchConfig
from segwise.tasks.sketch.draw import draw_parts
from segwise.visualize import side_by_side

LOGGED_METRICS = {"p_metric": "P", "c_metric": "C", "sacc": "SAcc", "cacc": "CAcc"}  # metric key → log name


def membership(labels: Tensor, group_valid: Tensor) -> Tensor:
    """N×S labels → N×G×S float targets: 1 if stroke s is in part g, 0 if not, −1 for padded rows/columns."""
    groups = torch.arange(group_valid.size(1), device=labels.device).view(1, -1, 1)
    target = (labels.unsqueeze(1) == groups).float()
    valid = group_valid.unsqueeze(2) & (labels >= 0).unsqueeze(1)
    return target.masked_fill(~valid, -1.0)


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
    """r(step) = r0 − (r0 − r1)·min(step / T, 1), the ContextSeg PyTorch port's linear scheduled sampling."""
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
