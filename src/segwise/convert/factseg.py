"""FactSeg's official checkpoints (Junjue-Wang/FactSeg, SimpleCV layout) → segwise's `FactSeg` and model file.

Read with `torch.load(weights_only=True)`: a checkpoint holding anything but tensors is refused, never executed.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from segwise.data import isaid
from segwise.errors import CheckpointError
from segwise.models.spec import ModelSpec, save_model
from segwise.visualize import default_palette


# ---- official checkpoints -----------------------------------------------------------------------------------
# Official (Junjue-Wang/FactSeg + SimpleCV) key prefix → ours; FPN levels 1..4 become torchvision's 0..3.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^resencoder\.resnet\.", "encoder."),
    (r"^fgfpn\.fpn_inner(\d)\.", "sr_fpn.inner_blocks.{0}.0."),
    (r"^fgfpn\.fpn_layer(\d)\.", "sr_fpn.layer_blocks.{0}.0."),
    (r"^bifpn\.fpn_inner(\d)\.", "fa_fpn.inner_blocks.{0}.0."),
    (r"^bifpn\.fpn_layer(\d)\.", "fa_fpn.layer_blocks.{0}.0."),
    (r"^fg_decoder\.", "sr_decoder."),
    (r"^bi_decoder\.", "fa_decoder."),
    (r"^fg_cls\.", "sr_head."),
    (r"^bi_cls\.", "fa_head."),
)
_RESNET_DEPTH = {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101",
                 (3, 8, 36, 3): "resnet152"}


def _rename(key: str) -> str | None:
    for pattern, target in _RENAMES:
        match = re.match(pattern, key)
        if match:
            levels = [str(int(g) - 1) for g in match.groups()]
            return target.format(*levels) + key[match.end():]
    return None


def convert_official_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official FactSeg state_dict (optionally DDP `module.`-prefixed) → the keys of our `FactSeg`."""
    converted, unknown = {}, []
    for key, value in state.items():
        key = key.removeprefix("module.")
        new = _rename(key)
        if new is None:
            unknown.append(key)
        else:
            converted[new] = value
    if unknown:
        raise CheckpointError(f"{len(unknown)} key(s) of the checkpoint are not FactSeg keys, e.g. {unknown[:3]}; "
                              "pass an official FactSeg checkpoint (keys resencoder.*, fgfpn.*, bifpn.*, ...)")
    return converted


def official_encoder_name(state: dict[str, Tensor]) -> str:
    """The ResNet the official checkpoint was trained with, from its block counts (resnet50 for FactSeg)."""
    blocks = tuple(len({k.split(".")[2] for k in state if k.startswith(f"encoder.layer{i}.")}) for i in range(1, 5))
    if blocks not in _RESNET_DEPTH:
        raise CheckpointError(f"checkpoint encoder has {blocks} blocks per stage, which is no torchvision ResNet")
    return _RESNET_DEPTH[blocks]


def load_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read an official FactSeg `.pth` without unpickling code and return our converted state_dict."""
    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # missing file, corrupt file, or a pickle holding more than tensors (refused)
        raise CheckpointError(f"{path} cannot be read as a weights file ({type(exc).__name__}: {str(exc)[:200]}); "
                              "pass the official FactSeg .pth") from None
    for wrapper in ("model", "state_dict"):  # SimpleCV saves {'model': ..., 'opt': ..., 'global_step': ...}
        if isinstance(raw, dict) and isinstance(raw.get(wrapper), dict):
            raw = raw[wrapper]
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors")
    return convert_official_state_dict(raw)


def convert_official_checkpoint(src: str | Path, out_dir: str | Path, class_names: list[str] | None = None) -> Path:
    """Official FactSeg `.pth` → `out_dir/model.safetensors` + `model.yaml`, ready for `segwise eval/predict`.

    16-class checkpoints get iSAID's class names and palette; all get FactSeg's mean/std (raw 0–255 units).
    """
    state = load_official_checkpoint(src)
    missing = [k for k in ("sr_head.weight", "encoder.conv1.weight") if k not in state]
    if missing:
        raise CheckpointError(f"{src} lacks the FactSeg keys {missing} (official fg_cls / resencoder.resnet.conv1)")
    num_classes, in_channels = state["sr_head.weight"].shape[0], state["encoder.conv1.weight"].shape[1]
    is_isaid = num_classes == len(isaid.CLASS_NAMES)
    names = list(class_names or (isaid.CLASS_NAMES if is_isaid else [f"class_{i}" for i in range(num_classes)]))
    if len(names) != num_classes:
        raise CheckpointError(f"{src} has {num_classes} classes but {len(names)} class names were given")
    palette = [list(c) for c in isaid.PALETTE] if is_isaid else default_palette(num_classes).tolist()
    spec = ModelSpec(name="factseg", encoder=official_encoder_name(state), args={}, in_channels=int(in_channels),
                     num_classes=int(num_classes), class_names=names, palette=palette,
                     ignore_index=isaid.IGNORE_INDEX, mean=list(isaid.MEAN) if in_channels == 3 else None,
                     std=list(isaid.STD) if in_channels == 3 else None)
    model = spec.build()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{src} does not fit FactSeg/{spec.encoder}: {str(exc)[:400]}") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, spec, out_dir)
    return out_dir
