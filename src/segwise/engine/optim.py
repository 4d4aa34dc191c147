"""Optimizer by torch.optim name with a backbone LR factor or layer-wise LR decay, and the LR schedules of
pytorch-segmentation and the smp trainer."""

from __future__ import annotations

import difflib
import math
from typing import Any

import torch
from torch import nn

from segwise.config import OptimizerConfig, SchedulerConfig
from segwise.errors import ConfigError


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    classes = {n.lower(): getattr(torch.optim, n) for n in dir(torch.optim)
               if isinstance(getattr(torch.optim, n), type) and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
               and n != "Optimizer"}
    if name.lower() not in classes:
        close = difflib.get_close_matches(name.lower(), list(classes), n=1)
        hint = f" Did you mean '{classes[close[0]].__name__}'?" if close else ""
        raise ConfigError(f"optimizer.name: torch.optim has no '{name}'.{hint} "
                          f"Known: {', '.join(sorted(c.__name__ for c in classes.values()))}")
    return classes[name.lower()]


def param_groups(model: nn.Module, config: OptimizerConfig) -> list[dict[str, Any]]:
    """Encoder parameters get lr × backbone_lr_factor (pytorch-segmentation's differential_lr), the rest the base lr;
    with `layer_decay`, one group per layer of a ViT (`layer_decay_groups`)."""
    if config.layer_decay is not None:
        return layer_decay_groups(model, config)
    encoder = getattr(model, "encoder", None)
    if encoder is None or config.backbone_lr_factor == 1.0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr, "name": "all"}]
    encoder_ids = {id(p) for p in encoder.parameters()}
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) in encoder_ids]
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids]
    groups = [{"params": backbone, "lr": config.lr * config.backbone_lr_factor, "name": "backbone"},
              {"params": head, "lr": config.lr, "name": "head"}]
    return [g for g in groups if g["params"]]  # a frozen backbone leaves its group empty


def layer_decay_groups(model: nn.Module, config: OptimizerConfig) -> list[dict[str, Any]]:
    """Layer-wise LR decay for ViT fine-tuning (BEiT/MAE): with L blocks, block i gets lr × decay^(L−i), the
    embeddings below block 0 lr × decay^(L+1), and everything above the last block (final norm, neck, head) the full
    lr. The model lists its layers from the input up in `decay_layers()` (embeddings, then one list per block)."""
    decay = config.layer_decay
    if not callable(getattr(model, "decay_layers", None)):
        raise ConfigError(f"optimizer.layer_decay={decay}: {type(model).__name__} has no layers to decay (only a ViT "
                          "that lists its blocks does, e.g. trimap_vit); remove optimizer.layer_decay, or use "
                          "optimizer.backbone_lr_factor for an encoder-decoder model")
    if config.backbone_lr_factor != 1.0:
        raise ConfigError(f"optimizer.layer_decay={decay} and optimizer.backbone_lr_factor="
                          f"{config.backbone_lr_factor} both scale the backbone's LR; set only one of them")
    layers = model.decay_layers()
    depth = len(layers) - 1  # blocks
    names = ["embed", *(f"block{i}" for i in range(depth))]
    seen: set[int] = set()
    groups = []
    for index, (name, params) in enumerate(zip(names, layers)):
        trainable = [p for p in params if p.requires_grad and id(p) not in seen]
        seen |= {id(p) for p in params}
        groups.append({"params": trainable, "lr": config.lr * decay ** (depth + 1 - index), "name": name})
    top = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    groups.append({"params": top, "lr": config.lr, "name": "head"})
    return [g for g in groups if g["params"]]  # frozen layers leave their groups empty


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    cls = optimizer_class(config.name)
    kwargs = {"weight_decay": config.weight_decay, **config.args}
    try:
        return cls(param_groups(model, config), lr=config.lr, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:  # unknown argument, or a value torch refuses
        raise ConfigError(f"optimizer {config.name} with lr={config.lr}, weight_decay={config.weight_decay}, "
                          f"args={config.args}: torch refuses them ({exc}); fix optimizer.args (see the "
                          f"documentation of torch.optim.{cls.__name__})") from None


def _warmup_then(decay, warmup_steps: int):
    """Linear warm-up from 0 to 1 over `warmup_steps`, then `decay(step)`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return decay(step)

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, config: SchedulerConfig, total_steps: int) -> dict[str, Any] | None:
    """A Lightning `lr_scheduler` dict; `total_steps` = optimizer steps of the whole run."""
    total = max(total_steps, 1)
    warm = config.warmup_steps
    floor = config.min_lr_ratio

    def poly(step: int) -> float:
        progress = min((step - warm) / max(total - warm, 1), 1.0)
        return floor + (1 - floor) * (1 - progress) ** config.power

    def cosine(step: int) -> float:
        progress = min((step - warm) / max(total - warm, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    lambdas = {"poly": poly, "cosine": cosine, "constant": lambda step: 1.0}
    if config.name in lambdas:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_then(lambdas[config.name], warm))
        return {"scheduler": scheduler, "interval": "step"}
    if config.name == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
            pct_start=config.onecycle_pct_start, div_factor=25.0, final_div_factor=1e4)
        return {"scheduler": scheduler, "interval": "step"}
    if config.name == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_epochs, gamma=config.gamma)
        return {"scheduler": scheduler, "interval": "epoch"}
    if config.name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=config.gamma,
                                                               patience=config.plateau_patience)
        return {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss", "strict": False}
    raise ConfigError(f"scheduler.name: unknown schedule {config.name!r}")
