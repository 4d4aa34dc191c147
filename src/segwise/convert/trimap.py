"""Checkpoints of the SimpleClick-based trimap ViT (kjk1208/SegTrimapH100, `TrimapPlainVitModel`) → segwise's
`trimap_vit` and model file.

The upstream trainer saves `{'state_dict': ..., 'config': ...}`, its config holding the head's `loss_decode`, a
torch loss module. The file is read with `torch.load(weights_only=True)`, where those loss classes are admitted as
plain data (built without running their constructor); anything else that is no tensor, number or container is
refused, never executed. ViT width, depth, patch and grid, head width and up-sampling are read from the shapes.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segwise.convert.common import read_trainer_checkpoint, unmatched_key_error, unwrap_state_dict, write_imported
from segwise.data.matting import MEAN, STD, TRIMAP_VALUES
from segwise.errors import CheckpointError
from segwise.models.spec import ModelSpec
from segwise.models.trimap_vit import UPSAMPLE, VIT_SIZES

CLASS_NAMES = ["background", "unknown", "foreground"]
DEFAULT_IMG_SIZE = 448  # the published model's input size
WINDOW_PIXELS = 224  # SimpleClick attends within windows of 224 px (its MAE pretraining size) in all but some blocks
LOSS_CLASSES = [cls for _, cls in inspect.getmembers(nn.modules.loss, inspect.isclass)
                if issubclass(cls, nn.Module) and cls.__module__ == nn.modules.loss.__name__]
"""torch's loss modules: what the upstream config stores as `head_params.loss_decode`."""

# Upstream key prefix → ours (`{0}` is the first group, `{1}` the first group minus one).
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^patch_embed_mask\.", "mask_embed."),
    (r"^backbone\.(cls_token|pos_embed|patch_embed\.|blocks\.)", "vit.{0}"),
    (r"^neck\.down_4\.", "neck.x4."),
    (r"^neck\.down_8\.", "neck.x2."),
    (r"^neck\.down_16\.", "neck.x1."),
    (r"^neck\.down_32\.", "neck.x05."),
    (r"^head\.convs\.(\d+)\.conv\.", "head.proj.{0}.0."),
    (r"^head\.fusion_conv\.conv\.", "head.fuse.0."),
    (r"^head\.up_conv(\d)\.", "head.up.{1}."),
    (r"^head\.conv_seg\.", "head.classifier.1."),
)
_UNUSED = re.compile(r"^backbone\.(fc_norm|head|pre_logits)\.")
"""Upstream modules its trimap forward never runs (the MAE classifier): dropped and listed."""


@dataclass
class TrimapImport:
    """What `convert_trimap_checkpoint` wrote: the run folder, its model description and the checkpoint keys that
    were left out because the upstream model never uses them."""

    out_dir: Path
    spec: ModelSpec
    unused: list[str]


def _rename(key: str) -> str | None:
    for pattern, target in _RENAMES:
        match = re.match(pattern, key)
        if match:
            first = match.group(1) if match.groups() else ""
            minus_one = str(int(first) - 1) if first.isdigit() else first
            return target.format(first, minus_one) + key[match.end():]
    return None


