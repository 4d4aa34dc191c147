"""The ContextSeg PyTorch port's checkpoints (say859462/Summer_NYCU_DLP_2025_FINAL_PROJECT) → the two sketch stages.

The stroke embedder (`AutoencoderEmbed`, train_Embed.py) becomes a `contextseg_embed` model, the segmentation
transformer (`GpTransformer`, train_Segformer.py) with that embedder a `contextseg` model. Both are read with
`torch.load(weights_only=True)`: a file holding anything but tensors, numbers and containers is refused, never run.

Where the port and segwise lay the same function out differently, the weights are rewritten so the outputs agree:
- conv biases before a BatchNorm are folded into its running mean (exact in eval mode; cancelled in training);
- the CoordConv planes come in the other order (port: row, column; segwise: column, row): input channels swapped;
- the port's last transposed conv emits 1 channel, segwise's r channels and a 3×3 head: channel 0 carries the
  port's output, the head copies it (centre tap 1, all else 0);
- the port feeds codes to the transformer as they are: segwise's input projections become identities;
- segwise's `decoder_relu`, `encoder_norm` and `norm_eps` are set to the port's (none, none, 1e-6).
Not importable: the `SeqSpaFusion` block of the port's later commits (BiLSTM + GCN before the encoder), which
segwise does not have; such checkpoints are refused, naming the block.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segwise.convert.common import (check_state_dict, read_trainer_checkpoint, unmatched_key_error,
                                    unwrap_state_dict)
from segwise.errors import CheckpointError
from segwise.models.contextseg import ContextSeg, StrokeEmbedder
from segwise.models.spec import ModelSpec, save_model
from segwise.visualize import default_palette

EMBEDDER = "ContextSeg-PyTorch stroke embedder (AutoencoderEmbed)"
TRANSFORMER = "ContextSeg-PyTorch segmentation transformer (GpTransformer)"
PORT_LINE_WIDTH = 2  # the port draws the per-stroke images of stage 2 with a 2 px pen
EMBED_SECTIONS = (("encoder.", "features"), ("decoder_for_cons.0.", "from_code"),
                  ("decoder_for_cons.1.", "recon_decoder"), ("decoder_for_dist.1.", "df_decoder"))
"""Port prefix → our StrokeEmbedder submodule; `encoder.` also fills `to_code` (its two Linear layers)."""
EMBED_ALIASES = ("decoder_fc.", "decoder_conv_cons.", "decoder_conv_dist.", "decoder_for_dist.0.")
"""The same tensors under a second name (the port's decoders are Sequentials of shared submodules)."""
_LAYER = {nn.Conv2d: "conv", nn.ConvTranspose2d: "convT", nn.BatchNorm2d: "bn", nn.Linear: "linear"}
_TRANSFORMER_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^encoder\.enc_layers\.(\d+)\.mha\.(wq|wk|wv)\.", "encoder.layers.{0}.self_attn.{1}."),
    (r"^encoder\.enc_layers\.(\d+)\.mha\.dense\.", "encoder.layers.{0}.self_attn.out_proj."),
    (r"^encoder\.enc_layers\.(\d+)\.layernorm(\d)\.", "encoder.layers.{0}.norm{1}."),
    (r"^decoder\.dec_layers\.(\d+)\.mha1\.(wq|wk|wv)\.", "decoder.layers.{0}.self_attn.{1}."),
    (r"^decoder\.dec_layers\.(\d+)\.mha1\.dense\.", "decoder.layers.{0}.self_attn.out_proj."),
    (r"^decoder\.dec_layers\.(\d+)\.mha2\.(wq|wk|wv)\.", "decoder.layers.{0}.multihead_attn.{1}."),
    (r"^decoder\.dec_layers\.(\d+)\.mha2\.dense\.", "decoder.layers.{0}.multihead_attn.out_proj."),
    (r"^decoder\.dec_layers\.(\d+)\.layernorm(\d)\.", "decoder.layers.{0}.norm{1}."),
    (r"^(en|de)coder\.(en|de)c_layers\.(\d+)\.ffn\.ffn\.0\.", "{0}coder.layers.{2}.linear1."),
    (r"^(en|de)coder\.(en|de)c_layers\.(\d+)\.ffn\.ffn\.2\.", "{0}coder.layers.{2}.linear2."),
    (r"^layernorm\.", "decoder.norm."),
    (r"^disc_layer\.network\.(\d)\.", "pointer.{0}."),
)


