"""The model contract, checked once per registered model from one table of tiny arguments per task (the idea of
smp's shared model tester): registering a model means adding one row here, and each rule is tested only here.

Pixel models (tasks `semantic` and `trimap`) take N×C×H×W and return float logits N×K×H×W: forward/backward,
any input size through whole-image inference, a training step with a batch of one, the model file round trip and
ONNX export parity (slow). Semantic models take any channel count; trimap models exactly RGB + prompt. Sketch
models (`sketch_embed`, `sketch`) take stroke images; their rules are in the last part of this file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segwise.data.transforms import normalize
from segwise.engine.module import tolerate_batch_of_one
from segwise.errors import ModelError
from segwise.export import export_onnx
from segwise.inference import Predictor, WholeImage
from segwise.models import create_model, input_stride, list_models
from segwise.models.contextseg import union_images
from segwise.models.registry import TASKS
from segwise.models.spec import ModelSpec, load_model, save_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_CNN = "tu-test_resnet"  # timm's test ResNet: random init, no download, ~0.1 M parameters
TINY_DECODER = [32, 16, 16, 8, 8]

SEMANTIC_MODELS: dict[str, dict[str, Any]] = {
    "deeplabv3": {"encoder": TINY_CNN, "decoder_channels": 16},
    "deeplabv3plus": {"encoder": TINY_CNN, "decoder_channels": 16},
    "dpt": {"encoder": "tu-test_vit", "decoder_intermediate_channels": [16, 16, 32, 32],  # DPT takes only ViTs
            "decoder_fusion_channels": 16},
    "fpn": {"encoder": TINY_CNN, "decoder_pyramid_channels": 16,
            "decoder_segmentation_channels": 64},  # GroupNorm(32, ·): 2 channels a group at 1×1
    "linknet": {"encoder": TINY_CNN},
    "manet": {"encoder": TINY_CNN, "decoder_channels": TINY_DECODER, "decoder_pab_channels": 8},
    "pan": {"encoder": TINY_CNN, "decoder_channels": 16},
    "pspnet": {"encoder": TINY_CNN, "psp_out_channels": 16},
    "segformer": {"encoder": TINY_CNN, "decoder_segmentation_channels": 16},
    "unet": {"encoder": "resnet18", "decoder_channels": TINY_DECODER},  # an smp encoder: its own first-conv patching
    "unetplusplus": {"encoder": TINY_CNN, "decoder_channels": TINY_DECODER},
    "upernet": {"encoder": TINY_CNN, "decoder_channels": 16},
    "factseg": {"encoder": TINY_CNN, "fpn_channels": 16, "decoder_channels": 8},
    "segnet": {"base_channels": 4},
    "fcn8": {"base_channels": 4, "fc_channels": 16},
    "enet": {"base_channels": 8},
    "gcn": {"encoder": TINY_CNN, "kernel_size": 5},
    "duc_hdc": {"encoder": "resnet18"},  # dilates a ResNet's stages, so an smp ResNet
    "segresnet": {"encoder": TINY_CNN},
    "unet_classic": {"base_channels": 4},
    "pspnet_dilated": {"encoder": TINY_CNN},
}
"""Every semantic model: tiny constructor arguments (`encoder` included) that keep these tests fast on a CPU."""

TRIMAP_MODELS: dict[str, dict[str, Any]] = {
    "trimap_vit": {"size": "tiny", "depth": 2, "head_channels": 16, "patch_size": 16, "img_size": 64},
}
"""Every trimap model: RGB + prompt mask (4 channels) in, background / unknown / foreground logits out."""

EMBED = {"image_size": 32, "root": 4, "depth": 3, "hidden": 32, "code_size": 16}
PARTS = {"cup": ["handle", "body", "steam"], "sun": ["disc", "rays"]}
SKETCH_EMBED_MODELS: dict[str, dict[str, Any]] = {"contextseg_embed": EMBED}
"""Every stroke embedder: N×1×S×S stroke images → codes, reconstruction and distance-field logits."""


class SketchRow(NamedTuple):
    args: dict[str, Any]
    train_logits: str  # how training calls the model: "teacher_forcing" (N×G×S logits) or "per_stroke" (N×S×G)


SKETCH_MODELS: dict[str, SketchRow] = {
    "contextseg": SketchRow({"embed": EMBED, "categories": PARTS,
                             "transformer": {"d_model": 16, "num_layers": 1, "num_heads": 2, "d_ff": 32}},
                            "teacher_forcing"),
    "stroke_classifier": SketchRow({"embed": EMBED, "categories": PARTS, "hidden": 8}, "per_stroke"),
}
"""Every sketch segmenter: stroke images on a frozen embedder → one part label per stroke."""

TABLES = {"semantic": SEMANTIC_MODELS, "trimap": TRIMAP_MODELS, "sketch_embed": SKETCH_EMBED_MODELS,
          "sketch": SKETCH_MODELS}

STATIC_EXPORT = {
    "pspnet": "its pyramid pooling (adaptive pooling to fixed bins) is traced at the export size",
    "upernet": "its pyramid pooling module (adaptive pooling to fixed bins) is traced at the export size",
    "pspnet_dilated": "its pyramid pooling (adaptive pooling to fixed bins) is traced at the export size",
}
"""Semantic models exported with a fixed input size, and why (the others are exported with dynamic axes)."""

PIXEL_MODELS = {**SEMANTIC_MODELS, **TRIMAP_MODELS}
CLASSES = 4  # semantic models here: 4 classes from 3 channels, so a swapped axis shows up


@pytest.mark.parametrize("task", list(TASKS))
def test_every_registered_model_has_a_row(task: str):
    """A model registered without a row would escape every check below."""
    registered, rows = set(list_models(task=task)), set(TABLES[task])
    assert not registered - rows, (f"{task} models {sorted(registered - rows)} have no row: add one to "
                                   f"{task.upper()}_MODELS in "
                                   "tests/test_model_contract.py with the smallest arguments that build them")
    assert not rows - registered, f"rows {sorted(rows - registered)} name no registered {task} model"


# ---- pixel models: semantic and trimap ------------------------------------------------------------------------
def _io(name: str) -> tuple[int, int]:
    """(in_channels, classes) of the test models: trimap models take RGB + prompt and give 3 classes."""
    return (4, 3) if name in TRIMAP_MODELS else (3, CLASSES)


def _build(name: str, in_channels: int | None = None, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    channels, classes = _io(name)
    return create_model(name, in_channels=in_channels or channels, classes=classes, **PIXEL_MODELS[name])


def _spec(name: str) -> ModelSpec:
    args = dict(PIXEL_MODELS[name])
    encoder = args.pop("encoder", None)
    channels, classes = _io(name)
    return ModelSpec(name=name, encoder=encoder, args=args, in_channels=channels, num_classes=classes,
                     class_names=[f"class{k}" for k in range(classes)], palette=[[k, k, k] for k in range(classes)],
                     mean=[127.0] * channels, std=[64.0] * channels)


def _side(stride: int, at_least: int = 64) -> int:
    """The smallest multiple of the input stride that is at least `at_least`."""
    return stride * math.ceil(at_least / stride)


def _randomise_batchnorm(model: nn.Module) -> None:
    """Running statistics other than the identity, so that buffers matter in eval mode."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