def read_trimap_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state_dict (unwrapped, `module.` dropped) and the upstream model config ({} if absent) of a checkpoint."""
    with torch.serialization.safe_globals(LOSS_CLASSES):
        raw = read_trainer_checkpoint(Path(path))
    config = raw.get("config") if isinstance(raw, Mapping) else None
    state = unwrap_state_dict(raw)
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors (looked at the file and its 'model' and "
                              "'state_dict' entries); pass a checkpoint saved by the SimpleClick-based trimap code")
    return dict(state), config if isinstance(config, Mapping) else {}


def convert_trimap_state_dict(state: Mapping[str, Tensor], source: Any = "the checkpoint"
                              ) -> tuple[dict[str, Tensor], list[str]]:
    """Upstream `TrimapPlainVitModel` keys → `trimap_vit` keys, and the upstream keys left out as unused; a key of
    another architecture fails, named with its shape."""
    converted, unused, unknown = {}, [], []
    for key, value in state.items():
        new = _rename(key)
        if new is not None:
            converted[new] = value
        elif _UNUSED.match(key):
            unused.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise unmatched_key_error(source, unknown[0], state[unknown[0]], "SimpleClick trimap ViT", len(unknown))
    return converted, unused


def _needed(state: Mapping[str, Tensor], key: str, upstream: str, source: Any) -> Tensor:
    if key not in state:
        raise CheckpointError(f"{source} lacks {upstream!r}, which every SimpleClick trimap ViT has; pass a "
                              "checkpoint of TrimapPlainVitModel")
    return state[key]


def trimap_args(state: Mapping[str, Tensor], config: Mapping[str, Any], source: Any = "the checkpoint"
                ) -> dict[str, Any]:
    """`trimap_vit` arguments of a converted state_dict: size from the width, depth from the blocks, patch and
    input size from the patch embedding and the position grid (without one, upstream's NoPosEmbed variant, from the
    saved config), head width and up-sampling from the head."""
    patch_weight = _needed(state, "vit.patch_embed.proj.weight", "backbone.patch_embed.proj.weight", source)
    dim, patch = patch_weight.shape[0], patch_weight.shape[-1]
    size = next((name for name, (width, _, _) in VIT_SIZES.items() if width == dim), None)
    if size is None:
        raise CheckpointError(f"{source}: a ViT of width {dim} (backbone.patch_embed.proj.weight "
                              f"{tuple(patch_weight.shape)}) is none of trimap_vit's sizes "
                              f"({', '.join(f'{n} {w}' for n, (w, _, _) in VIT_SIZES.items())})")
    backbone = ((config.get("params") or {}).get("backbone_params") or {}).get("value") or {}
    heads = backbone.get("num_heads")
    if heads is not None and heads != VIT_SIZES[size][2]:
        raise CheckpointError(f"{source}: its config gives {heads} attention heads for width {dim}; trimap_vit's "
                              f"{size} ViT has {VIT_SIZES[size][2]}, so the checkpoint cannot be run as it was trained")
    depth = 1 + max((int(k.split(".")[2]) for k in state if k.startswith("vit.blocks.")), default=-1)
    if "vit.pos_embed" in state:
        grid = math.isqrt(state["vit.pos_embed"].shape[1] - 1)
    else:  # NoPosEmbedTrimapPlainVitModel: the input size is in the saved config only (448 when it is absent)
        img_size = backbone.get("img_size", DEFAULT_IMG_SIZE)
        grid = (img_size[0] if isinstance(img_size, (tuple, list)) else int(img_size)) // patch
    window = WINDOW_PIXELS // patch
    if grid > window and depth == 12:
        raise CheckpointError(f"{source} is a 12-block ViT with windowed attention, which SimpleClick runs as 2 "
                              "groups of 6 blocks; trimap_vit's 12-block layout has 4 groups of 3, so it cannot "
                              "reproduce this model")
    head_width = _needed(state, "head.proj.0.0.weight", "head.convs.0.conv.weight", source).shape[0]
    final = _needed(state, "head.classifier.1.weight", "head.conv_seg.weight", source)
    upsample = {2 ** n: name for name, n in UPSAMPLE.items()}.get(head_width // final.shape[1])
    if upsample is None or final.shape[0] != len(CLASS_NAMES):
        raise CheckpointError(f"{source}: head.conv_seg.weight {tuple(final.shape)} after a fusion of {head_width} "
                              "channels is no 3-class head with x1, x2 or x4 up-sampling")
    return {"size": size, "patch_size": int(patch), "img_size": int(grid * patch), "depth": depth,
            "window_size": window if grid > window else None, "upsample": upsample, "head_channels": int(head_width)}


def convert_trimap_checkpoint(src: str | Path, out_dir: str | Path) -> TrimapImport:
    """Upstream trimap ViT checkpoint → `out_dir/model.safetensors` + `model.yaml` for `segwise trimap
    eval/predict`; ImageNet mean/std as upstream normalises, the prompt channel passes unchanged."""
    raw, config = read_trimap_checkpoint(src)
    state, unused = convert_trimap_state_dict(raw, src)
    args = trimap_args(state, config, src)
    if "vit.pos_embed" not in state and "vit.cls_token" not in state:  # upstream's NoPosEmbed variant
        dim, grid = state["vit.patch_embed.proj.weight"].shape[0], args["img_size"] // args["patch_size"]
        state["vit.pos_embed"] = torch.zeros(1, grid * grid + 1, dim)  # adds nothing, as that variant adds nothing
        state["vit.cls_token"] = torch.zeros(1, 1, dim)  # dropped before the blocks either way
    used_ups = UPSAMPLE[args["upsample"]]
    for key in [k for k in state if k.startswith("head.up.") and int(k.split(".")[2]) >= used_ups]:
        del state[key]  # upstream builds both up-blocks and runs only those its `upsample` names
        unused.append(f"head.up_conv{int(key.split('.')[2]) + 1}.{key.split('.', 3)[3]}")
    spec = ModelSpec(name="trimap_vit", encoder=None, args=args, in_channels=4, num_classes=3,
                     class_names=list(CLASS_NAMES), palette=[[int(v)] * 3 for v in TRIMAP_VALUES],
                     mean=list(MEAN), std=list(STD))
    return TrimapImport(write_imported(spec, state, src, f"trimap_vit/{args['size']}", out_dir), spec, unused)
