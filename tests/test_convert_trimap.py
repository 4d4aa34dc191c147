"""`segwise convert trimap`: parity with the upstream SimpleClick-based trimap ViT through the importer, files that
are refused (pickled code, other architectures, missing keys, another head count) and the containers it unwraps."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import rule_tensor
from segwise.cli import main
from segwise.convert.trimap import convert_trimap_checkpoint, convert_trimap_state_dict, read_trimap_checkpoint
from segwise.errors import CheckpointError
from segwise.models.spec import load_model

PARITY = Path(__file__).parent / "fixtures" / "trimap_parity"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def upstream_state() -> dict[str, torch.Tensor]:
    keys = json.loads((PARITY / "state_dict_keys.json").read_text())
    return {name: rule_tensor(name, tuple(shape)) for name, shape, _ in keys}


def _upstream_config(num_heads: int = 3) -> dict[str, Any]:
    """The `_config` the upstream model records and its trainer saves beside the weights (a torch loss inside)."""
    params = {"backbone_params": {"img_size": (448, 448), "patch_size": (56, 56), "in_chans": 3, "embed_dim": 192,
                                  "depth": 8, "num_heads": num_heads, "mlp_ratio": 4, "qkv_bias": True},
              "neck_params": {"in_dim": 192, "out_dims": [36, 72, 144, 288]},
              "head_params": {"in_channels": [36, 72, 144, 288], "in_index": [0, 1, 2, 3], "dropout_ratio": 0.1,
                              "num_classes": 3, "loss_decode": nn.CrossEntropyLoss(), "align_corners": False,
                              "upsample": "x4", "channels": 16},
              "random_split": False}
    return {"class": "isegm.model.is_trimap_plaintvit_model.TrimapPlainVitModel",
            "params": {name: {"type": "builtin", "value": value, "specified": True} for name, value in params.items()}}


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixture's image (its 28×28 grid repeated to 448×448, values in [0, 1]) and 0/1 prompt, float64."""
    arrays = np.load(PARITY / "inputs.npz")
    image = torch.from_numpy(arrays["image_28"]).double().repeat_interleave(16, 2).repeat_interleave(16, 3)
    return image, torch.from_numpy(arrays["prompt"]).double()[None, None]


def test_weights_rebuilt_by_the_rule_match_the_fixture(upstream_state) -> None:
    checksums = json.loads((PARITY / "weight_checksums.json").read_text())
    assert checksums.keys() == upstream_state.keys()
    for name, tensor in upstream_state.items():
        assert hashlib.sha256(tensor.numpy().tobytes()).hexdigest()[:16] == checksums[name]["sha256_16"], name


NO_POSITION_KEYS = ("backbone.cls_token", "backbone.pos_embed", "backbone.fc_norm.", "backbone.head.")
"""What upstream's NoPosEmbedTrimapPlainVitModel (the model its inference.py builds) lacks; all else is the same."""


