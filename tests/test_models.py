"""Model registry: every smp architecture builds and runs (smp-style shared tester), errors are ModelErrors."""

import functools
import time
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file
from torch import nn

from segwise.errors import ModelError
from segwise.models import create_model, input_stride, list_encoders, list_models, model_entry, register_model
from segwise.models import registry

# Smallest valid settings per architecture. DPT takes only ViT (`tu-`) encoders: timm's tiny `test_vit`
# (patch 16, dynamic image size, random init) builds offline. PAN's pyramid-attention block needs inputs in
# multiples of 128 (encoder stride 16 × 8); everything else runs at 64×64 with resnet18.
ENCODER = {"dpt": "tu-test_vit"}
MIN_SIZE = {"pan": 128}
SMP_ARCHS = list_models("smp")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def clean_registry(monkeypatch):
    """Custom registrations made by a test disappear after it."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))


@functools.cache
def _model(arch: str, in_channels: int = 3) -> nn.Module:
    """One 3-class model per architecture and channel count, in eval mode, shared by the tests (read-only use)."""
    torch.manual_seed(0)
    model = create_model(arch, encoder=ENCODER.get(arch, "resnet18"), in_channels=in_channels, classes=3)
    return model.eval()


def test_every_smp_architecture_is_registered():
    assert SMP_ARCHS == sorted(smp.MODEL_ARCHITECTURES_MAPPING)
    assert {"unet", "unetplusplus", "deeplabv3plus", "fpn", "segformer", "dpt", "upernet"} <= set(SMP_ARCHS)
    assert set(SMP_ARCHS) <= set(list_models())
    assert all(model_entry(name).family == "smp" and model_entry(name).uses_encoder for name in SMP_ARCHS)
    assert "resnet18" in list_encoders() and "mit_b0" in list_encoders()


@pytest.mark.parametrize("in_channels", [3, 5])
@pytest.mark.parametrize("arch", SMP_ARCHS)
def test_smp_model_forward_shape(arch: str, in_channels: int):
    model = _model(arch, in_channels)
    size = MIN_SIZE.get(arch, 64)
    x = torch.rand(2, in_channels, size, size)
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3, size, size)
    assert torch.isfinite(y).all()
    assert not model.training


@pytest.mark.parametrize("arch", SMP_ARCHS)
def test_input_stride_multiples_run(arch: str):
    """Inference pads inputs to a multiple of input_stride(model): every such (non-square) size must work."""
    model = _model(arch)
    stride = input_stride(model)
    assert stride >= 8 and stride & (stride - 1) == 0  # a power of two
    height, width = stride * 2, stride * 3
    with torch.no_grad():
        y = model(torch.rand(1, 3, height, width))
    assert y.shape == (1, 3, height, width)


def test_input_stride_values():
    assert input_stride(_model("unet")) == 32 and input_stride(_model("unet", 5)) == 32
    assert input_stride(_model("fpn")) == 32
    assert input_stride(_model("deeplabv3plus")) == 16
    assert input_stride(_model("pan")) == 128
    assert input_stride(_model("dpt")) == 32
    assert input_stride(create_model("unet", encoder="resnet18", encoder_depth=4,
                                     decoder_channels=(64, 32, 16, 8))) == 16
    assert input_stride(nn.Conv2d(3, 2, 1)) == 32  # no encoder: the common default
    model = nn.Conv2d(3, 2, 1)
    model.input_stride = 4
    assert input_stride(model) == 4


def test_unknown_model_name_suggests():
    with pytest.raises(ModelError, match="unknown model 'unett'") as info:
        create_model("unett")
    assert "Did you mean unet" in str(info.value) and "segwise models" in str(info.value)
    assert create_model("UNet", encoder="resnet18").__class__.__name__ == "Unet"  # names are case-insensitive


def test_unknown_encoder():
    with pytest.raises(ModelError, match="no encoder 'nosuch'"):
        create_model("unet", encoder="nosuch")
    with pytest.raises(ModelError, match="timm has no model 'nosuch'"):
        create_model("unet", encoder="tu-nosuch")


def test_unknown_weights_name_blames_encoder_weights():
    with pytest.raises(ModelError, match="model.encoder_weights='nosuch'") as info:
        create_model("unet", encoder="resnet18", encoder_weights="nosuch")
    assert "imagenet" in str(info.value)


def test_dpt_with_cnn_encoder_is_a_model_error():
    with pytest.raises(ModelError, match="model dpt/resnet18"):
        create_model("dpt", encoder="resnet18")


def test_imagenet_weights_offline_tell_how_to_fix(monkeypatch, tmp_path: Path):
    """The download fails at once (offline mode, empty cache) and smp_bridge turns it into a ModelError."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    start = time.perf_counter()
    with pytest.raises(ModelError) as info:
        create_model("unet", encoder="resnet18", encoder_weights="imagenet", classes=2)
    message = str(info.value)
    assert "could not be downloaded" in message and "encoder_weights: null" in message
    assert "model.encoder_weights='imagenet'" in message and "local .pth/.safetensors" in message
    assert time.perf_counter() - start < 20  # no network retries


