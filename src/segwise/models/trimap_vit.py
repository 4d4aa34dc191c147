"""`trimap_vit`: the trimap ViT, a mask-prompted plain ViT (SimpleClick-style) for background / unknown / foreground.

Input convention: one tensor N×4×H×W, the normalised RGB image and, as the 4th channel, the binary prompt mask in
[0, 1]. Keeping the prompt as an input channel lets the engine, sliding windows and TTA run the model unchanged.
The ViT is timm's `VisionTransformer` (absolute position embeddings resampled to any input size); the prompt gets a
patch embedding of its own that is added to the image patch tokens before the position embedding. A SimpleFPN neck
turns the last block's token map (no final norm) into four scales, an all-MLP head fuses them, optional up-blocks go
to stride 1, and the logits are resized to the input size. Neck, head and the missing final norm follow SimpleClick's
code layer for layer (proven by tests/test_convert_trimap.py against the upstream model), so `segwise convert
trimap` loads its checkpoints.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.layers import PatchEmbed, resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_sam import window_partition, window_unpartition
from torch import nn

from segwise.errors import ModelError
from segwise.models.registry import register_model

log = logging.getLogger(__name__)

VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}
"""Size → (embedding dim, depth, heads), as MAE / timm ViT-{Ti,S,B,L,H}."""
UPSAMPLE = {"x1": 0, "x2": 1, "x4": 2}
WINDOW_GROUPS = 4  # SimpleClick: in each of 4 block groups, all but the last block attend within windows


def _norm_act(channels: int) -> list[nn.Module]:
    return [nn.GroupNorm(1, channels), nn.GELU()]


class SimpleFPN(nn.Module):
    """ViTDet's simple feature pyramid as SimpleClick builds it: one stride-p map → strides p/4, p/2, p, 2p with
    channels dim·3/16 … dim·3/2; the resampling branches are widened (max(2·out, dim/2), max(out, dim/2),
    max(out, 2·dim)) and end in a 1×1 conv, layer for layer as SimpleClick's, so its checkpoints load."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        c4, c2, c1, c05 = dim * 3 // 16, dim * 3 // 8, dim * 3 // 4, dim * 3 // 2
        w4, w2, w05 = max(2 * c4, dim // 2), max(c2, dim // 2), max(c05, 2 * dim)
        self.x4 = nn.Sequential(nn.ConvTranspose2d(dim, w4, 2, stride=2), *_norm_act(w4),
                                nn.ConvTranspose2d(w4, w4 // 2, 2, stride=2), nn.GroupNorm(1, w4 // 2),
                                nn.Conv2d(w4 // 2, c4, 1), *_norm_act(c4))
        self.x2 = nn.Sequential(nn.ConvTranspose2d(dim, w2, 2, stride=2), nn.GroupNorm(1, w2),
                                nn.Conv2d(w2, c2, 1), *_norm_act(c2))
        self.x1 = nn.Sequential(nn.Conv2d(dim, c1, 1), *_norm_act(c1))
        self.x05 = nn.Sequential(nn.Conv2d(dim, w05, 2, stride=2), nn.GroupNorm(1, w05),
                                 nn.Conv2d(w05, c05, 1), *_norm_act(c05))
        self.channels = (c4, c2, c1, c05)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # A one-token-wide grid (a one-patch input) has no 2×2 window: replicate the token so the coarsest level
        # exists; grids of 2 and more are untouched.
        height, width = x.shape[-2:]
        coarse = F.pad(x, (0, int(width < 2), 0, int(height < 2)), mode="replicate") if min(height, width) < 2 else x
        return [self.x4(x), self.x2(x), self.x1(x), self.x05(coarse)]


def _up_block(channels: int) -> nn.Sequential:
    """×2 up-block of SimpleClick's head: 2×2 deconv halving the channels, GN, 1×1 conv, GN, GELU."""
    half = channels // 2
    return nn.Sequential(nn.ConvTranspose2d(channels, half, 2, stride=2), nn.GroupNorm(1, half),
                         nn.Conv2d(half, half, 1), *_norm_act(half))


class MLPHead(nn.Module):
    """SegFormer-style head as SimpleClick's: 1×1 conv + ReLU per scale, resize to the finest, concat, 1×1 conv +
    ReLU (no norm), optional ×2 up-blocks, dropout, 1×1 classifier."""

    def __init__(self, in_channels: tuple[int, ...], channels: int, classes: int, upsample: str, dropout: float) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Sequential(nn.Conv2d(c, channels, 1), nn.ReLU()) for c in in_channels)
        self.fuse = nn.Sequential(nn.Conv2d(channels * len(in_channels), channels, 1), nn.ReLU())
        self.up = nn.Sequential(*(_up_block(channels >> i) for i in range(UPSAMPLE[upsample])))
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(channels >> UPSAMPLE[upsample], classes, 1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        maps = [F.interpolate(p(f), size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size else p(f)
                for p, f in zip(self.proj, features)]
        return self.classifier(self.up(self.fuse(torch.cat(maps, dim=1))))


class TrimapViT(nn.Module):
    """Mask-prompted ViT + SimpleFPN + MLP head → 3 trimap logits (0 background, 1 unknown, 2 foreground)."""

    def __init__(self, in_channels: int = 4, classes: int = 3, size: str = "base", patch_size: int = 16,
                 img_size: int = 448, depth: int | None = None, window_size: int | None = None,
                 upsample: str = "x4", head_channels: int = 256, dropout: float = 0.1,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if in_channels != 4:
            raise ModelError(f"trimap_vit takes in_channels=4 (RGB + prompt mask), got {in_channels}; pass in_channels=4")
        if size not in VIT_SIZES:
            raise ModelError(f"trimap_vit size {size!r} is unknown; choose one of {', '.join(VIT_SIZES)}")
        if upsample not in UPSAMPLE:
            raise ModelError(f"trimap_vit upsample {upsample!r} is unknown; choose one of {', '.join(UPSAMPLE)}")
        dim, default_depth, heads = VIT_SIZES[size]
        self.vit = VisionTransformer(img_size=img_size, patch_size=patch_size, in_chans=3, num_classes=0,
                                     global_pool="", embed_dim=dim, depth=depth or default_depth, num_heads=heads,
                                     mlp_ratio=4.0, qkv_bias=True, dynamic_img_size=True, final_norm=False,
                                     drop_path_rate=drop_path_rate)
        self.mask_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=1, embed_dim=dim,
                                     flatten=False, output_fmt="NHWC", strict_img_size=False)
        self.window_size = window_size
        self.global_blocks = self._global_blocks(len(self.vit.blocks), window_size)
        self.neck = SimpleFPN(dim)
        self.head = MLPHead(self.neck.channels, head_channels, classes, upsample, dropout)
        self.input_stride = patch_size  # the engine pads inputs to a multiple of this

    @staticmethod
    def _global_blocks(depth: int, window_size: int | None) -> set[int]:
        """Every block attends globally without windows; with windows, the last block of each of 4 groups does."""
        if window_size is None:
            return set(range(depth))
        group = max(depth // WINDOW_GROUPS, 1)
        return {i for i in range(depth) if (i + 1) % group == 0 or i == depth - 1}

    def decay_layers(self) -> list[list[nn.Parameter]]:
        """Parameters from the input up, for layer-wise LR decay: the embeddings (image and prompt patch embeddings,
        position embedding, class token), then each block; the rest (neck, head) lies above them."""
        vit = self.vit
        tokens = [p for p in (vit.pos_embed, vit.cls_token, vit.reg_token) if p is not None]
        embeddings = [*vit.patch_embed.parameters(), *self.mask_embed.parameters(), *tokens]
        return [embeddings, *(list(block.parameters()) for block in vit.blocks)]

    def tokens(self, image: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Patch tokens N×h×w×D: image and prompt embeddings summed, position embedding added, blocks applied."""
        x = self.vit.patch_embed(image) + self.mask_embed(prompt)
        height, width = x.shape[1:3]
        x = self.vit._pos_embed(x)[:, self.vit.num_prefix_tokens:]  # timm resamples the position grid; cls dropped
        x = self.vit.norm_pre(x).view(x.shape[0], height, width, -1)
        for index, block in enumerate(self.vit.blocks):
            if index in self.global_blocks:
                x = block(x.flatten(1, 2)).view_as(x)
            else:
                windows, padded = window_partition(x, self.window_size)
                windows = block(windows.flatten(1, 2)).view_as(windows)
                x = window_unpartition(windows, self.window_size, (height, width), padded)
        return x  # no norm after the blocks: SimpleClick feeds the last block's tokens to the neck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image, prompt = x[:, :3], x[:, 3:4]
        features = self.tokens(image, prompt).permute(0, 3, 1, 2)
        logits = self.head(self.neck(features))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _unwrap_state(state: dict) -> dict[str, torch.Tensor]:
    """MAE files hold {'model': ...}; Lightning/DeiT files {'state_dict': ...}; strip DDP/backbone prefixes."""
    for key in ("model", "state_dict", "module"):
        if isinstance(state.get(key), dict):
            state = state[key]
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone.", "encoder.", "vit."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def load_vit_weights(model: TrimapViT, path: str | Path) -> tuple[list[str], list[str]]:
    """Load MAE/timm ViT weights from a local .safetensors/.pth file into `model.vit` (prompt embedding and head stay
    fresh); position embeddings are resampled to the model's grid. Returns (missing, unexpected) keys."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ViT weights {path} do not exist; pass a local MAE/timm checkpoint (nothing is downloaded)")
    try:
        raw = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu",
                                                                                      weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path} cannot be read as ViT weights ({exc})") from None
    skipped = ("head", "norm.", "fc_norm", "decoder", "mask_token")  # classifier, final norms (unused), MAE decoder
    state = {k: v for k, v in _unwrap_state(raw).items() if not k.startswith(skipped)}
    target = model.vit.state_dict()
    if "pos_embed" in state and state["pos_embed"].shape != target["pos_embed"].shape:
        prefix = model.vit.num_prefix_tokens
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=model.vit.patch_embed.grid_size,
                                                    num_prefix_tokens=prefix)
    wrong = [k for k, v in state.items() if k in target and v.shape != target[k].shape]
    if wrong:
        raise ModelError(f"{path}: {', '.join(f'{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}' for k in wrong[:4])}"
                         " do not fit this ViT; choose the matching model.args.size / patch_size")
    result = model.vit.load_state_dict(state, strict=False)
    log.info("loaded %s: %d missing keys %s, %d unexpected keys %s", path, len(result.missing_keys),
             result.missing_keys[:8], len(result.unexpected_keys), result.unexpected_keys[:8])
    return list(result.missing_keys), list(result.unexpected_keys)


@register_model("trimap_vit", task="trimap", takes_weights=True)
def trimap_vit(*, in_channels: int = 4, classes: int = 3, encoder_weights: str | None = None,
               **kwargs) -> TrimapViT:
    """`create_model("trimap_vit", size=..., patch_size=..., img_size=..., window_size=..., upsample=...)`;
    `encoder_weights` is a local MAE/timm ViT file (used at training time only, never downloaded)."""
    model = TrimapViT(in_channels=in_channels, classes=classes, **kwargs)
    if encoder_weights is not None:
        load_vit_weights(model, encoder_weights)
    return model
