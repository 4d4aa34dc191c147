"""trimap_vit: shapes for every ViT size, the prompt embedding, windowed attention and local MAE/timm weights."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from segwise.errors import ModelError
from segwise.models import create_model, input_stride
from segwise.models.trimap_vit import VIT_SIZES, load_vit_weights

TINY = dict(in_channels=4, classes=3, size="tiny", depth=2, head_channels=32)


@pytest.mark.parametrize("patch_size", [14, 16])
@pytest.mark.parametrize("upsample", ["x1", "x4"])
def test_tiny_forward_any_input_size(one_thread, patch_size: int, upsample: str) -> None:
    model = create_model("trimap_vit", img_size=4 * patch_size, patch_size=patch_size, upsample=upsample, **TINY).eval()
    assert input_stride(model) == patch_size
    with torch.no_grad():
        for height, width in [(4, 4), (3, 6), (8, 5)]:  # in patches: the position grid is resampled by timm
            x = torch.randn(2, 4, height * patch_size, width * patch_size)
            assert model(x).shape == (2, 3, height * patch_size, width * patch_size)


@pytest.mark.parametrize("size", list(VIT_SIZES))
def test_every_size_builds_with_reference_shapes(size: str) -> None:
    """Built on the meta device (no memory, no compute): ViT blocks of the standard size, output 3 × H × W."""
    dim, depth, heads = VIT_SIZES[size]
    with torch.device("meta"):
        model = create_model("trimap_vit", in_channels=4, classes=3, size=size, patch_size=14, img_size=448,
                             window_size=16)
        for height, width in [(448, 448), (182, 518)]:
            assert model(torch.empty(1, 4, height, width)).shape == (1, 3, height, width)
    assert model.vit.embed_dim == dim and len(model.vit.blocks) == depth
    assert model.vit.blocks[0].attn.num_heads == heads
    # per block: qkv 3d²+3d, proj d²+d, MLP 4d²+4d and 4d²+d, two LayerNorms 4d (timm's ViT, MLP ratio 4)
    assert sum(p.numel() for p in model.vit.blocks.parameters()) == depth * (12 * dim * dim + 13 * dim)
    assert model.mask_embed.proj.weight.shape == (dim, 1, 14, 14)
    group = depth // 4
    assert sorted(model.global_blocks) == [group * k - 1 for k in range(1, 5)]  # last block of each of 4 groups
    assert model.neck.channels == (dim * 3 // 16, dim * 3 // 8, dim * 3 // 4, dim * 3 // 2)


def test_huge_matches_the_reference_dimensions() -> None:
    with torch.device("meta"):
        model = create_model("trimap_vit", in_channels=4, classes=3, size="huge", patch_size=14, img_size=448)
    assert model.vit.patch_embed.grid_size == (32, 32)
    assert model.neck.channels == (240, 480, 960, 1920)  # the trimap ViT's SimpleFPN channels
    vit_params = sum(p.numel() for p in model.vit.parameters())
    assert 630e6 < vit_params < 635e6  # ViT-H/14 has 632 M parameters


def test_prompt_mask_changes_the_output(one_thread) -> None:
    torch.manual_seed(0)
    model = create_model("trimap_vit", img_size=64, patch_size=16, **TINY).eval()
    x = torch.randn(1, 4, 64, 64)
    x[:, 3] = 0.0
    y = x.clone()
    y[:, 3, 16:48, 16:48] = 1.0
    with torch.no_grad():
        a, b = model(x), model(y)
        assert (a - b).abs().mean() > 1e-3
        model.mask_embed.proj.weight.zero_()
        model.mask_embed.proj.bias.zero_()
        assert torch.allclose(model(x), model(y))  # only the prompt embedding carries the 4th channel


def test_windowed_blocks_differ_from_global_and_pad_odd_grids(one_thread) -> None:
    torch.manual_seed(0)
    windowed = create_model("trimap_vit", img_size=64, patch_size=16, window_size=2, **{**TINY, "depth": 4}).eval()
    plain = create_model("trimap_vit", img_size=64, patch_size=16, **{**TINY, "depth": 4}).eval()
    plain.load_state_dict(windowed.state_dict())
    assert sorted(windowed.global_blocks) == [0, 1, 2, 3] and len(plain.global_blocks) == 4  # groups of one block
    windowed_8 = create_model("trimap_vit", img_size=64, patch_size=16, window_size=2, **{**TINY, "depth": 8}).eval()
    plain_8 = create_model("trimap_vit", img_size=64, patch_size=16, **{**TINY, "depth": 8}).eval()
    plain_8.load_state_dict(windowed_8.state_dict())
    assert sorted(windowed_8.global_blocks) == [1, 3, 5, 7]
    x = torch.randn(1, 4, 80, 48)  # 5 × 3 tokens: windows of 2 × 2 need padding
    with torch.no_grad():
        out = windowed_8(x)
        assert out.shape == (1, 3, 80, 48)
        assert (out - plain_8(x)).abs().max() > 1e-4  # same weights, different attention pattern


def test_wrong_arguments_are_clear_errors() -> None:
    with pytest.raises(ModelError, match="size 'gigantic'"):
        create_model("trimap_vit", in_channels=4, classes=3, size="gigantic")
    with pytest.raises(ModelError, match="takes no .encoder."):
        create_model("trimap_vit", in_channels=4, classes=3, encoder="resnet18")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_loads_local_timm_vit_weights_with_resampled_positions(tmp_path, suffix: str) -> None:
    """An MAE/timm ViT file (224 px grid, classifier head) loads into the backbone; head and prompt stay fresh."""
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)  # MAE/DDP layout
    model = create_model("trimap_vit", img_size=64, patch_size=16, **TINY)
    prompt_before = model.mask_embed.proj.weight.clone()
    missing, unexpected = load_vit_weights(model, path)
    assert missing == [] and unexpected == []
    assert torch.equal(model.vit.blocks[1].mlp.fc1.weight, state["blocks.1.mlp.fc1.weight"])
    assert model.vit.pos_embed.shape == (1, 1 + 16, 192)  # 14 × 14 grid resampled to 4 × 4
    assert torch.equal(model.mask_embed.proj.weight, prompt_before)
    built = create_model("trimap_vit", img_size=64, patch_size=16, encoder_weights=str(path), **TINY)
    assert torch.equal(built.vit.cls_token, state["cls_token"])


def test_weight_errors_name_the_file(tmp_path) -> None:
    model = create_model("trimap_vit", img_size=64, patch_size=16, **TINY)
    with pytest.raises(ModelError, match="do not exist"):
        load_vit_weights(model, tmp_path / "absent.pth")
    small = timm.create_model("vit_small_patch16_224", pretrained=False, depth=2)
    save_file(small.state_dict(), str(tmp_path / "small.safetensors"))
    with pytest.raises(ModelError, match="model.args.size"):
        load_vit_weights(model, tmp_path / "small.safetensors")
