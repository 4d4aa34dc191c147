"""FactSeg's official checkpoints (Junjue-Wang/FactSeg, SimpleCV layout) and the PaddlePaddle reproduction's
`.pdparams` (liuhongen1234567/FactSeg_paddle, same names; PaddleRS's FactSeg, FPN convs as `inner_blocks.N`)
→ segwise's `FactSeg` and model file.

`.pth` files are read with `torch.load(weights_only=True)`, `.pdparams` with `segwise.convert.paddle`'s restricted
unpickler: a checkpoint holding anything but tensors / numpy arrays is refused, never executed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from segwise.convert.common import unmatched_key_error, unwrap_state_dict, write_imported
from segwise.convert.paddle import read_pdparams, state_of_arrays, to_torch_layout
from segwise.data import isaid
from segwise.errors import CheckpointError
from segwise.models.spec import ModelSpec
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
_PADDLERS_FPN = re.compile(r"^(fg|bi)fpn\.(inner|layer)_blocks\.(\d)\.")
"""PaddleRS's FactSeg keeps its FPN convs in lists (`fgfpn.inner_blocks.0.`): back to SimpleCV's `fpn_inner1.`."""
_RESNET_DEPTH = {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101",
                 (3, 8, 36, 3): "resnet152"}


def _rename(key: str) -> str | None:
    for pattern, target in _RENAMES:
        match = re.match(pattern, key)
        if match:
            levels = [str(int(g) - 1) for g in match.groups()]
            return target.format(*levels) + key[match.end():]
    return None


def convert_official_state_dict(state: Mapping[str, Any], source: Any = "the checkpoint") -> dict[str, Any]:
    """Official FactSeg state_dict (optionally DDP `module.`-prefixed) → the keys of our `FactSeg`; values as given.
    A key of another architecture fails, named with its shape."""
    converted, unknown = {}, []
    for key, value in state.items():
        new = _rename(key.removeprefix("module."))
        if new is None:
            unknown.append(key)
        else:
            converted[new] = value
    if unknown:
        raise unmatched_key_error(source, unknown[0], state[unknown[0]], "FactSeg", len(unknown))
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
    raw = unwrap_state_dict(raw)  # SimpleCV saves {'model': ..., 'opt': ..., 'global_step': ...}
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors")
    return convert_official_state_dict(raw, path)


def load_paddle_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read the Paddle reproduction's `.pdparams` without PaddlePaddle and return our converted state_dict."""
    raw = {_PADDLERS_FPN.sub(lambda m: f"{m[1]}fpn.fpn_{m[2]}{int(m[3]) + 1}.", key): value
           for key, value in state_of_arrays(read_pdparams(path), path).items()}
    return to_torch_layout(convert_official_state_dict(raw, path))


def convert_official_checkpoint(src: str | Path, out_dir: str | Path, class_names: list[str] | None = None,
                                paddle: bool | None = None) -> Path:
    """Official FactSeg `.pth` (or, with `paddle`, default for a `.pdparams` suffix, the Paddle reproduction's
    weights) → `out_dir/model.safetensors` + `model.yaml`, ready for `segwise eval/predict`.

    16-class checkpoints get iSAID's class names and palette; all get FactSeg's mean/std (raw 0–255 units).
    """
    paddle = Path(src).suffix == ".pdparams" if paddle is None else paddle
    state = load_paddle_checkpoint(src) if paddle else load_official_checkpoint(src)
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
    return write_imported(spec, state, src, f"FactSeg/{spec.encoder}", out_dir)
