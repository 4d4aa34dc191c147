"""Every segmentation_models_pytorch architecture × encoder, registered under its lower-case smp name."""

from __future__ import annotations

import math
from pathlib import Path

import segmentation_models_pytorch as smp
from segmentation_models_pytorch.encoders import get_encoder
import torch
from torch import nn

from segwise.errors import ModelError
from segwise.models.registry import register_model


def list_encoders() -> list[str]:
    """smp's own encoders; any timm model is also accepted as `tu-<timm name>`."""
    return sorted(smp.encoders.get_encoder_names())


def load_local_encoder_weights(model: nn.Module, path: Path) -> None:
    """Load encoder weights from a local file without unpickling code (safetensors or weights_only)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle that holds more than tensors (refused by weights_only)
        raise ModelError(f"encoder weights {path} cannot be read as a weights file ({type(exc).__name__}: "
                         f"{str(exc)[:300]}); save a plain state_dict with torch.save or safetensors") from None
    if not isinstance(state, dict):
        raise ModelError(f"encoder weights {path} hold a {type(state).__name__}, not a state_dict")
    state = state.get("state_dict", state)
    # Keys the encoder does not have (a classifier head, ...) are skipped. nn.Module's own load_state_dict is called
    # because several smp encoders override it without `strict` or without returning the missing/unexpected keys.
    own = model.encoder.state_dict()
    matching = {k: v for k, v in state.items() if k in own}
    if not matching:
        raise ModelError(f"encoder weights {path}: no key matches encoder '{type(model.encoder).__name__}' "
                         f"(file keys start {sorted(state)[:3]}, encoder keys {sorted(own)[:3]})")
    wrong = [f"{k} {tuple(v.shape)} ≠ {tuple(own[k].shape)}" for k, v in matching.items() if v.shape != own[k].shape]
    if wrong:
        raise ModelError(f"encoder weights {path} do not fit encoder '{type(model.encoder).__name__}' (a different "
                         f"encoder, or another number of input channels?): {'; '.join(wrong[:3])}")
    nn.Module.load_state_dict(model.encoder, matching, strict=False)


DEFAULT_ENCODER = "resnet18"


def _build(arch: str, in_channels: int, classes: int, encoder: str | None = None,
           encoder_weights: str | None = None, **kwargs) -> nn.Module:
    encoder = encoder or DEFAULT_ENCODER
    local = Path(encoder_weights) if encoder_weights and Path(encoder_weights).is_file() else None
    weights = None if local else encoder_weights
    try:
        model = smp.create_model(arch, encoder_name=encoder, encoder_weights=weights,
                                 in_channels=in_channels, classes=classes, **kwargs)
    except KeyError as exc:
        if encoder in smp.encoders.get_encoder_names():  # the encoder exists, so the weights name is what is wrong
            raise ModelError(f"model.encoder_weights={encoder_weights!r} is neither an existing local weights file nor "
                             f"a weights name of encoder {encoder!r} ({exc}); use null, 'imagenet' or a local "
                             ".pth/.safetensors path") from None
        raise ModelError(f"model.encoder: smp has no encoder {encoder!r} ({exc}); run `segwise models` to list them, "
                         "or use 'tu-<timm model>'") from None
    except RuntimeError as exc:
        if "Unknown model" not in str(exc):  # timm's message for a `tu-` name it does not know
            raise
        raise ModelError(f"model.encoder: timm has no model {encoder[3:]!r} for encoder {encoder!r} ({exc}); "
                         "check the name with timm.list_models()") from None
    except OSError as exc:  # requests/urllib/hf-hub connection errors are OSError subclasses
        raise ModelError(
            f"model.encoder_weights={encoder_weights!r}: the weights for encoder {encoder!r} could not be downloaded "
            f"({type(exc).__name__}). segwise never needs the network: set model.encoder_weights: null to train "
            "from scratch, or give a local .pth/.safetensors file path.") from None
    except ValueError as exc:
        raise ModelError(f"model {arch}/{encoder}: {exc}") from None
    if local:
        load_local_encoder_weights(model, local)
    stride = _arch_input_stride(arch, model)
    if stride is not None:
        model.input_stride = stride  # read by segwise.models.input_stride (inference pads inputs to a multiple of it)
    if arch == "dpt":
        freeze_unused_vit_head(model)
    return model


def freeze_unused_vit_head(model: nn.Module) -> None:
    """smp's DPT reads intermediate ViT tokens only: the ViT's final norm and classifier head never see a gradient.
    Frozen, they cost no optimizer state and DDP needs no `find_unused_parameters`; they stay in the state dict so
    DPT model files keep their keys."""
    vit = model.encoder.model
    for name in ("norm", "fc_norm", "head"):
        module = getattr(vit, name, None)
        if isinstance(module, nn.Module):
            module.requires_grad_(False)


def build_encoder(name: str, in_channels: int, weights: str | None, output_stride: int = 32) -> nn.Module:
    """smp (or `tu-` timm) encoder of depth 5: features at strides 1, 2, 4, 8, 16 and 32, widths `out_channels`;
    with `output_stride` 16 or 8 the last stages are dilated instead of strided (smp's own mechanism).

    `weights`: None (random init, nothing downloads), a weights name (downloads) or a local .pth/.safetensors
    file, which `load_encoder_weights` loads once the model around the encoder exists.
    """
    local = weights is not None and Path(weights).is_file()
    try:
        return get_encoder(name, in_channels=in_channels, depth=5, weights=None if local else weights,
                           output_stride=output_stride)
    except ValueError as exc:  # smp's refusal of a dilated encoder it cannot dilate (transformers, ...)
        raise ModelError(f"model.encoder={name!r} cannot run at output stride {output_stride} ({exc}); use a "
                         "convolutional encoder such as resnet50") from None
    except KeyError as exc:
        raise ModelError(f"model.encoder={name!r} / encoder_weights={weights!r} unknown to smp ({exc}); run "
                         "`segwise models` for encoder names, or use 'tu-<timm model>'") from None
    except OSError as exc:
        raise ModelError(f"model.encoder_weights={weights!r} for encoder {name!r} could not be downloaded "
                         f"({type(exc).__name__}); use null or a local .pth/.safetensors file") from None


def load_encoder_weights(model: nn.Module, weights: str | None) -> None:
    """Load a local weights file into `model.encoder` (weight names were already loaded by `build_encoder`)."""
    if weights is not None and Path(weights).is_file():
        load_local_encoder_weights(model, Path(weights))


def _arch_input_stride(arch: str, model: nn.Module) -> int | None:
    """Decoders that need inputs in larger multiples than the encoder's output stride (None: the encoder's is enough).

    PAN's feature-pyramid-attention block halves the deepest feature map three more times; DPT's deepest decoder
    stage lies at stride 2**(depth + 1) (32 for the default depth 4, made by a strided conv from the patch grid).
    """
    encoder_stride = int(getattr(model.encoder, "output_stride", 32))
    if arch == "pan":
        return encoder_stride * 8
    if arch == "dpt":
        depth = len(getattr(model.encoder, "output_strides", (0,) * 4))
        return math.lcm(encoder_stride, 2 ** (depth + 1))
    return None


def _register_smp() -> None:
    for arch in smp.MODEL_ARCHITECTURES_MAPPING:
        register_model(arch, family="smp", uses_encoder=True)(
            lambda arch=arch, **kw: _build(arch, **kw))


_register_smp()