def _forward_backward(name: str) -> tuple[nn.Module, Tensor]:
    """A train-mode step on a non-square input (2 × C × a multiple of the stride); returns the model and logits."""
    model = _build(name).train()
    stride = input_stride(model)
    assert isinstance(stride, int) and stride >= 1
    height = _side(stride)
    channels, classes = _io(name)
    x = torch.randn(2, channels, height, height + stride, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, classes, (2, height, height + stride))
    if getattr(model, "has_aux", False):  # as the trainer calls it: the auxiliary head's logits are scored too
        logits, aux_logits = model(x, aux=True)
        assert aux_logits.shape == logits.shape
        (F.cross_entropy(logits, target) + F.cross_entropy(aux_logits, target)).backward()
    else:
        logits = model(x)
        F.cross_entropy(logits, target).backward()
    return model, logits


@pytest.mark.parametrize("name", sorted(PIXEL_MODELS))
def test_forward_backward(name: str):
    """Float logits N×K×H×W at the input size (a model with `has_aux` also gives auxiliary logits of that shape
    from `model(x, aux=True)`, as the trainer calls it); finite gradients."""
    model, logits = _forward_backward(name)
    stride = input_stride(model)
    assert isinstance(logits, Tensor) and logits.dtype == torch.float32
    assert logits.shape == (2, _io(name)[1], _side(stride), _side(stride) + stride)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