def _encoder_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.encoder.state_dict().items()}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_encoder_weights_are_loaded(tmp_path: Path, suffix: str):
    torch.manual_seed(1)
    source = create_model("unet", encoder="resnet18", classes=2)
    state = _encoder_state(source)
    path = tmp_path / f"encoder{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    torch.manual_seed(2)
    fresh = _encoder_state(create_model("unet", encoder="resnet18", classes=2))
    torch.manual_seed(2)  # the same random init as `fresh`, then the file's weights on top
    loaded = create_model("unet", encoder="resnet18", encoder_weights=str(path), classes=2)
    got = loaded.encoder.state_dict()
    assert not torch.equal(fresh["conv1.weight"], state["conv1.weight"])
    for key, value in state.items():
        assert torch.equal(got[key], value), key


def test_local_weights_in_a_lightning_style_dict(tmp_path: Path):
    source = create_model("fpn", encoder="resnet18")
    path = tmp_path / "enc.pth"
    torch.save({"state_dict": source.encoder.state_dict()}, path)
    loaded = create_model("fpn", encoder="resnet18", encoder_weights=str(path))
    assert torch.equal(loaded.encoder.conv1.weight, source.encoder.conv1.weight)


def test_local_encoder_weights_errors(tmp_path: Path):
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"foo.weight": torch.zeros(2)}, unrelated)
    with pytest.raises(ModelError, match="no key matches"):
        create_model("unet", encoder="resnet18", encoder_weights=str(unrelated))

    three_channel = tmp_path / "rgb.pth"
    torch.save(create_model("unet", encoder="resnet18").encoder.state_dict(), three_channel)
    with pytest.raises(ModelError, match="do not fit encoder"):
        create_model("unet", encoder="resnet18", encoder_weights=str(three_channel), in_channels=5)

    pickled = tmp_path / "pickled.pth"
    torch.save({"conv1.weight": _Payload()}, pickled)
    with pytest.raises(ModelError, match="cannot be read as a weights file"):
        create_model("unet", encoder="resnet18", encoder_weights=str(pickled))


class _Payload:
    """An arbitrary picklable object: weights_only loading must refuse it."""


class _TinyNet(nn.Module):
    def __init__(self, in_channels: int, classes: int, width: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, classes, 1))
        self.input_stride = 1

    def forward(self, x):
        return self.body(x)


def test_register_model_makes_custom_module_reachable(clean_registry):
    @register_model("tiny_test_net")
    def tiny(in_channels: int, classes: int, width: int = 4) -> nn.Module:
        return _TinyNet(in_channels, classes, width)

    assert tiny is not None and callable(tiny)  # the decorator returns the factory unchanged
    assert "tiny_test_net" in list_models() and "tiny_test_net" in list_models("segwise")
    assert "tiny_test_net" not in list_models("smp")
    entry = model_entry("Tiny_Test_Net")
    assert entry.family == "segwise" and not entry.uses_encoder
    model = create_model("tiny_test_net", in_channels=5, classes=3, width=6, encoder=None, encoder_weights=None)
    assert isinstance(model, _TinyNet) and model.body[0].out_channels == 6
    assert model(torch.rand(2, 5, 7, 9)).shape == (2, 3, 7, 9)
    assert input_stride(model) == 1


def test_register_same_name_twice_errors(clean_registry):
    register_model("dup_test_net")(_TinyNet)
    with pytest.raises(ModelError, match="registered twice"):
        register_model("DUP_test_net")(_TinyNet)
    with pytest.raises(ModelError, match="registered twice"):
        register_model("unet")(_TinyNet)  # smp names are taken too


def test_model_without_encoder_rejects_encoder(clean_registry):
    register_model("plain_test_net")(_TinyNet)
    with pytest.raises(ModelError, match="takes no 'encoder'.*remove model.encoder"):
        create_model("plain_test_net", encoder="resnet18")
    with pytest.raises(ModelError, match="takes no 'encoder_weights'"):
        create_model("plain_test_net", encoder_weights="imagenet")


def test_bad_constructor_arguments_are_a_model_error(clean_registry):
    register_model("args_test_net")(_TinyNet)
    with pytest.raises(ModelError, match="rejected its arguments.*model.args"):
        create_model("args_test_net", depth=3)


def test_custom_model_with_encoder_family(clean_registry):
    seen = {}

    @register_model("enc_test_net", family="mine", uses_encoder=True)
    def factory(in_channels: int, classes: int, encoder=None, encoder_weights=None):
        seen.update(encoder=encoder, encoder_weights=encoder_weights)
        return _TinyNet(in_channels, classes)

    create_model("enc_test_net", encoder="whatever", encoder_weights=None)
    assert seen == {"encoder": "whatever", "encoder_weights": None}
    assert list_models("mine") == ["enc_test_net"]


def test_fixed_backbone_model_takes_weights_but_no_encoder_name():
    from segwise.errors import ModelError
    from segwise.models import create_model, model_entry

    entry = model_entry("trimap_vit")
    assert entry.takes_weights and not entry.uses_encoder  # `segwise models` does not offer --encoder for it
    with pytest.raises(ModelError, match="takes no 'encoder'"):
        create_model("trimap_vit", in_channels=4, classes=3, encoder="resnet18", size="tiny")
