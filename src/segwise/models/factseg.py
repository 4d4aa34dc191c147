"""FactSeg (Ma et al., IEEE TGRS): small-object segmentation with foreground activation (FA) and semantic
refinement (SR) branches fused by collaborative probability (CP), and a converter for official checkpoints.

Output convention: `FactSeg.forward` returns log q, the log of the CP-fused class probabilities
q0 ∝ (1 − b)·s0, qc ∝ b·sc (b = σ(FA logit), s = softmax(SR logits)), in training and in evaluation. Since q
sums to 1, softmax(log q) = q: the engine's softmax, sliding-window/TTA probability averaging and argmax see
exactly FactSeg's probabilities, `ce` on it is the official joint CP loss and `som`/`ohem` its mined variants
(`segwise.losses.factseg`). `FactSeg.branches` gives the raw SR and FA logits.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import get_encoder
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork

from segwise.errors import CheckpointError, ModelError
from segwise.models.registry import register_model
from segwise.models.smp_bridge import load_local_encoder_weights

INPUT_STRIDE = 32


class AsymmetricDecoder(nn.Module):
    """Semantic-FPN decoder: every pyramid level goes to stride 4 through [3×3 conv, BN, ReLU, ×2 bilinear] stages
    (one stage without upsampling at stride 4), and the levels are averaged."""

    def __init__(self, in_channels: int = 256, out_channels: int = 128, in_strides: tuple[int, ...] = (4, 8, 16, 32),
                 out_stride: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for stride in in_strides:
            num_up = int(math.log2(stride)) - int(math.log2(out_stride))
            stages = [nn.Sequential(
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True) if num_up else nn.Identity(),
            ) for i in range(max(num_up, 1))]
            self.blocks.append(nn.Sequential(*stages))

    def forward(self, features: list[Tensor]) -> Tensor:
        return sum(block(feature) for block, feature in zip(self.blocks, features)) / float(len(self.blocks))


def collaborative_log_probs(sr_logits: Tensor, fa_logits: Tensor) -> Tensor:
    """log q of the CP fusion (class 0 = background), computed in log space in at least float32."""
    dtype = torch.promote_types(sr_logits.dtype, torch.float32)
    fa = fa_logits.to(dtype)
    gate = torch.cat([F.logsigmoid(-fa), F.logsigmoid(fa).expand(-1, sr_logits.shape[1] - 1, -1, -1)], dim=1)
    joint = sr_logits.to(dtype).log_softmax(dim=1) + gate
    return joint - joint.logsumexp(dim=1, keepdim=True)


def _build_encoder(name: str, in_channels: int, weights: str | None) -> nn.Module:
    """An smp (or `tu-` timm) encoder of depth 5; weights: None, a weights name (may download) or a local file."""
    local = Path(weights) if weights and Path(weights).is_file() else None
    try:
        return get_encoder(name, in_channels=in_channels, depth=5, weights=None if local else weights)
    except KeyError as exc:
        raise ModelError(f"model.encoder={name!r} / encoder_weights={weights!r} unknown to smp ({exc}); run "
                         "`segwise models` for encoder names, or use 'tu-<timm model>'") from None
    except OSError as exc:
        raise ModelError(f"model.encoder_weights={weights!r} for encoder {name!r} could not be downloaded "
                         f"({type(exc).__name__}); use null or a local .pth/.safetensors file") from None


class FactSeg(nn.Module):
    """ResNet-style encoder → two FPNs → two asymmetric decoders → SR head (K classes) and FA head (1 logit)."""

    input_stride = INPUT_STRIDE

    def __init__(self, in_channels: int = 3, classes: int = 16, encoder: str | None = None,
                 encoder_weights: str | None = None, fpn_channels: int = 256, decoder_channels: int = 128) -> None:
        super().__init__()
        if classes < 2:
            raise ModelError(f"factseg needs classes >= 2 (class 0 = background), got {classes}")
        encoder = encoder or "resnet50"
        self.encoder = _build_encoder(encoder, in_channels, encoder_weights)
        if encoder_weights and Path(encoder_weights).is_file():
            load_local_encoder_weights(self, Path(encoder_weights))
        levels = list(self.encoder.out_channels[-4:])
        self.sr_fpn = FeaturePyramidNetwork(levels, fpn_channels)
        self.fa_fpn = FeaturePyramidNetwork(levels, fpn_channels)
        self.sr_decoder = AsymmetricDecoder(fpn_channels, decoder_channels)
        self.fa_decoder = AsymmetricDecoder(fpn_channels, decoder_channels)
        self.sr_head = nn.Conv2d(decoder_channels, classes, 1)
        self.fa_head = nn.Conv2d(decoder_channels, 1, 1)

    def _branch(self, fpn: FeaturePyramidNetwork, decoder: AsymmetricDecoder, head: nn.Conv2d,
                features: list[Tensor]) -> Tensor:
        pyramid = fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))
        logits = head(decoder(list(pyramid.values())))
        return F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=True)

    def branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """SR logits N×K×H×W and FA logit N×1×H×W; inputs are zero-padded to a multiple of 32 and cropped back
        (as the official evaluation pads each window)."""
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % INPUT_STRIDE, 0, -height % INPUT_STRIDE))
        features = list(self.encoder(x)[-4:])
        sr = self._branch(self.sr_fpn, self.sr_decoder, self.sr_head, features)
        fa = self._branch(self.fa_fpn, self.fa_decoder, self.fa_head, features)
        return sr[..., :height, :width], fa[..., :height, :width]

    def forward(self, x: Tensor) -> Tensor:
        """log q, N×K×H×W (see the module docstring): softmax of it is FactSeg's CP probability."""
        return collaborative_log_probs(*self.branches(x))


@register_model("factseg", uses_encoder=True)
def factseg(in_channels: int = 3, classes: int = 16, encoder: str | None = None, encoder_weights: str | None = None,
            **kwargs) -> FactSeg:
    """FactSeg with a ResNet-50 encoder unless `encoder` names another smp/timm encoder."""
    return FactSeg(in_channels, classes, encoder, encoder_weights, **kwargs)


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
    # Imported here: engine.checkpoint imports the model registry, which imports this module.
    from segwise.data import isaid
    from segwise.engine.checkpoint import ModelSpec, save_model
    from segwise.visualize import default_palette

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