UNUSED_PARAMETERS: dict[str, str] = {}
"""Models with parameters that get no gradient, and why (DDP without find_unused_parameters fails on them)."""


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=UNUSED_PARAMETERS[n], strict=True))
                                  if n in UNUSED_PARAMETERS else n for n in sorted(PIXEL_MODELS)])
def test_every_parameter_is_trained(name: str):
    """Every trainable parameter takes part in the loss: no dead weights in the model file, and DDP works."""
    model, _ = _forward_backward(name)
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"parameters without a gradient: {unused[:5]}"


@pytest.mark.parametrize("in_channels", [1, 5])
@pytest.mark.parametrize("name", sorted(SEMANTIC_MODELS))
def test_semantic_models_take_any_channel_count(name: str, in_channels: int):
    """Grey and multispectral input: the first layer follows `in_channels`."""
    model = _build(name, in_channels).eval()
    side = _side(input_stride(model))
    with torch.no_grad():
        logits = model(torch.randn(1, in_channels, side, side))
    assert logits.shape == (1, CLASSES, side, side) and torch.isfinite(logits).all()


@pytest.mark.parametrize("in_channels", [3, 5])
@pytest.mark.parametrize("name", sorted(TRIMAP_MODELS))
def test_trimap_models_take_only_rgb_and_prompt(name: str, in_channels: int):
    with pytest.raises(ModelError, match="in_channels=4"):
        create_model(name, in_channels=in_channels, classes=3, **TRIMAP_MODELS[name])


@pytest.mark.parametrize("name", sorted(PIXEL_MODELS))
def test_any_input_size_through_whole_image_inference(name: str):
    """An odd-sized image is padded to the input stride and cropped back: probabilities at its own size, equal to
    the plain model's through `WholeImage` after the Predictor folds BatchNorm and goes channels-last."""
    model = _build(name).eval()
    spec = _spec(name)
    image = np.random.default_rng(0).integers(0, 256, (45, 71, spec.in_channels), dtype=np.uint8)
    tensor = torch.from_numpy(normalize(image, spec.mean, spec.std).transpose(2, 0, 1).copy())[None]
    with torch.inference_mode():
        expected = WholeImage()(model, tensor, input_stride(model))[0].numpy()
    probs = Predictor(model, spec, "cpu").predict_proba(image)
    assert probs.shape == (spec.num_classes, 45, 71) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, expected, atol=1e-4)


SMALLEST_INPUT_FAILS: dict[str, str] = {}
"""Models that fail on an input of one input stride (which `input_stride` promises to accept), and why."""


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=SMALLEST_INPUT_FAILS[n], strict=True))
                                  if n in SMALLEST_INPUT_FAILS else n for n in sorted(PIXEL_MODELS)])
