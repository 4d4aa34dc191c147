"""Checkpoints of the two smp-based trainers → segwise model files: pytorch-segmentation's smp mode and the smp
trainer (a bare smp `state_dict`, or either tool's checkpoint dict with model/optimizer/scheduler state and the
names of the model, encoder, classes, extra channel folders and normalisation).

Nothing pickled is ever executed: the file is read with `torch.load(weights_only=True)`, and the only globals
allowed besides tensors are numpy's array and dtype types (the smp trainer stores its mean/std as numpy arrays).

The smp trainer's models end in sigmoids: one logit for one class, else one per listed class plus a background
channel *last*. segwise's models are K ≥ 2 softmax with background as class 0, so:
- one logit z becomes the two logits [0, z]: softmax([0, z]) = [1 − σ(z), σ(z)], the same probabilities;
- n + 1 logits are reordered background-first: the same labels (argmax), softmax instead of independent sigmoids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from segwise.convert.common import read_trainer_checkpoint, unwrap_state_dict
from segwise.errors import CheckpointError
from segwise.models import list_models, model_entry
from segwise.models.registry import SPELLINGS
from segwise.models.spec import ModelSpec, save_model
from segwise.visualize import default_palette

IMAGENET_MEAN = [123.675, 116.28, 103.53]  # pytorch-segmentation's loaders: ImageNet statistics, in 0-255 units
IMAGENET_STD = [58.395, 57.12, 57.375]
HEAD_KEYS = ("segmentation_head.0.weight", "segmentation_head.0.bias")


@dataclass
class SmpCheckpoint:
    """What a checkpoint says about its model; None where it is silent (then flags must say it)."""

    state: dict[str, Tensor]
    arch: str | None = None
    encoder: str | None = None
    class_values: list[int] | None = None
    extra_channels: list[str] = field(default_factory=list)
    mean: list[float] | None = None
    std: list[float] | None = None


def _state_of(raw: Any, path: Path) -> dict[str, Tensor]:
    state = unwrap_state_dict(raw)
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors (looked at the file and its 'model', "
                              "'state_dict' and 'model_state_dict' entries)")
    state = dict(state)
    if not any(k.startswith("encoder.") for k in state) and any(k.startswith("model.encoder.") for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items()}
    if not all(k in state for k in HEAD_KEYS):
        raise CheckpointError(f"{path} is not an smp model (no {HEAD_KEYS[0]}); `segwise convert smp` reads the "
                              "checkpoints of segmentation_models_pytorch models")
    return state


def _numbers(value: Any) -> list[float] | None:
    if value is None:
        return None
    array = np.asarray(value.numpy() if isinstance(value, Tensor) else value, dtype=np.float64).ravel()
    return [float(v) for v in array] if array.size else None


def _smp_args(raw: dict) -> dict:
    """pytorch-segmentation's config in its checkpoint: `arch` with `type`/`smp_args`, or a top-level `smp`."""
    config = raw.get("config") if isinstance(raw.get("config"), dict) else {}
    arch = config.get("arch") if isinstance(config.get("arch"), dict) else {}
    smp_args = arch.get("smp_args") or config.get("smp_args") or {}
    return {"arch": smp_args.get("type") or arch.get("type"), "encoder": smp_args.get("backbone")}


def inspect_checkpoint(path: Path) -> SmpCheckpoint:
    """The state_dict and everything the checkpoint dict names (smp trainer or pytorch-segmentation keys)."""
    raw = read_trainer_checkpoint(Path(path))
    found = SmpCheckpoint(_state_of(raw, Path(path)))
    if not isinstance(raw, dict) or all(isinstance(v, Tensor) for v in raw.values()):
        return found  # a bare state_dict names nothing
    named = _smp_args(raw)
    found.arch = raw.get("model_name") or named["arch"]
    found.encoder = raw.get("encoder_name") or named["encoder"]
    if raw.get("class_list") is not None:
        found.class_values = [int(v) for v in np.asarray(raw["class_list"]).ravel()]
    found.extra_channels = [str(d) for d in raw.get("add_dirs") or []]
    mean_var = raw.get("mean_var")
    if isinstance(mean_var, (list, tuple)) and len(mean_var) == 2:
        found.mean, found.std = _numbers(mean_var[0]), _numbers(mean_var[1])
    return found


