"""Classic architectures of pytorch-segmentation's zoo (SegNet, FCN-8s, ENet, GCN, DUC-HDC): what is particular to
each — index unpooling, bilinear upsampler init, ENet's size, GCN's large separable kernels, HDC's dilation rates
and DUC's sub-pixel output — and learning a tiny synthetic task. Shapes, strides, channels, the model file and
ONNX export are checked for every model by tests/test_model_contract.py."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segwise.errors import ModelError
from segwise.models import create_model, input_stride, list_models, model_entry
from segwise.models.classic import bilinear_kernel
from segwise.models.classic.duc_hdc import DenseUpsampling, hybrid_dilation
from segwise.models.classic.gcn import BoundaryRefinement, GlobalConvolution

TINY = {"segnet": {"base_channels": 8}, "fcn8": {"base_channels": 8, "fc_channels": 32},
        "enet": {"base_channels": 8}, "gcn": {"encoder": "tu-test_resnet", "kernel_size": 5},
        "duc_hdc": {"encoder": "resnet18"}}
STEPS = {"fcn8": 60, "duc_hdc": 12}  # FCN-8s has no BatchNorm and leaves the class-prior plateau later
CLASSIC = list_models("classic")

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name: str, in_channels: int = 4, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, in_channels=in_channels, classes=classes, **TINY[name])


def test_classic_family_strides_and_encoders():
    """GCN and DUC-HDC sit on an smp encoder; the others have fixed VGG-like / ENet bodies."""
    assert CLASSIC == sorted(TINY)
    assert {n: model_entry(n).uses_encoder for n in CLASSIC} == {"duc_hdc": True, "enet": False, "fcn8": False,
                                                                 "gcn": True, "segnet": False}
    assert {n: input_stride(tiny(n)) for n in CLASSIC} == {"duc_hdc": 8, "enet": 8, "fcn8": 32, "gcn": 32,
                                                           "segnet": 32}
    assert type(create_model("gcn").encoder).__name__ == "ResNetEncoder"  # ResNet-50 by default
    with pytest.raises(ModelError, match="not one of smp's ResNets"):
        create_model("duc_hdc", encoder="tu-test_resnet")


def _top_left_indices(shape: torch.Size) -> torch.Tensor:
    """Max-pool indices as if every 2×2 window's maximum were its top-left pixel."""
    n, c, h, w = shape
    ramp = -torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w).expand(n, c, h, w)
    return F.max_pool2d(ramp, 2, 2, return_indices=True)[1]


@pytest.mark.parametrize(("name", "pool"), [("segnet", "pool"), ("enet", "down1.pool")])
def test_decoder_unpools_by_the_encoder_indices(name: str, pool: str):
    model = tiny(name).eval()
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        expected = model(x)
        handle = model.get_submodule(pool).register_forward_hook(
            lambda _m, inputs, out: (out[0], _top_left_indices(inputs[0].shape)))
        moved = model(x)
        handle.remove()
    assert not torch.allclose(moved, expected, atol=1e-4)  # other indices, other decoder output


def test_segnet_unpooling_places_values_at_the_argmax():
    model = tiny("segnet").eval()
    seen = []
    model.unpool.register_forward_hook(lambda _m, inputs, out: seen.append((inputs[1], out)))
    with torch.no_grad():
        model(torch.randn(1, 4, 64, 64))
    assert len(seen) == 5
    for indices, out in seen:
        mask = torch.zeros_like(out).flatten(2)
        mask.scatter_(2, indices.flatten(2), 1.0)
        assert (out.flatten(2)[mask == 0] == 0).all()  # nothing lands outside the recorded argmax positions


def test_fcn_upsamplers_start_as_bilinear_interpolation():
    """A constant map stays constant away from the border; a ramp stays a ramp (×2 upsampling)."""
    model = tiny("fcn8")
    assert all(torch.equal(layer.weight, bilinear_kernel(3, layer.kernel_size[0]))
               for layer in (model.upscore2, model.upscore_pool4, model.upscore8))
    with torch.no_grad():
        ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 3, 8, 8)
        up = model.upscore2(ramp)[0, 0, 4, 2:-2]  # away from the zero-padded border
    torch.testing.assert_close(up.diff(), torch.full_like(up.diff(), 0.5))
    assert torch.count_nonzero(model.score_pool4.weight) == 0 and torch.count_nonzero(model.score_pool3.weight) == 0


def test_enet_has_the_papers_size():
    """ENet's 0.37 M parameters (paper, Table 1 with 12 CamVid classes)."""
    assert 0.35e6 < sum(p.numel() for p in create_model("enet", classes=12).parameters()) < 0.38e6