@pytest.mark.parametrize("variant", ["TrimapPlainVitModel", "NoPosEmbedTrimapPlainVitModel"])
def test_parity_with_the_upstream_model_through_the_importer(tmp_path: Path, upstream_state, capsys,
                                                             variant: str) -> None:
    """Tolerance: the fixture is the upstream float64 run rounded to float32 (rounding ≤ 1.2e-7) and upstream
    normalises with float32 ImageNet constants, so float64 logits agree to 1e-6. The NoPosEmbed file is saved
    without its config, so the default 448 px input size is used."""
    checkpoint = tmp_path / "000.pth"
    if variant == "TrimapPlainVitModel":  # as upstream's save_checkpoint writes it
        torch.save({"state_dict": upstream_state, "config": _upstream_config()}, checkpoint)
        reference = torch.from_numpy(np.load(PARITY / "logits.npy")).double()
    else:
        state = {k: v for k, v in upstream_state.items() if not k.startswith(NO_POSITION_KEYS)}
        torch.save({"state_dict": state}, checkpoint)
        reference = torch.from_numpy(np.load(PARITY / "logits_noposembed.npy")).double()
    assert main(["convert", "trimap", str(checkpoint), "-o", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "ViT-tiny/56, 8 blocks, 448 px, upsample x4" in printed
    assert ("backbone.head.weight" in printed) == (variant == "TrimapPlainVitModel")
    model, spec = load_model(tmp_path / "run")
    assert spec.args["window_size"] == 4 and spec.num_classes == 3
    model = model.double().eval()
    image, prompt = _inputs()
    mean = torch.tensor(spec.mean[:3], dtype=torch.float64)[None, :, None, None]
    std = torch.tensor(spec.std[:3], dtype=torch.float64)[None, :, None, None]
    x = torch.cat([(image * 255 - mean) / std, prompt], dim=1)
    with torch.no_grad():
        logits = model.head(model.neck(model.tokens(x[:, :3], x[:, 3:]).permute(0, 3, 1, 2)))
        full = model(x)
    assert logits.shape == reference.shape == (1, 3, 128, 128)
    assert (logits - reference).abs().max().item() < 1e-6
    # the forward resizes those logits to the input, as upstream's training and evaluation resize them to the labels
    torch.testing.assert_close(full, F.interpolate(logits, size=(448, 448), mode="bilinear", align_corners=False))


def test_malicious_pickle_is_refused_and_never_run(tmp_path: Path, upstream_state) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"backbone.cls_token": torch.zeros(1, 1, 192)}, "config": Payload()}, path)
    with pytest.raises(CheckpointError, match="evil.pth cannot be read as plain tensors"):
        convert_trimap_checkpoint(path, tmp_path / "run")
    assert main(["convert", "trimap", str(path), "-o", str(tmp_path / "run")]) == 2
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_another_architecture_names_its_first_unmatched_key(tmp_path: Path) -> None:
    path = tmp_path / "factseg.pth"
    torch.save({"model": {"resencoder.resnet.conv1.weight": torch.zeros(64, 3, 7, 7),
                          "fg_cls.weight": torch.zeros(16, 128, 1, 1)}}, path)
    with pytest.raises(CheckpointError, match=r"2 key\(s\).*'resencoder\.resnet\.conv1\.weight' with shape "
                                              r"\(64, 3, 7, 7\)"):
        convert_trimap_checkpoint(path, tmp_path / "run")


def test_missing_keys_and_another_head_count_are_named(tmp_path: Path, upstream_state) -> None:
    partial = {k: v for k, v in upstream_state.items() if k != "neck.down_8.2.weight"}
    torch.save({"state_dict": partial}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\), first 'neck\.x2\.2\.weight' with shape "
                                              r"\(72, 96, 1, 1\)"):
        convert_trimap_checkpoint(tmp_path / "partial.pth", tmp_path / "run")
    torch.save({"state_dict": upstream_state, "config": _upstream_config(num_heads=6)}, tmp_path / "heads.pth")
    with pytest.raises(CheckpointError, match="6 attention heads for width 192"):
        convert_trimap_checkpoint(tmp_path / "heads.pth", tmp_path / "run")


def test_containers_and_prefixes_are_unwrapped_and_unused_keys_listed(tmp_path: Path) -> None:
    tensors = {"backbone.cls_token": torch.zeros(1, 1, 192), "patch_embed_mask.proj.bias": torch.ones(192),
               "head.up_conv2.0.bias": torch.ones(16), "backbone.fc_norm.weight": torch.ones(192)}
    for wrapped in ({"model": {f"module.{k}": v for k, v in tensors.items()}}, {"state_dict": tensors}, tensors):
        torch.save(wrapped, tmp_path / "ckpt.pth")
        state, config = read_trimap_checkpoint(tmp_path / "ckpt.pth")
        assert state.keys() == tensors.keys() and config == {}
    converted, unused = convert_trimap_state_dict(tensors)
    assert sorted(converted) == ["head.up.1.0.bias", "mask_embed.proj.bias", "vit.cls_token"]
    assert unused == ["backbone.fc_norm.weight"]


def test_up_blocks_the_head_does_not_run_are_left_out_and_listed(tmp_path: Path, upstream_state) -> None:
    """Upstream builds both up-blocks whatever `upsample` is; a 32-channel classifier after the 64-channel fusion
    means x2, so up_conv2 is never run."""
    state = {**upstream_state, "head.conv_seg.weight": torch.zeros(3, 32, 1, 1)}
    torch.save({"state_dict": state}, tmp_path / "x2.pth")
    result = convert_trimap_checkpoint(tmp_path / "x2.pth", tmp_path / "run")
    assert result.spec.args["upsample"] == "x2"
    assert sorted(k for k in result.unused if k.startswith("head.")) == sorted(
        k for k in upstream_state if k.startswith("head.up_conv2."))
    model, _ = load_model(tmp_path / "run")
    assert len(model.head.up) == 1 and model.head.classifier[1].weight.shape == (3, 32, 1, 1)