def segwise_arch(name: str) -> str:
    """A trainer's model name (`Unet`, `deeplabv3+`, `UnetPlusPlus`) → the segwise registry name."""
    key = SPELLINGS.get(name.lower(), name.lower())
    if key not in list_models(family="smp"):
        raise CheckpointError(f"model {name!r} is no smp architecture segwise knows ({', '.join(list_models('smp'))})"
                              "; give the right one with --arch")
    return model_entry(key).name


def background_value(class_values: list[int]) -> int:
    """A mask value for class 0 that is not a listed class (masks map every unlisted value to background)."""
    return next(v for v in range(len(class_values) + 1) if v not in class_values)


def sigmoid_to_softmax(state: dict[str, Tensor], logits: int) -> dict[str, Tensor]:
    """One logit z → [0, z]; n + 1 logits (background last) → background first. See the module docstring."""
    weight, bias = (state[k] for k in HEAD_KEYS)
    if logits == 1:
        weight = torch.cat([torch.zeros_like(weight), weight])
        bias = torch.cat([torch.zeros_like(bias), bias])
    else:
        order = [logits - 1, *range(logits - 1)]
        weight, bias = weight[order], bias[order]
    return {**state, HEAD_KEYS[0]: weight, HEAD_KEYS[1]: bias}


def convert_smp_checkpoint(src: Path, out_dir: Path, *, arch: str | None = None, encoder: str | None = None,
                           sigmoid: bool | None = None, class_values: list[int] | None = None,
                           class_names: list[str] | None = None, extra_channels: list[str] | None = None,
                           mean: list[float] | None = None, std: list[float] | None = None) -> ModelSpec:
    """Write `out_dir/model.safetensors` + `model.yaml` for an smp checkpoint; flags fill what the file does not
    say and win over it. `sigmoid` (default: when the file is an smp trainer dict, or has one logit) converts
    the sigmoid head as the module docstring says. Returns the written model's description."""
    found = inspect_checkpoint(Path(src))
    arch = arch or found.arch
    encoder = encoder or found.encoder
    if arch is None or encoder is None:
        raise CheckpointError(f"{src} does not name its {'architecture' if arch is None else 'encoder'}; give "
                              "--arch (e.g. unet) and --encoder (e.g. resnet34) as the model was built")
    logits = int(found.state[HEAD_KEYS[0]].shape[0])
    sigmoid = (found.class_values is not None or logits == 1) if sigmoid is None else sigmoid
    class_values = class_values if class_values is not None else found.class_values
    state = sigmoid_to_softmax(found.state, logits) if sigmoid else found.state
    num_classes = 2 if sigmoid and logits == 1 else logits
    if class_values is not None and sigmoid:
        class_values = [background_value(class_values), *class_values]
    if class_values is not None and len(class_values) != num_classes:
        raise CheckpointError(f"{src}: {len(class_values)} class values for a model with {num_classes} classes")
    extras = extra_channels if extra_channels is not None else found.extra_channels
    first = next(v for k, v in state.items() if k.startswith("encoder.") and v.ndim == 4)
    in_channels = int(first.shape[1])
    mean, std = mean or found.mean, std or found.std
    if mean is None or std is None:
        if in_channels != 3:
            raise CheckpointError(f"{src} does not hold the normalisation of its {in_channels} input channels; give "
                                  "--mean and --std (one value per channel, raw pixel units)")
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    default_names = (["background", *(f"class_{v}" for v in class_values[1:])] if class_values
                     else [f"class_{i}" for i in range(num_classes)])
    names = class_names or default_names
    spec = ModelSpec(name=segwise_arch(arch), encoder=encoder, args={}, in_channels=in_channels,
                     num_classes=num_classes, class_names=list(names), palette=default_palette(num_classes).tolist(),
                     mean=list(mean), std=list(std), extra_channels=list(extras), class_values=class_values,
                     unmapped="background" if sigmoid and class_values is not None else "error",
                     # the smp trainer has no void value: its default class list [255] makes 255 a class
                     ignore_index=-1 if sigmoid and class_values is not None else 255)
    if len(spec.class_names) != num_classes or len(spec.mean) != in_channels:
        raise CheckpointError(f"{src}: {len(spec.class_names)} class names / {len(spec.mean)} mean values for a "
                              f"model with {num_classes} classes and {in_channels} input channels; fix --classes / "
                              "--mean --std")
    model = spec.build()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{src} does not fit {arch}/{encoder} with smp's default decoder: "
                              f"{str(exc).splitlines()[0][:300]}; check --arch and --encoder") from None
    save_model(model, spec, Path(out_dir))
    return spec
