"""ContextSeg networks and losses: CoordConv, causality, padding, pointer head, last-wins and the loss formulas.

Shapes, the frozen embedder, label ranges and the model file of every sketch model: tests/test_model_contract.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segwise.errors import ConfigError, ModelError
from segwise.losses import LOSSES
from segwise.losses.sketch import EmbeddingLoss, FocalMembershipLoss
from segwise.models.contextseg import (ContextSeg, ContextTransformer, SinusoidalPositions, StrokeClassifier,
                                       StrokeEmbedder, last_wins, union_images)

EMBED = dict(image_size=32, root=4, depth=3, hidden=32, code_size=16)
TRANSFORMER = dict(d_model=16, num_layers=2, num_heads=2, d_ff=32)
PARTS = {"cup": ["handle", "body", "steam"], "sun": ["disc", "rays"]}


@pytest.fixture(autouse=True)
def _seeded(one_thread):
    torch.manual_seed(0)


def _strokes(n: int = 2, s: int = 5, size: int = 32) -> torch.Tensor:
    return (torch.rand(n, s, size, size) > 0.9).float()


def test_embedder_has_two_decoders_and_checks_its_size():
    out = StrokeEmbedder(**EMBED).eval()(torch.rand(3, 1, 32, 32))
    assert not torch.equal(out["recon"], out["df"])  # two independent decoders
    with pytest.raises(ModelError, match="multiple of 2\\*\\*depth"):
        StrokeEmbedder(image_size=36, depth=3)


def test_coordconv_makes_codes_position_aware():
    """The same dot at two places must give different codes (a plain conv + global pooling could not tell)."""
    model = StrokeEmbedder(**EMBED).eval()
    images = torch.zeros(2, 1, 32, 32)
    images[0, 0, 4, 4] = images[1, 0, 27, 27] = 1
    codes = model.encode(images)
    assert not torch.allclose(codes[0], codes[1])


def test_sinusoidal_positions_follow_the_formula():
    table = SinusoidalPositions(8, 10).table
    pos, i = 3, 2
    assert table[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / 8)), abs=1e-6)
    assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos / 10000 ** (2 * i / 8)), abs=1e-6)
    with pytest.raises(ModelError, match="max_strokes"):
        SinusoidalPositions(8, 4)(torch.zeros(1, 5, 8))


def test_decoder_is_causal_and_ignores_padded_strokes():
    net = ContextTransformer(code_size=16, **TRANSFORMER).eval()
    codes, groups = torch.rand(1, 5, 16), torch.rand(1, 3, 16)
    valid = torch.tensor([[True, True, True, False, False]])
    logits = net(codes, valid, groups)
    assert logits.shape == (1, 4, 5)  # start token + 3 group tokens → 4 rows, one score per stroke
    later = groups.clone()
    later[:, 2] = torch.rand(16)
    changed = net(codes, valid, later)
    assert torch.allclose(changed[:, :3], logits[:, :3], atol=1e-6)  # rows 0..2 never see token 3
    assert not torch.allclose(changed[:, 3], logits[:, 3])
    padded = codes.clone()
    padded[:, 3:] = torch.rand(2, 16)
    assert torch.allclose(net(padded, valid, groups)[..., :3], logits[..., :3], atol=1e-6)


def test_pointer_head_scores_each_stroke_by_a_dot_product():
    net = ContextTransformer(code_size=16, **TRANSFORMER).eval()
    codes, valid, groups = torch.rand(1, 4, 16), torch.ones(1, 4, dtype=torch.bool), torch.rand(1, 2, 16)
    memory = net.encode(codes, valid)
    start = torch.full((1, 1, 16), -1.0)
    tokens = net.group_pos(net.group_in(torch.cat([start, groups], 1)))
    causal = torch.nn.Transformer.generate_square_subsequent_mask(3, dtype=torch.bool)
    queries = net.pointer(net.decoder(tokens, memory, tgt_mask=causal))
    assert torch.allclose(net(codes, valid, groups), queries @ memory.transpose(1, 2), atol=1e-5)


def test_union_images_equal_the_max_of_member_strokes():
    strokes = _strokes(1, 4, 8)
    members = torch.tensor([[[True, False, True, False], [False, False, False, False]]])
    union = union_images(strokes, members)
    assert torch.equal(union[0, 0], torch.maximum(strokes[0, 0], strokes[0, 2]))
    assert not union[0, 1].any()


def test_last_wins_keeps_the_last_claim_and_gives_unclaimed_strokes_their_best_group():
    big, small = 5.0, -5.0
    logits = torch.tensor([[[big, big, small, small, small],   # group 0 claims strokes 0, 1
                            [small, big, -3.0, -1.0, small],  # group 1 claims stroke 1 again (last wins)
                            [small, small, big, -2.0, small]]])  # group 2 claims stroke 2; stroke 3 unclaimed
    stroke_valid = torch.tensor([[True, True, True, True, False]])
    group_valid = torch.ones(1, 3, dtype=torch.bool)
    assert last_wins(logits, stroke_valid, group_valid).tolist() == [[0, 1, 2, 1, -1]]
    only_two = torch.tensor([[True, True, False]])  # a category with two parts never gets label 2
    assert last_wins(logits, stroke_valid, only_two).tolist() == [[0, 1, 1, 1, -1]]


def test_autoregressive_decoding_matches_teacher_forcing_on_its_own_outputs():
    """Feeding back the decoded groups' images with teacher forcing must reproduce every step's logits."""
    model = ContextSeg(EMBED, TRANSFORMER, PARTS).eval()
    strokes = _strokes(2, 5)
    stroke_valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    group_valid = torch.tensor([[True, True, True], [True, True, False]])
    logits, images = model.decoder_inputs(strokes, stroke_valid, group_valid)
    assert logits.shape == (2, 3, 5) and images.shape == (2, 2, 32, 32)
    forced = model(strokes, stroke_valid, images, group_valid)
    assert torch.allclose(forced[0], logits[0], atol=1e-5)
    assert torch.allclose(forced[1, :2], logits[1, :2], atol=1e-5)
    labels = model.segment(strokes, stroke_valid, group_valid)
    assert labels[1, 3:].tolist() == [-1, -1] and int(labels[1, :3].max()) <= 1


def test_segmenters_need_part_names():
    for build in (lambda parts: ContextSeg(EMBED, TRANSFORMER, parts), lambda parts: StrokeClassifier(EMBED, parts)):
        with pytest.raises(ModelError, match="part names"):
            build({"cup": []})


def test_focal_membership_loss_formula_and_padding():
    logits = torch.tensor([[[2.0, -1.0, 0.5], [0.0, 3.0, 7.0]]])
    target = torch.tensor([[[1.0, 0.0, -1.0], [0.0, 1.0, -1.0]]])
    valid = target >= 0
    p = logits.sigmoid()
    p_t = p * target + (1 - p) * (1 - target)
    bce = F.binary_cross_entropy_with_logits(logits, target.clamp_min(0), reduction="none")
    expected = ((1 - p_t) ** 2 * bce)[valid].mean()
    assert FocalMembershipLoss(2.0)(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)
    assert FocalMembershipLoss(0.0)(logits, target).item() == pytest.approx(bce[valid].mean().item(), rel=1e-5)
    changed = logits.clone()
    changed[..., 2] = -50.0  # padded entries do not count
    assert FocalMembershipLoss()(changed, target).item() == pytest.approx(expected.item(), rel=1e-5)
    empty = FocalMembershipLoss()(logits.requires_grad_(), torch.full_like(target, -1.0))
    assert empty.item() == 0.0
    empty.backward()
    assert torch.all(logits.grad == 0)
    with pytest.raises(ConfigError):
        FocalMembershipLoss(-1.0)


def test_embedding_loss_is_recon_bce_plus_weighted_df_mse():
    recon, df = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    image, target = (torch.rand(2, 1, 4, 4) > 0.5).float(), torch.rand(2, 1, 4, 4)
    loss = EmbeddingLoss(0.5)
    expected = F.binary_cross_entropy_with_logits(recon, image) + 0.5 * F.mse_loss(df.sigmoid(), target)
    assert loss(recon, df, image, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(loss.last_values) == {"recon", "df"}
    assert "focal_bce" not in LOSSES and "sketch_embedding" not in LOSSES  # not pixel losses: --loss cannot name them


def test_union_images_match_the_rasteriser():
    """Drawing a group's strokes together equals the max of their separate stroke images (same pen width)."""
    from segwise.data.sketch.formats import Sketch
    from segwise.data.sketch.raster import render_strokes, render_union

    sketch = Sketch([np.array([[2, 2], [20, 5]]), np.array([[5, 25], [25, 25], [25, 10]]),
                     np.array([[10, 10], [12, 18]])], np.array([0, 1, 0]), "toy", ["a", "b"])
    strokes = torch.from_numpy(render_strokes(sketch, size=32, width=2)).float()[None]
    members = torch.tensor([[[True, False, True]]])
    expected = torch.from_numpy(render_union(sketch, [0, 2], size=32, width=2)).float()
    assert torch.equal(union_images(strokes, members)[0, 0], expected)
