"""`segwise models`: every architecture `create_model` accepts, grouped by the task (and so the command) that trains
it, with its parameter count and the encoders it accepts; `--encoders` lists the encoder names instead."""

from __future__ import annotations

import argparse
import inspect
import warnings
from typing import Any

from segwise.errors import SegwiseError

ANY_ENCODER = "any"
DILATABLE = "dilatable ones: not vgg*, xception* or tu- transformers (swin, vit)"
# Encoders an architecture takes when it takes fewer than ANY_ENCODER: the checks of smp 0.6's constructors (dpt builds
# smp's TimmViTEncoder; deeplabv3/v3plus/pan dilate the encoder; linknet and unet++ refuse Mix Transformers) and of
# our own models (duc_hdc dilates a ResNet). The registry has no field for it, so it is kept here, next to its only use.
ENCODER_RULES: dict[str, str] = {
    "dpt": "tu-<timm> only, made for ViTs (e.g. tu-vit_base_patch16_224)",
    "deeplabv3": DILATABLE, "deeplabv3plus": DILATABLE, "pan": DILATABLE,
    "linknet": "any but mit_b*", "unetplusplus": "any but mit_b*",
    "duc_hdc": "smp ResNets / ResNeXts (it dilates their last two stages)",
}
COUNT_ENCODER = {"dpt": "tu-vit_base_patch16_224"}  # where the default encoder does not fit (smp's own DPT default)
ANY_NOTE = ("any = every smp encoder (`segwise models --encoders`) and tu-<timm model> with a feature pyramid; plain "
            "ViTs fit dpt only.")
PARAMS_NOTE = "params: with each model's default arguments; smp architectures with encoder resnet18 (dpt: {dpt})."


def register(sub: Any) -> None:
    """Add `models` to the `segwise` subcommands."""
    p = sub.add_parser("models", help="list the architectures by task, with parameter counts and accepted encoders",
                       description="Every architecture create_model accepts, grouped by the task (and command) that "
                                   "trains it.")
    p.add_argument("--filter", metavar="TEXT", help="only names containing TEXT (case-insensitive)")
    p.add_argument("--encoders", action="store_true", help="list the smp encoder names instead (--filter applies)")
    p.set_defaults(handler=cmd_models)


def cmd_models(args: argparse.Namespace) -> None:
    print(encoder_list(args.filter) if args.encoders else model_table(args.filter))


def _matches(name: str, text: str | None) -> bool:
    return text is None or text.lower() in name.lower()


def model_table(text: str | None = None) -> str:
    """One block per task: name, family, parameter count and accepted encoders of each model whose name has `text`."""
    from segwise.models import list_models, model_entry
    from segwise.models.registry import TASKS

    lines, encoders, families = [], set(), set()
    for task, command in TASKS.items():
        names = [n for n in list_models(task=task) if _matches(n, text)]
        if not names:
            continue
        lines += [f"{task} models, trained by `{command}`:",
                  f"  {'name':<18} {'family':<8} {'params':>8}  encoders (--encoder)"]
        for name in names:
            entry, accepted = model_entry(name), _encoders(model_entry(name))
            encoders.add(accepted)
            families.add(entry.family)
            lines.append(f"  {name:<18} {entry.family:<8} {parameter_count(name):>8}  {accepted}")
        lines.append("")
    if not lines:
        raise SegwiseError(f"no model name contains {text!r}; run `segwise models` for the full list")
    if ANY_ENCODER in encoders:
        lines.append(ANY_NOTE)
    if "smp" in families:
        lines.append(PARAMS_NOTE.format(dpt=COUNT_ENCODER["dpt"]))
    return "\n".join(lines).rstrip()


def _encoders(entry: Any) -> str:
    if entry.uses_encoder:
        return ENCODER_RULES.get(entry.name, ANY_ENCODER)
    return "none (fixed; --encoder-weights: a local weights file)" if entry.takes_weights else "none (fixed)"


def parameter_count(name: str) -> str:
    """Parameters of `name` built with its default arguments, on the meta device (no memory, a few ms each)."""
    import torch

    from segwise.models import create_model, model_entry

    signature = inspect.signature(model_entry(name).factory).parameters
    kwargs = {k: p.default for k, p in signature.items()
              if k in ("in_channels", "classes") and p.default is not inspect.Parameter.empty}
    if name in COUNT_ENCODER:
        kwargs["encoder"] = COUNT_ENCODER[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            try:
                with torch.device("meta"):
                    model = create_model(name, **kwargs)
            except (RuntimeError, NotImplementedError):  # init code that reads values (.item()) needs real tensors
                model = create_model(name, **kwargs)
        except SegwiseError:
            return "?"
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    return f"{millions:.{1 if millions >= 1 else 2}f} M"


def encoder_list(text: str | None = None) -> str:
    """smp's encoder names that contain `text`, four to a row."""
    from segwise.models import list_encoders

    encoders = [e for e in list_encoders() if _matches(e, text)]
    if not encoders:
        raise SegwiseError(f"no smp encoder name contains {text!r}; any timm model also works as tu-<name>")
    rows = ["  " + "".join(f"{e:<30}" for e in encoders[start:start + 4]).rstrip()
            for start in range(0, len(encoders), 4)]
    return "\n".join([f"encoders ({len(encoders)}; also any timm model as tu-<name>):", *rows])