def _receptive_field(layer: nn.Module, channels: int, size: int) -> torch.Tensor:
    """Input pixels (bool size×size) that reach the centre output pixel, by the gradient of a positive network."""
    for param in layer.parameters():
        param.data.fill_(0.01)
    x = torch.zeros(1, channels, size, size, requires_grad=True)
    layer(x)[0, :, size // 2, size // 2].sum().backward()
    return x.grad[0].abs().sum(0) > 0


def test_global_convolution_sees_a_dense_k_by_k_window_with_separable_weights():
    block = GlobalConvolution(4, 2, kernel_size=7)
    seen = _receptive_field(block, 4, 15)
    window = torch.zeros(15, 15, dtype=torch.bool)
    window[4:11, 4:11] = True
    assert torch.equal(seen, window)
    weights = sum(p.numel() for n, p in block.named_parameters() if n.endswith("weight"))
    assert weights == 2 * (4 * 2 * 7 + 2 * 2 * 7) < 4 * 2 * 7 * 7  # fewer than one dense 7×7 conv's
    with pytest.raises(ModelError, match="odd"):
        GlobalConvolution(4, 2, kernel_size=4)


def test_boundary_refinement_is_a_residual_correction():
    block = BoundaryRefinement(3)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        block.residual[-1].weight.zero_()
        block.residual[-1].bias.zero_()
        assert torch.equal(block(x), x)


def test_gcn_sums_stage_scores_from_every_encoder_stage():
    model = tiny("gcn").eval()
    seen = []
    for gcn in model.gcn:
        gcn.register_forward_hook(lambda _m, _inputs, out: seen.append(out.shape[-2:]))
    with torch.no_grad():
        model(torch.randn(1, 4, 64, 96))
    assert seen == [(16, 24), (8, 12), (4, 6), (2, 3)] and len(model.merge_br) == 3  # strides 4 … 32


def test_hybrid_dilation_leaves_no_holes_where_equal_rates_do():
    """HDC's point: rates without a common factor cover a dense receptive field; equal rates leave a grid."""
    def stage(rates):
        layers = nn.Sequential(*(nn.Conv2d(1, 1, 3, stride=2 if i == 0 else 1, padding=1) for i in range(len(rates))))
        hybrid_dilation(layers, rates)
        assert all(conv.stride == (1, 1) and conv.dilation == (r, r) for conv, r in zip(layers, rates))
        return layers

    hybrid = _receptive_field(stage((1, 2, 5, 9)), 1, 65)
    rows = hybrid.any(1).nonzero().flatten()
    assert rows.max() - rows.min() + 1 == 2 * (1 + 2 + 5 + 9) + 1
    assert hybrid[rows.min():rows.max() + 1, rows.min():rows.max() + 1].all()
    gridded = _receptive_field(stage((2, 2, 2, 2)), 1, 65)
    assert not gridded[16:49, 16:49].all() and gridded.sum() == 9 ** 2  # every other pixel only
    with pytest.raises(ModelError, match="dilation rates"):
        hybrid_dilation(nn.Sequential(nn.Conv2d(1, 1, 3)), (0, 1))


def test_duc_hdc_keeps_stride_8_and_dense_upsampling_starts_as_nearest_neighbour():
    model = tiny("duc_hdc").eval()
    with torch.no_grad():
        features = model.encoder(torch.randn(1, 4, 64, 64))[-1]
        assert features.shape[-2:] == (8, 8)  # res-4 and res-5 keep stride 8
        assert [conv.dilation[0] for conv in model.encoder.layer4.modules()
                if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)] == [5, 9, 17, 5]
        duc = DenseUpsampling(6, 3, 4, (1, 2))
        cells = duc(torch.randn(1, 6, 5, 5)).unflatten(2, (5, 4)).unflatten(4, (5, 4))  # N×K×5×4×5×4
    torch.testing.assert_close(cells, cells[:, :, :, :1, :, :1].expand_as(cells))  # ICNR: one value per 4×4 cell


def _square_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Bright squares of random size and place on a dark noisy background; class 1 = square."""
    gen = torch.Generator().manual_seed(0)
    images = 0.1 * torch.randn(4, 4, 64, 64, generator=gen)
    masks = torch.zeros(4, 64, 64, dtype=torch.long)
    for i in range(4):
        size, top, left = (int(v) for v in torch.randint(16, 32, (3,), generator=gen))
        top, left = top % (64 - size), left % (64 - size)
        images[i, :, top:top + size, left:left + size] += 1.0
        masks[i, top:top + size, left:left + size] = 1
    return images, masks


@pytest.mark.parametrize("name", CLASSIC)
def test_learns_a_bright_square(name: str):
    images, masks = _square_batch()
    model = tiny(name, classes=2).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(STEPS.get(name, 40)):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), masks)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses
