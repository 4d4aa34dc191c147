"""ContextSeg (Wang & Li, CVPR 2024): a CoordConv stroke autoencoder and a context transformer over its codes.

Stage 1 (`contextseg_embed`) learns a code per stroke image with a reconstruction and a distance-field decoder.
Stage 2 (`contextseg`) keeps that encoder frozen and emits one semantic group per decoding step as a membership
score for every stroke (pointer head); inference decodes auto-regressively and resolves overlaps last-wins.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from segwise.errors import ModelError
from segwise.models.registry import register_model


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CoordConv(nn.Module):
    """Append normalised x, y coordinate planes in [-1, 1] before a 3×3 conv, so codes know where ink lies."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = _conv_bn_relu(cin + 2, cout)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
        return self.block(torch.cat([x, xs, ys], 1))


class _ConvDecoder(nn.Module):
    """(3×3 conv-BN-ReLU, 2×2 stride-2 transposed conv) per stage from the bottleneck up, then 1-channel logits."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        stages = []
        for i in reversed(range(len(channels))):
            cout = channels[max(i - 1, 0)]
            stages += [_conv_bn_relu(channels[i], channels[i]), nn.ConvTranspose2d(channels[i], cout, 2, stride=2)]
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv2d(channels[0], 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(x))


class StrokeEmbedder(nn.Module):
    """CoordConv autoencoder: a 1×H×W stroke image ↔ a code in (0, 1)^code_size, plus a distance-field decoder.

    `root` is r (32 in the paper) and `depth` the number of 2× poolings (5 for 256 px); widths are r·2^i.
    `line_width` is the pen width its stroke images are drawn with, kept so later stages draw the same way.
    `decoder_relu` puts a ReLU after each fully connected layer of the decoder stem; the reference code (the official
    TensorFlow model and the PyTorch port) has none, so imported weights set it False (kept True for segwise runs
    trained with it).
    """

    def __init__(self, image_size: int = 256, root: int = 32, depth: int = 5, hidden: int = 4096,
                 code_size: int = 256, line_width: int = 2, decoder_relu: bool = True) -> None:
        super().__init__()
        self.line_width = line_width
        if image_size % (2 ** depth):
            raise ModelError(f"contextseg_embed: image_size {image_size} must be a multiple of 2**depth = "
                             f"{2 ** depth}; change model depth or the canvas size")
        self.image_size, self.code_size = image_size, code_size
        channels = [root * 2 ** i for i in range(depth)]
        layers: list[nn.Module] = [CoordConv(1, root), nn.MaxPool2d(2)]
        for i in range(1, depth):
            layers += [_conv_bn_relu(channels[i - 1], channels[i]), _conv_bn_relu(channels[i], channels[i]),
                       nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.bottleneck = (channels[-1], image_size // 2 ** depth, image_size // 2 ** depth)
        flat = math.prod(self.bottleneck)
        self.to_code = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.Sigmoid(),
                                     nn.Linear(hidden, code_size), nn.Sigmoid())
        act = nn.ReLU if decoder_relu else nn.Identity  # same module indices either way: weight files stay valid
        self.from_code = nn.Sequential(nn.Linear(code_size, hidden), act(), nn.Linear(hidden, flat), act())
        self.recon_decoder = _ConvDecoder(channels)
        self.df_decoder = _ConvDecoder(channels)

    def encode(self, images: Tensor) -> Tensor:
        """N×1×H×W ink images (0/1) → N×code_size codes."""
        return self.to_code(self.features(images))

    def decode(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Codes → (reconstruction logits, distance-field logits), each N×1×H×W."""
        stem = self.from_code(codes).view(-1, *self.bottleneck)
        return self.recon_decoder(stem), self.df_decoder(stem)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        codes = self.encode(images)
        recon, df = self.decode(codes)
        return {"code": codes, "recon": recon, "df": df}