def test_training_step_with_a_batch_of_one(name: str):
    """The smallest input (one stride) at batch 1 leaves a single value per channel in the deepest BatchNorms:
    as the engine wraps it, the step runs, changes the weights and leaves finite running statistics."""
    model = tolerate_batch_of_one(_build(name)).train()
    side = input_stride(model)
    channels, classes = _io(name)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(torch.randn(1, channels, side, side)), torch.randint(0, classes, (1, side, side)))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.randn(1, channels, side, side))).all()


@pytest.mark.parametrize("name", sorted(PIXEL_MODELS))
def test_model_file_round_trip(name: str, tmp_path: Path):
    """model.safetensors + model.yaml rebuild the same network: same weights and buffers, same logits."""
    model = _build(name).eval()
    _randomise_batchnorm(model)
    save_model(model, _spec(name), tmp_path)
    loaded, spec = load_model(tmp_path)
    assert spec == _spec(name) and type(loaded) is type(model) and not loaded.training
    original = model.state_dict()
    assert loaded.state_dict().keys() == original.keys()
    assert all(torch.equal(value, original[key]) for key, value in loaded.state_dict().items())
    x = torch.randn(1, spec.in_channels, _side(input_stride(model)), _side(input_stride(model)))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PIXEL_MODELS))
def test_onnx_export_matches_torch(name: str, tmp_path: Path):
    """`export_onnx` writes a graph onnxruntime runs like torch (dynamic axes: also at a second size)."""
    model = _build(name)
    _randomise_batchnorm(model)
    save_model(model, _spec(name), tmp_path)
    stride = input_stride(model)
    height = _side(stride)
    dynamic = name not in STATIC_EXPORT
    report = export_onnx(tmp_path, tmp_path / "model.onnx", height=height, width=height + stride, dynamic=dynamic)
    assert len(report.parity) == (2 if dynamic else 1)
    assert all(p.label_agreement > 0.999 for p in report.parity), report.summary()


# ---- sketch models ----------------------------------------------------------------------------------------------
def _strokes(n: int, s: int, size: int = EMBED["image_size"]) -> Tensor:
    """n sketches of s random stroke images (a tenth of the pixels inked)."""
    return (torch.rand(n, s, size, size, generator=torch.Generator().manual_seed(n * s)) > 0.9).float()


def _sketch_batch(n: int) -> dict[str, Tensor]:
    """n sketches of up to 5 strokes in up to 3 groups; the last sketch has 3 strokes in 2 groups (padding)."""
    stroke_valid = torch.ones(n, 5, dtype=torch.bool)
    group_valid = torch.ones(n, 3, dtype=torch.bool)
    stroke_valid[-1, 3:] = False
    group_valid[-1, 2] = False
    labels = torch.tensor([0, 1, 2, 0, 1]).repeat(n, 1)
    labels[-1] = torch.tensor([0, 1, 0, -1, -1])
    return {"strokes": _strokes(n, 5), "stroke_valid": stroke_valid, "group_valid": group_valid, "labels": labels}


def _build_sketch(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **(SKETCH_EMBED_MODELS.get(name) or SKETCH_MODELS[name].args))


def _sketch_spec(name: str) -> ModelSpec:
    args = SKETCH_EMBED_MODELS.get(name) or SKETCH_MODELS[name].args
    return ModelSpec(name=name, encoder=None, args=args, in_channels=1, num_classes=3,
                     class_names=["a", "b", "c"], palette=[[0, 0, 0]] * 3, ignore_index=-1)