def read_port_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state_dict of a port checkpoint (`{'model_state_dict': ...}` as the port saves, or bare / `model` /
    `state_dict`-wrapped, `module.` prefixes dropped), read without running pickled code."""
    state = unwrap_state_dict(read_trainer_checkpoint(Path(path)))
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors (looked at the file and its 'model_state_dict',"
                              " 'model' and 'state_dict' entries); pass the .pth that train_Embed.py / "
                              "train_Segformer.py saved")
    return dict(state)


# ---- stage 1: the stroke embedder -------------------------------------------------------------------------------
def _port_layers(state: Mapping[str, Tensor], prefix: str) -> list[tuple[str, str]]:
    """(kind, key prefix) of the numbered layers of the port's Sequential `prefix`, in order; a conv is a 4-D
    weight followed by a BatchNorm, a transposed conv one that is not."""
    indices = sorted({int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})
    layers = []
    for n, i in enumerate(indices):
        p = f"{prefix}{i}.conv." if f"{prefix}{i}.conv.weight" in state else f"{prefix}{i}."  # CoordConv
        if f"{p}running_mean" in state:
            layers.append(("bn", p))
        elif f"{p}weight" in state and state[f"{p}weight"].dim() == 2:
            layers.append(("linear", p))
        elif f"{p}weight" in state:
            following = f"{prefix}{indices[n + 1]}.running_mean" if n + 1 < len(indices) else ""
            layers.append(("conv" if following in state else "convT", p))
    return layers


def _our_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(_LAYER[type(m)], m) for m in module.modules() if type(m) in _LAYER]


def embedder_args(state: Mapping[str, Tensor], source: Any = "the checkpoint") -> dict[str, Any]:
    """StrokeEmbedder arguments read from the port's shapes: root width, depth (number of poolings), hidden width,
    code size and image size."""
    first = state.get("encoder.0.conv.weight")
    linears = [p for kind, p in _port_layers(state, "encoder.") if kind == "linear"]
    if first is None or first.dim() != 4 or first.shape[1] != 3 or len(linears) != 2:
        key = next(iter(state))
        raise unmatched_key_error(source, key, state[key], EMBEDDER, len(state))
    convs = sum(kind == "conv" for kind, _ in _port_layers(state, "encoder."))
    root, depth = int(first.shape[0]), (convs + 1) // 2
    hidden, flat = state[f"{linears[0]}weight"].shape
    side = math.isqrt(int(flat) // (root * 2 ** (depth - 1)))
    return {"image_size": side * 2 ** depth, "root": root, "depth": depth, "hidden": int(hidden),
            "code_size": int(state[f"{linears[1]}weight"].shape[0]), "line_width": PORT_LINE_WIDTH,
            "decoder_relu": False}


def _copy(target: nn.Module, state: Mapping[str, Tensor], prefix: str, names: tuple[str, ...],
          out: dict[str, Tensor], ours: dict[nn.Module, str]) -> None:
    for name in names:  # an absent key stays absent, and is then listed as missing
        if prefix + name in state:
            out[ours[target] + name] = state[prefix + name]


def _section(state: Mapping[str, Tensor], port_prefix: str, module: nn.Module, ours: dict[nn.Module, str],
             out: dict[str, Tensor], used: set[str], source: Any) -> None:
    """Pair the port's layers under `port_prefix` with ours in `module`, one for one and in order (see module doc)."""
    port, mine = _port_layers(state, port_prefix), _our_layers(module)
    bias = None
    for n, (kind, target) in enumerate(mine):
        if n >= len(port):
            if kind == "conv" and n == len(port) and mine[n - 1][0] == "convT":  # our 3×3 head: copy channel 0
                head = torch.zeros_like(target.weight)
                head[0, 0, head.shape[2] // 2, head.shape[3] // 2] = 1
                out[ours[target] + "weight"], out[ours[target] + "bias"] = head, torch.zeros_like(target.bias)
                continue
            raise CheckpointError(f"{source} has {len(port)} layers under {port_prefix!r} where the embedder has "
                                  f"{len(mine)}; it is no {EMBEDDER}")
        port_kind, p = port[n]
        weight = state.get(p + "weight")
        if port_kind != kind:
            raise unmatched_key_error(source, p + "weight", weight, EMBEDDER)
        used.update(k for k in state if k.startswith(p) and "." not in k[len(p):])
        if kind == "conv":  # ours has no bias: the port's is folded into the following BatchNorm
            w = weight if n or port_prefix != "encoder." else weight[:, [0, 2, 1]]  # CoordConv planes swapped
            out[ours[target] + "weight"], bias = w, state.get(p + "bias")
        elif kind == "bn":
            _copy(target, state, p, ("weight", "bias", "running_var", "num_batches_tracked"), out, ours)
            mean = state.get(p + "running_mean")
            fold = bias is not None and mean is not None and bias.shape == mean.shape
            out[ours[target] + "running_mean"] = mean - bias if fold else mean
        elif kind == "convT" and weight.shape[1] < target.weight.shape[1]:  # the last one: 1 channel → channel 0
            out[ours[target] + "weight"] = torch.zeros(target.weight.shape, dtype=weight.dtype)
            out[ours[target] + "weight"][:, : weight.shape[1]] = weight
            out[ours[target] + "bias"] = torch.zeros(target.bias.shape, dtype=weight.dtype)
            out[ours[target] + "bias"][: weight.shape[1]] = state[p + "bias"]
        else:
            _copy(target, state, p, ("weight", "bias"), out, ours)
    if len(port) > len(mine):
        raise unmatched_key_error(source, port[len(mine)][1] + "weight", state.get(port[len(mine)][1] + "weight"),
                                  EMBEDDER, len(port) - len(mine))


def convert_embedder_state(state: Mapping[str, Tensor], source: Any = "the checkpoint"
                           ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The port's `AutoencoderEmbed` state_dict → (StrokeEmbedder arguments, its state_dict)."""
    args = embedder_args(state, source)
    model = StrokeEmbedder(**args)
    ours = {m: f"{name}." for name, m in model.named_modules()}
    out: dict[str, Tensor] = {}
    used = {k for k in state if k.startswith(EMBED_ALIASES)}
    for port_prefix, attr in EMBED_SECTIONS:
        module = getattr(model, attr)
        if port_prefix == "encoder.":  # one port Sequential = our features + to_code
            module = nn.ModuleList([model.features, model.to_code])
        _section(state, port_prefix, module, ours, out, used, source)
    unused = [k for k in state if k not in used]
    if unused:
        raise unmatched_key_error(source, unused[0], state[unused[0]], EMBEDDER, len(unused))
    check_state_dict(out, model.state_dict(), source, "contextseg_embed")
    return args, out


# ---- stage 2: the segmentation transformer ----------------------------------------------------------------------
def _rename_transformer_key(key: str) -> str | None:
    for pattern, target in _TRANSFORMER_RENAMES:
        match = re.match(pattern, key)
        if match:
            return target.format(*match.groups()) + key[match.end():]
    return None


def transformer_args(state: Mapping[str, Tensor], num_heads: int, source: Any = "the checkpoint") -> dict[str, Any]:
    """ContextTransformer arguments: width, layers and FFN width from the shapes; heads as given (the shapes do not
    hold them); the port's norms."""
    fusion = next((k for k in state if k.startswith("seqspa_fusion.")), None)
    if fusion is not None:
        raise CheckpointError(f"{source} holds the port's SeqSpaFusion block ({fusion!r}, shape "
                              f"{tuple(state[fusion].shape)}): BiLSTM + GCN stroke features that segwise's "
                              "ContextSeg does not have, so its outputs cannot be reproduced; only checkpoints of the "
                              "port without it (commit 23144ea and earlier, as in the paper) can be converted")
    layers = {int(m.group(2)) for k in state if (m := re.match(r"^(enc|dec)oder\.(?:enc|dec)_layers\.(\d+)\.", k))}
    if "layernorm.weight" not in state or "encoder.enc_layers.0.ffn.ffn.0.weight" not in state:
        key = next(iter(state))
        raise unmatched_key_error(source, key, state[key], TRANSFORMER, len(state))
    d_model = int(state["layernorm.weight"].shape[0])
    if d_model % num_heads:
        raise CheckpointError(f"{source}: width {d_model} is not divisible by {num_heads} heads; pass the --heads "
                              "the transformer was trained with (train_Segformer.py --num_heads, default 4)")
    return {"d_model": d_model, "num_layers": len(layers), "num_heads": num_heads,
            "d_ff": int(state["encoder.enc_layers.0.ffn.ffn.0.weight"].shape[0]), "dropout": 0.0,
            "max_strokes": 512, "max_groups": 64, "encoder_norm": False, "norm_eps": 1e-6}


def convert_transformer_state(state: Mapping[str, Tensor], num_heads: int = 4, source: Any = "the checkpoint"
                              ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The port's `GpTransformer` state_dict → (ContextTransformer arguments, its state_dict without prefix)."""
    args = transformer_args(state, num_heads, source)
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    unknown = []
    for key, value in state.items():
        new = _rename_transformer_key(key)
        if new is None:
            unknown.append(key)
            continue
        match = re.match(r"^(.*attn)\.(wq|wk|wv)\.(weight|bias)$", new)
        if match:
            qkv.setdefault(f"{match.group(1)}.in_proj_{match.group(3)}", {})[match.group(2)] = value
        else:
            out[new] = value
    if unknown:
        raise unmatched_key_error(source, unknown[0], state[unknown[0]], TRANSFORMER, len(unknown))
    for key, parts in qkv.items():
        if len(parts) != 3:
            raise CheckpointError(f"{source}: {key} lacks {sorted({'wq', 'wk', 'wv'} - set(parts))}")
        out[key] = torch.cat([parts["wq"], parts["wk"], parts["wv"]])
    d_model = args["d_model"]
    for name in ("stroke_in", "group_in"):  # the port adds positions to the codes directly
        out[f"{name}.weight"], out[f"{name}.bias"] = torch.eye(d_model), torch.zeros(d_model)
    return args, out


# ---- files ------------------------------------------------------------------------------------------------------
def _embed_spec(args: dict[str, Any]) -> ModelSpec:
    side = args["image_size"]
    return ModelSpec(name="contextseg_embed", encoder=None, args=args, in_channels=1, num_classes=1,
                     class_names=["ink"], palette=[[0, 0, 0]], ignore_index=-1, image_size=[side, side])


def _load(model: nn.Module, state: dict[str, Tensor], source: Any, what: str) -> None:
    check_state_dict(state, model.state_dict(), source, what)
    model.load_state_dict(state)


def convert_port_checkpoints(embedder: str | Path, out_dir: str | Path, transformer: str | Path | None = None,
                             num_heads: int = 4, parts: list[str] | None = None, category: str = "sketch"
                             ) -> list[Path]:
    """Port checkpoints → `out_dir/embed` (stage 1, usable as `--embed` run) and, given the transformer,
    `out_dir/segment` (stage 2, a `contextseg` model for sketch eval/predict). Returns the folders written.

    `parts` names the decoding steps (the port's --num_of_group, default 4 parts); neither they nor the number of
    heads are in the weights."""
    out_dir = Path(out_dir)
    embed_args, embed_state = convert_embedder_state(read_port_checkpoint(embedder), embedder)
    embed_model = StrokeEmbedder(**embed_args)
    _load(embed_model, embed_state, embedder, "contextseg_embed")
    written = [out_dir / "embed"]
    if transformer is not None:
        former_args, former_state = convert_transformer_state(read_port_checkpoint(transformer), num_heads,
                                                              transformer)
        if former_args["d_model"] != embed_args["code_size"]:
            raise CheckpointError(f"{transformer} works on {former_args['d_model']}-d codes but {embedder} makes "
                                  f"{embed_args['code_size']}-d ones; pass the embedder it was trained with")
        names = list(parts or [f"part_{i}" for i in range(4)])
        model = ContextSeg(embed_args, former_args, {category: names})
        state = {**{f"embedder.{k}": v for k, v in embed_state.items()},
                 **{f"transformer.{k}": v for k, v in former_state.items()}}
        _load(model, state, transformer, "contextseg")
        spec = ModelSpec(name="contextseg", encoder=None, args={"embed": embed_args, "transformer": former_args,
                                                                "categories": {category: names}, "threshold": 0.5},
                         in_channels=1, num_classes=len(names), class_names=names,
                         palette=default_palette(len(names)).tolist(), ignore_index=-1,
                         image_size=[embed_args["image_size"]] * 2)
        written.append(out_dir / "segment")
    written[0].mkdir(parents=True, exist_ok=True)
    save_model(embed_model, _embed_spec(embed_args), written[0])
    if transformer is not None:
        written[1].mkdir(parents=True, exist_ok=True)
        save_model(model, spec, written[1])
    return written
