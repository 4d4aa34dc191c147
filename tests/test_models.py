"""Model registry and smp bridge: registration, names, encoders, encoder weights, declared strides and the
errors. What every model must do (shapes, channels, strides, the model file, ONNX) is tests/test_model_contract.py."""

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

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def clean_registry(monkeypatch):
    """Custom registrations made by a test disappear after it."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))


def test_every_smp_architecture_is_registered():
    smp_archs = list_models("smp")
    assert smp_archs == sorted(smp.MODEL_ARCHITECTURES_MAPPING)
    assert {"unet", "unetplusplus", "deeplabv3plus", "fpn", "segformer", "dpt", "upernet"} <= set(smp_archs)
    assert set(smp_archs) <= set(list_models(task="semantic"))
    assert all(model_entry(name).family == "smp" and model_entry(name).uses_encoder for name in smp_archs)
    assert "resnet18" in list_encoders() and "mit_b0" in list_encoders()


def test_input_stride_values():
    """The encoder's output stride, or what a decoder needs beyond it (PAN: ×8; DPT: its deepest stage)."""
    strides = {arch: input_stride(create_model(arch, encoder=encoder))
               for arch, encoder in [("unet", "tu-test_resnet"), ("fpn", "tu-test_resnet"), ("dpt", "tu-test_vit"),
                                     ("deeplabv3plus", "tu-test_resnet"), ("pan", "tu-test_resnet")]}
    assert strides == {"unet": 32, "fpn": 32, "dpt": 32, "deeplabv3plus": 16, "pan": 128}
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
    entry = model_entry("trimap_vit")
    assert entry.takes_weights and not entry.uses_encoder  # `segwise models` does not offer --encoder for it
    with pytest.raises(ModelError, match="takes no 'encoder'"):
        create_model("trimap_vit", in_channels=4, classes=3, encoder="resnet18", size="tiny")