def _sketch_logits(name: str, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Training output and its 0/1 membership target (−1: padding), both N×G×S."""
    strokes, stroke_valid, group_valid = batch["strokes"], batch["stroke_valid"], batch["group_valid"]
    groups = torch.arange(group_valid.size(1)).view(1, -1, 1)
    target = (batch["labels"].unsqueeze(1) == groups).float()
    target = target.masked_fill(~(stroke_valid.unsqueeze(1) & group_valid.unsqueeze(2)), -1.0)
    if SKETCH_MODELS[name].train_logits == "teacher_forcing":
        members = (target == 1)[:, :-1]
        logits = model(strokes, stroke_valid, union_images(strokes, members), group_valid)
    else:
        logits = model(strokes, stroke_valid)[..., : group_valid.size(1)].transpose(1, 2)
    return logits, target


def _sketch_loss(name: str, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    if name in SKETCH_EMBED_MODELS:
        out = model(batch["strokes"][:, :1])
        return F.binary_cross_entropy_with_logits(out["recon"], batch["strokes"][:, :1]) + out["df"].square().mean()
    logits, target = _sketch_logits(name, model, batch)
    valid = target >= 0
    return F.binary_cross_entropy_with_logits(logits[valid], target[valid])


SKETCH_ALL = sorted(SKETCH_EMBED_MODELS) + sorted(SKETCH_MODELS)


@pytest.mark.parametrize("name", sorted(SKETCH_EMBED_MODELS))
def test_stroke_embedder_outputs(name: str):
    """One code in (0, 1) per stroke image, and reconstruction and distance-field logits at its size."""
    model = _build_sketch(name).eval()
    with torch.no_grad():
        out = model(_strokes(3, 1))
    size = EMBED["image_size"]
    assert out["code"].shape == (3, EMBED["code_size"]) and bool(((out["code"] > 0) & (out["code"] < 1)).all())
    assert out["recon"].shape == out["df"].shape == (3, 1, size, size)


@pytest.mark.parametrize("name", sorted(SKETCH_MODELS))
def test_sketch_segmenter_outputs(name: str):
    """Training logits N×G×S; `segment` gives one label per stroke, a part of its sketch, −1 on padding."""
    model = _build_sketch(name).eval()
    batch = _sketch_batch(2)
    with torch.no_grad():
        logits, target = _sketch_logits(name, model, batch)
        labels = model.segment(batch["strokes"], batch["stroke_valid"], batch["group_valid"])
    assert logits.shape == target.shape == (2, 3, 5) and torch.isfinite(logits).all()
    assert labels.shape == (2, 5) and labels.dtype == torch.int64
    assert labels[1, 3:].tolist() == [-1, -1] and 0 <= int(labels[1, :3].min()) and int(labels[1, :3].max()) <= 1
    assert 0 <= int(labels[0].min()) and int(labels[0].max()) <= 2


@pytest.mark.parametrize("name", SKETCH_ALL)
def test_sketch_training_step_with_a_batch_of_one(name: str):
    """Every trainable parameter gets a gradient and moves; a segmenter's frozen embedder gets none and stays."""
    model = tolerate_batch_of_one(_build_sketch(name)).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = _sketch_loss(name, model, _sketch_batch(1))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    for key, param in model.named_parameters():
        frozen = name in SKETCH_MODELS and key.startswith("embedder.")
        assert param.requires_grad != frozen, key
        assert (param.grad is None) == frozen, key
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)
    if name in SKETCH_MODELS:
        assert not model.embedder.training
        assert all(torch.equal(p, before[f"embedder.{n}"]) for n, p in model.embedder.named_parameters())


@pytest.mark.parametrize("name", SKETCH_ALL)
def test_sketch_model_file_round_trip(name: str, tmp_path: Path):
    model = _build_sketch(name).eval()
    _randomise_batchnorm(model)
    save_model(model, _sketch_spec(name), tmp_path)
    loaded, spec = load_model(tmp_path)
    assert spec == _sketch_spec(name) and type(loaded) is type(model)
    batch = _sketch_batch(2)
    with torch.no_grad():
        if name in SKETCH_EMBED_MODELS:
            expected, got = model(batch["strokes"][:, :1]), loaded(batch["strokes"][:, :1])
            assert all(torch.equal(got[key], value) for key, value in expected.items())
        else:
            torch.testing.assert_close(_sketch_logits(name, loaded, batch)[0], _sketch_logits(name, model, batch)[0],
                                       rtol=0, atol=0)
            assert loaded.categories == PARTS
