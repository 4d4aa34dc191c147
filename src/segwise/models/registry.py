"""One model registry, like timm's: `create_model(name, **kwargs)` for every architecture segwise knows.

Every entry carries its task: the input/output contract of the model and so the command that trains it. Pixel
models of the `semantic` task take N×C×H×W images and return N×K×H×W logits; the other tasks have contracts of
their own (the trimap ViT takes RGB + prompt, ContextSeg's networks take stroke images).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from segwise.errors import ModelError

ModelFactory = Callable[..., nn.Module]

TASKS: dict[str, str] = {
    "semantic": "segwise train",
    "trimap": "segwise trimap train",
    "sketch_embed": "segwise sketch train-embed",
    "sketch": "segwise sketch train",
}
"""Task → the command that trains its models."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: ModelFactory
    family: str
    task: str  # a key of TASKS: the model's input/output contract
    uses_encoder: bool  # takes `encoder` (a backbone name)
    takes_weights: bool  # takes `encoder_weights` (pretrained backbone weights: a name or a local file)


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, *, family: str = "segwise", task: str = "semantic", uses_encoder: bool = False,
                   takes_weights: bool | None = None) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: make `factory(in_channels=..., classes=..., **kw)` reachable as `create_model(name)`.

    `task` (a key of `TASKS`) says which command trains the model; `takes_weights` (default: `uses_encoder`)
    passes `encoder_weights` on to models with a fixed backbone.
    """
    if task not in TASKS:
        raise ModelError(f"model '{name}': task {task!r} is not one of {', '.join(TASKS)}")

    def decorate(factory: ModelFactory) -> ModelFactory:
        key = name.lower()
        if key in _MODELS:
            raise ModelError(f"model name '{name}' is registered twice")
        weights = uses_encoder if takes_weights is None else takes_weights
        _MODELS[key] = ModelEntry(key, factory, family, task, uses_encoder, weights)
        return factory

    return decorate


def list_models(family: str | None = None, task: str | None = None) -> list[str]:
    """Every registered architecture name, optionally of one family ('smp', 'classic', ...) and/or one task."""
    return sorted(n for n, e in _MODELS.items()
                  if (family is None or e.family == family) and (task is None or e.task == task))


SPELLINGS = {"deeplabv3+": "deeplabv3plus", "unet++": "unetplusplus"}
"""Other systems' names of registered models (the smp trainer's `-m deeplabv3+`), accepted wherever a name is."""


def model_entry(name: str, tasks: tuple[str, ...] | None = None) -> ModelEntry:
    """The registry entry of `name` (or of one of its `SPELLINGS`); with `tasks`, refuse a model of another task in
    one line naming its command."""
    key = SPELLINGS.get(name.lower(), name.lower())
    if key not in _MODELS:
        close = difflib.get_close_matches(key, list(_MODELS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"model.name: unknown model '{name}'.{hint} Run `segwise models` for the full list.")
    entry = _MODELS[key]
    if tasks is not None and entry.task not in tasks:
        raise ModelError(f"model.name: '{name}' is a {entry.task} model, trained by `{TASKS[entry.task]}`; "
                         f"this command takes {' or '.join(tasks)} models (see `segwise models`)")
    return entry


def create_model(name: str, *, in_channels: int = 3, classes: int = 2, **kwargs) -> nn.Module:
    """Build a registered model; it returns logits N×classes×H×W at input resolution."""
    entry = model_entry(name)
    for key, accepted in (("encoder", entry.uses_encoder), ("encoder_weights", entry.takes_weights)):
        if accepted:
            continue
        if kwargs.get(key) is not None:
            raise ModelError(f"model '{name}' takes no '{key}' (got {kwargs[key]!r}); remove model.{key}")
        kwargs.pop(key, None)
    try:
        return entry.factory(in_channels=in_channels, classes=classes, **kwargs)
    except TypeError as exc:
        raise ModelError(f"model '{name}' rejected its arguments: {exc}; check model.args") from None


def input_stride(model: nn.Module) -> int:
    """Inputs must be a multiple of this; inference pads to it and crops back."""
    stride = getattr(model, "input_stride", None)
    if stride is None:
        encoder = getattr(model, "encoder", None)
        stride = getattr(encoder, "output_stride", 32)
    return int(stride)
