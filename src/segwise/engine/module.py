"""The LightningModule for semantic segmentation: loss, optimisation, confusion-matrix validation, image logs."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from segwise.config import Config
from segwise.models.spec import ModelSpec
from segwise.engine.optim import build_optimizer, build_scheduler
from segwise.errors import ConfigError, TrainingError
from segwise.losses import build_loss
from segwise.metrics import ConfusionMatrix, per_image_miou
from segwise.visualize import colorize, side_by_side, to_display_rgb


class _BatchNormForBatchOfOne(nn.BatchNorm2d):
    """BatchNorm that falls back to running statistics when a channel sees a single value (batch of 1 at 1×1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.numel() // x.size(1) == 1:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            False, 0.0, self.eps)
        return super().forward(x)


def tolerate_batch_of_one(model: nn.Module) -> nn.Module:
    """Swap the class of every BatchNorm2d in place (same parameters and state-dict keys)."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = _BatchNormForBatchOfOne
    return model


def freeze(model: nn.Module, backbone: bool, batchnorm: bool) -> nn.Module:
    """Fine-tuning modes: the encoder's parameters, and/or every BatchNorm's scale and shift, take no gradient
    (and so stay out of the optimizer); `SegmentationTask.train` keeps frozen BatchNorms in eval mode."""
    if backbone:
        encoder = getattr(model, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise ConfigError(f"model.freeze_backbone: {type(model).__name__} has no separate backbone (no "
                              "`encoder`); use it with a model that takes --encoder (smp models, FactSeg, GCN, "
                              "DUC-HDC, SegResNet, pspnet_dilated), or drop the option")
        encoder.requires_grad_(False)
    if batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.requires_grad_(False)
    return model


def split_prefixes(names: Sequence[str], has_main: bool) -> list[str]:
    """Log prefix of each validation set: `val` for the main one, `val_<label>` for the others, where a split
    given as a path is labelled by its folder name (with its parent's when that alone would repeat)."""
    labels = [Path(name).name or name for name in names]
    labels = [label if labels.count(label) == 1 else "_".join(Path(name).parts[-2:]) for label, name in
              zip(labels, names)]
    return ["val" if has_main and i == 0 else f"val_{label}" for i, label in enumerate(labels)]


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
             "numpy_pos": int(np_state[2]), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((state["python_version"], tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class SegwiseTask(L.LightningModule):
    """What every task's LightningModule shares: optimizer and LR schedule from the config, the non-finite-loss
    stop, and the model description, config and RNG state in every checkpoint (exact resume)."""

    def __init__(self, model: nn.Module, spec: ModelSpec, config: Any) -> None:
        super().__init__()
        self.model, self.spec, self.config = model, spec, config

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.model, self.config.optimizer)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(optimizer, self.config.scheduler, total)
        return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer

    def check_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Stop on a NaN/inf loss before it reaches the weights; last.ckpt still holds the last good state."""
        if not torch.isfinite(loss):
            raise TrainingError(
                f"non-finite training loss ({loss.item()}) at global step {self.global_step} (epoch "
                f"{self.current_epoch}, batch {batch_idx}); training stopped and the last good checkpoint in "
                f"{self.trainer.default_root_dir}/checkpoints was kept. Lower optimizer.lr, enable "
                "trainer.grad_clip, or check the data for NaN/inf values.")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["segwise"] = {"spec": self.spec.to_dict(), "config": self.config.to_dict(), "rng": _rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "segwise" in checkpoint:
            _set_rng_state(checkpoint["segwise"]["rng"])
        self._adopt_loader_state(checkpoint)

    def _adopt_loader_state(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before segwise kept the data position in its data module held it in the training
        loader, which Lightning would now refuse; hand it to the data module (restored right after this hook)."""
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        states = fit_loop.pop("combined_loader", None)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if states and datamodule is not None:
            checkpoint.setdefault(type(datamodule).__qualname__, states[0])


class SegmentationTask(SegwiseTask):
    """Trains `model` on (image, mask) batches. `val_sizes`: image count of each validation set by name, the main
    one (data.val_split) first when there is one; the others log as `val_<label>/*` and, together, as
    `val_extra/miou`, their mIoUs weighted by image count (the smp trainer's score for --use-only-add-val)."""

    def __init__(self, model: nn.Module, spec: ModelSpec, config: Config,
                 val_sizes: dict[str, int] | Sequence[str]) -> None:
        model = freeze(model, config.model.freeze_backbone, config.model.freeze_bn)
        super().__init__(tolerate_batch_of_one(model), spec, config)
        sizes = val_sizes if isinstance(val_sizes, dict) else dict.fromkeys(val_sizes, 1)
        self.val_names, self.val_sizes = list(sizes), list(sizes.values())
        data = config.data
        self.has_main_val = bool(self.val_names) and not getattr(data, "extra_val_only", False) \
            and self.val_names[0] == data.val_split
        self.val_prefixes = split_prefixes(self.val_names, self.has_main_val)
        loss = config.loss
        # Every loss option goes to every term's factory, so a new LossConfig field needs no change here
        # (but aux_weight, which training_step applies).
        self.loss = build_loss(loss.name, num_classes=spec.num_classes, ignore_index=spec.ignore_index,
                               **loss.model_dump(exclude={"name", "aux_weight"}))
        self.channels_last = config.trainer.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._matrices: list[ConfusionMatrix] = []
        self._worst: list[tuple[float, int, np.ndarray]] = []
        self._shown: list[np.ndarray] = []
        self._tiebreak = itertools.count()

    def train(self, mode: bool = True) -> SegmentationTask:
        """Lightning switches the task to train mode each epoch; frozen BatchNorms keep their running statistics."""
        super().train(mode)
        if mode and self.config.model.freeze_bn:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, images: torch.Tensor, aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits; with `aux` (models with `has_aux`), (logits, auxiliary-head logits)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images, aux=True) if aux else self.model(images)

    # ---- training -------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        aux_loss = None
        if getattr(self.model, "has_aux", False):  # an auxiliary head (PSPNet's) is scored in training only
            logits, aux_logits = self(batch["image"], aux=True)
            aux_loss = self.loss(aux_logits, batch["mask"])
        else:
            logits = self(batch["image"])
        loss = self.loss(logits, batch["mask"])  # after the aux loss: last_values (logged below) are the main ones
        if aux_loss is not None:
            self.log("train/loss_aux", aux_loss, batch_size=batch["image"].size(0))
            loss = loss + self.config.loss.aux_weight * aux_loss
        self.check_finite(loss, batch_idx)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].size(0))
        if len(self.loss.last_values) > 1:
            for name, value in self.loss.last_values.items():
                self.log(f"train/loss_{name}", value, batch_size=batch["image"].size(0))
        return loss

    # ---- validation -----------------------------------------------------------------------------------------
    def _is_main(self, dataloader_idx: int) -> bool:
        return dataloader_idx == 0 and self.has_main_val

    def _evaluated(self, dataloader_idx: int) -> bool:
        """Extra validation sets run every `data.extra_val_every` epochs (the smp trainer's --adv-freq)."""
        return self._is_main(dataloader_idx) or (self.current_epoch + 1) % self.config.data.extra_val_every == 0

    def on_validation_epoch_start(self) -> None:
        self._matrices = [ConfusionMatrix(self.spec.num_classes, self.spec.ignore_index, device=self.device)
                          for _ in self.val_names]
        self._worst, self._shown = [], []

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self._evaluated(dataloader_idx):
            return
        logits = self(batch["image"])
        target = batch["mask"]
        preds = logits.argmax(1)
        self._matrices[dataloader_idx].update(preds, target)
        if self._is_main(dataloader_idx):
            self.log("val/loss", self.loss(logits, target), add_dataloader_idx=False, batch_size=target.size(0),
                     sync_dist=True)
            if self.global_rank == 0 and self.logger is not None:
                self._collect_images(batch, preds)

    def _panel(self, image: torch.Tensor, target: torch.Tensor, pred: torch.Tensor, caption: str) -> np.ndarray:
        palette = np.asarray(self.spec.palette, dtype=np.uint8)
        array = image.float().permute(1, 2, 0).cpu().numpy()
        if self.spec.mean is not None:
            array = array * np.asarray(self.spec.std, np.float32) + np.asarray(self.spec.mean, np.float32)
        gt = target.cpu().numpy()
        return side_by_side([to_display_rgb(array), colorize(gt, palette, self.spec.ignore_index),
                             colorize(pred.cpu().numpy(), palette, self.spec.ignore_index)],
                            ["image", "ground truth", "prediction"], caption)

    def _collect_images(self, batch: dict[str, Any], preds: torch.Tensor) -> None:
        """Keep the first `log_images` panels and the `log_worst_images` lowest-mIoU images of the epoch."""
        keep_first, keep_worst = self.config.trainer.log_images, self.config.trainer.log_worst_images
        if not keep_first and not keep_worst:
            return
        scores = per_image_miou(preds, batch["mask"], self.spec.num_classes, self.spec.ignore_index).tolist()
        for i, miou in enumerate(scores):
            caption = f"{batch['names'][i]}  mIoU {100 * miou:.1f}%"
            if len(self._shown) < keep_first:
                self._shown.append(self._panel(batch["image"][i], batch["mask"][i], preds[i], caption))
            if keep_worst and (len(self._worst) < keep_worst or -miou > self._worst[0][0]):
                item = (-miou, next(self._tiebreak), self._panel(batch["image"][i], batch["mask"][i], preds[i], caption))
                if len(self._worst) < keep_worst:
                    heapq.heappush(self._worst, item)
                else:
                    heapq.heapreplace(self._worst, item)

    def on_validation_epoch_end(self) -> None:
        extra_scores: list[tuple[float, int]] = []
        for index, (prefix, matrix) in enumerate(zip(self.val_prefixes, self._matrices)):
            if not self._evaluated(index):
                continue
            matrix.all_reduce()
            metrics = matrix.compute(self.spec.class_names, absent_classes=self.config.metrics.absent_classes)
            main = self._is_main(index)
            for key in ("miou", "pixel_accuracy", "mean_accuracy", "fwiou", "mdice"):
                self.log(f"{prefix}/{key}", float(np.nan_to_num(metrics[key])), prog_bar=key == "miou" and main,
                         add_dataloader_idx=False)
            if not main:
                extra_scores.append((float(np.nan_to_num(metrics["miou"])), self.val_sizes[index]))
            if main:
                for row in metrics["per_class"]:
                    if not np.isnan(row["iou"]):
                        self.log(f"val_class_iou/{row['name']}", float(row["iou"]), add_dataloader_idx=False)
        if extra_scores:
            total = sum(size for _, size in extra_scores)
            self.log("val_extra/miou", sum(score * size for score, size in extra_scores) / total,
                     prog_bar=not self.has_main_val, add_dataloader_idx=False)
        self._write_images()

    def _write_images(self) -> None:
        if self.global_rank != 0 or self.logger is None or not hasattr(self.logger, "experiment"):
            return
        writer = self.logger.experiment
        for i, panel in enumerate(self._shown):
            writer.add_image(f"val_images/{i}", panel, self.global_step, dataformats="HWC")
        for rank, (_, _, panel) in enumerate(sorted(self._worst, reverse=True)):
            writer.add_image(f"val_worst/{rank}", panel, self.global_step, dataformats="HWC")