class SinusoidalPositions(nn.Module):
    """The fixed 1-D sine/cosine position table of "Attention is all you need", added to token embeddings."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        # Angles in float64, rounded once to float32 as the reference code does (float32 angles drift by ~1e-6).
        position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
        freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_len, d_model, dtype=torch.float64)
        table[:, 0::2] = torch.sin(position * freq)
        table[:, 1::2] = torch.cos(position * freq[: d_model // 2])
        self.register_buffer("table", table.float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.size(1) > self.table.size(0):
            raise ModelError(f"{x.size(1)} tokens exceed the {self.table.size(0)} positions of this transformer; "
                             "raise max_strokes/max_groups in the model args")
        return x + self.table[: x.size(1)]


class ContextTransformer(nn.Module):
    """Pre-LN encoder over stroke codes, pre-LN causal decoder over group codes, pointer head → N×T×S logits.

    The reference code normalises only the decoder's output (no final encoder LayerNorm) with LayerNorm eps 1e-6;
    imported weights set `encoder_norm=False, norm_eps=1e-6` (the defaults keep segwise runs trained with them).
    """

    def __init__(self, code_size: int = 256, d_model: int = 256, num_layers: int = 4, num_heads: int = 4,
                 d_ff: int = 2048, dropout: float = 0.0, max_strokes: int = 512, max_groups: int = 64,
                 encoder_norm: bool = True, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.code_size = code_size
        self.stroke_in = nn.Linear(code_size, d_model)
        self.group_in = nn.Linear(code_size, d_model)
        self.stroke_pos = SinusoidalPositions(d_model, max_strokes)
        self.group_pos = SinusoidalPositions(d_model, max_groups)
        layer = dict(d_model=d_model, nhead=num_heads, dim_feedforward=d_ff, dropout=dropout, batch_first=True,
                     norm_first=True, layer_norm_eps=norm_eps)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), num_layers,
                                             norm=nn.LayerNorm(d_model, eps=norm_eps) if encoder_norm else None,
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer), num_layers,
                                             norm=nn.LayerNorm(d_model, eps=norm_eps))
        # The paper's pointer head: three linear maps without activations (1024 → 512 → 256 for d_model 256).
        self.pointer = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.Linear(4 * d_model, 2 * d_model),
                                     nn.Linear(2 * d_model, d_model))

    def encode(self, stroke_codes: Tensor, stroke_valid: Tensor) -> Tensor:
        """N×S×code stroke codes (padding where `stroke_valid` is False) → N×S×d_model context."""
        return self.encoder(self.stroke_pos(self.stroke_in(stroke_codes)), src_key_padding_mask=~stroke_valid)

    def decode(self, memory: Tensor, stroke_valid: Tensor, group_codes: Tensor,
               group_valid: Tensor | None = None) -> Tensor:
        """Start token + N×(T−1)×code group codes → N×T×S logits: row t scores every stroke for group t."""
        start = group_codes.new_full((group_codes.size(0), 1, self.code_size), -1.0)
        tokens = self.group_pos(self.group_in(torch.cat([start, group_codes], 1)))
        steps = tokens.size(1)
        causal = nn.Transformer.generate_square_subsequent_mask(steps, device=tokens.device, dtype=torch.bool)
        padding = None if group_valid is None else ~group_valid[:, :steps]
        out = self.decoder(tokens, memory, tgt_mask=causal, tgt_key_padding_mask=padding,
                           memory_key_padding_mask=~stroke_valid, tgt_is_causal=True)
        return torch.einsum("ntd,nsd->nts", self.pointer(out), memory)

    def forward(self, stroke_codes: Tensor, stroke_valid: Tensor, group_codes: Tensor,
                group_valid: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(stroke_codes, stroke_valid), stroke_valid, group_codes, group_valid)


def union_images(stroke_images: Tensor, members: Tensor) -> Tensor:
    """N×S×H×W stroke images and N×G×S membership → N×G×H×W images of each group's strokes (their pixel max).

    Rasterising a set of polylines equals the max of their separate rasters at the same width, so this is the
    group image without going back to the vector data (and works for predicted groups inside the model).
    """
    weighted = stroke_images.unsqueeze(1) * members.to(stroke_images.dtype)[..., None, None]
    if not members.size(2):
        return stroke_images.new_zeros(*members.shape[:2], *stroke_images.shape[2:])
    return weighted.amax(2)


def last_wins(logits: Tensor, stroke_valid: Tensor, group_valid: Tensor, threshold: float = 0.5) -> Tensor:
    """N×G×S step logits → N×S group labels: a stroke claimed by several steps keeps the last one (ContextSeg's
    post-process); an unclaimed stroke takes its highest-scoring group; padded strokes get −1."""
    scores = logits.masked_fill(~group_valid.unsqueeze(2), float("-inf"))
    claimed = (scores.sigmoid() > threshold) & group_valid.unsqueeze(2)
    steps = torch.arange(logits.size(1), device=logits.device).view(1, -1, 1)
    last = torch.where(claimed, steps, -1).amax(1)
    labels = torch.where(last >= 0, last, scores.argmax(1))
    return labels.masked_fill(~stroke_valid, -1)


class _OnFrozenEmbedder(nn.Module):
    """A stroke segmenter on top of a frozen stage-1 embedder; knows the part names of each of its categories."""

    def __init__(self, embed: dict, categories: dict[str, list[str]]) -> None:
        super().__init__()
        if not categories or any(not parts for parts in categories.values()):
            raise ModelError(f"a sketch segmenter needs at least one category with part names, got {categories!r}")
        self.embedder = StrokeEmbedder(**embed)
        self.embedder.requires_grad_(False)
        self.categories = {str(k): list(v) for k, v in categories.items()}

    def train(self, mode: bool = True) -> _OnFrozenEmbedder:
        """The embedder stays in eval mode (frozen BatchNorm statistics) while the rest trains."""
        super().train(mode)
        self.embedder.eval()
        return self

    def encode_images(self, images: Tensor, valid: Tensor) -> Tensor:
        """N×K×H×W images → N×K×code codes; only the valid ones go through the CNN, the rest stay 0."""
        codes = images.new_zeros(*images.shape[:2], self.embedder.code_size)
        if valid.any():
            codes[valid] = self.embedder.encode(images[valid].unsqueeze(1))
        return codes


class ContextSeg(_OnFrozenEmbedder):
    """Frozen stage-1 embedder + context transformer (one decoding step per part of the sketch's category);
    `threshold` is the membership probability at which a decoding step claims a stroke."""

    def __init__(self, embed: dict, transformer: dict, categories: dict[str, list[str]],
                 threshold: float = 0.5) -> None:
        super().__init__(embed, categories)
        self.transformer = ContextTransformer(code_size=self.embedder.code_size, **transformer)
        self.threshold = threshold

    def forward(self, stroke_images: Tensor, stroke_valid: Tensor, decoder_images: Tensor,
                group_valid: Tensor) -> Tensor:
        """Teacher forcing: the images of groups 0..G−2 as decoder inputs → N×G×S logits for groups 0..G−1."""
        inputs_valid = group_valid[:, 1:]
        stroke_codes = self.encode_images(stroke_images, stroke_valid)
        group_codes = self.encode_images(decoder_images, inputs_valid)
        return self.transformer(stroke_codes, stroke_valid, group_codes, group_valid)

    @torch.no_grad()
    def decoder_inputs(self, stroke_images: Tensor, stroke_valid: Tensor, group_valid: Tensor
                       ) -> tuple[Tensor, Tensor]:
        """Auto-regressive decoding: each step's thresholded strokes, drawn and encoded, feed the next step.

        Returns (N×G×S logits of every step, N×(G−1)×H×W images of the groups fed back), as at inference.
        """
        memory = self.transformer.encode(self.encode_images(stroke_images, stroke_valid), stroke_valid)
        n, steps = group_valid.shape
        codes = memory.new_zeros(n, 0, self.embedder.code_size)
        images, rows = [], []
        for step in range(steps):
            row = self.transformer.decode(memory, stroke_valid, codes, group_valid)[:, -1]
            rows.append(row)
            if step == steps - 1:
                break
            members = (row.sigmoid() > self.threshold) & stroke_valid
            image = union_images(stroke_images, members.unsqueeze(1))
            images.append(image)
            codes = torch.cat([codes, self.encode_images(image, group_valid[:, step + 1:step + 2])], 1)
        shape = (n, 0, *stroke_images.shape[2:])
        return torch.stack(rows, 1), torch.cat(images, 1) if images else stroke_images.new_zeros(shape)

    @torch.no_grad()
    def segment(self, stroke_images: Tensor, stroke_valid: Tensor, group_valid: Tensor) -> Tensor:
        """N×S stroke labels by auto-regressive decoding and the last-wins post-process (−1 on padding)."""
        logits, _ = self.decoder_inputs(stroke_images, stroke_valid, group_valid)
        return last_wins(logits, stroke_valid, group_valid, self.threshold)


class StrokeClassifier(_OnFrozenEmbedder):
    """The no-context baseline: frozen stage-1 code of each stroke alone → MLP → part logits (N×S×G)."""

    def __init__(self, embed: dict, categories: dict[str, list[str]], hidden: int = 256) -> None:
        super().__init__(embed, categories)
        groups = max(len(v) for v in self.categories.values())
        self.head = nn.Sequential(nn.Linear(self.embedder.code_size, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, groups))

    def forward(self, stroke_images: Tensor, stroke_valid: Tensor) -> Tensor:
        return self.head(self.encode_images(stroke_images, stroke_valid))

    @torch.no_grad()
    def segment(self, stroke_images: Tensor, stroke_valid: Tensor, group_valid: Tensor) -> Tensor:
        """N×S labels: each stroke's best part among its category's parts (−1 on padding)."""
        logits = self(stroke_images, stroke_valid)[..., : group_valid.size(1)]
        logits = logits.masked_fill(~group_valid.unsqueeze(1), float("-inf"))
        return logits.argmax(2).masked_fill(~stroke_valid, -1)


# The registry's common `in_channels`/`classes` arguments do not apply: stroke images always have one channel and
# the number of parts comes from `categories`.
@register_model("contextseg_embed", task="sketch_embed")
def _contextseg_embed(*, in_channels: int = 1, classes: int = 1, **kwargs) -> StrokeEmbedder:
    return StrokeEmbedder(**kwargs)


@register_model("contextseg", task="sketch")
def _contextseg(*, in_channels: int = 1, classes: int = 2, embed: dict | None = None,
                transformer: dict | None = None, categories: dict[str, list[str]] | None = None,
                threshold: float = 0.5) -> ContextSeg:
    return ContextSeg(embed or {}, transformer or {}, categories or {"sketch": [f"part_{i}" for i in range(classes)]},
                      threshold)


@register_model("stroke_classifier", task="sketch")
def _stroke_classifier(*, in_channels: int = 1, classes: int = 2, embed: dict | None = None,
                       categories: dict[str, list[str]] | None = None, hidden: int = 256) -> StrokeClassifier:
    return StrokeClassifier(embed or {}, categories or {"sketch": [f"part_{i}" for i in range(classes)]}, hidden)
