"""Classic architectures of pytorch-segmentation's zoo (SegNet, FCN-8s, ENet, GCN, DUC-HDC, U-Net, SegResNet,
PSPNet): what is particular to each — index unpooling, bilinear upsampler init, ENet's and U-Net's size, GCN's large
separable kernels, HDC's dilation rates, DUC's sub-pixel output, SegResNet's mirrored decoder, PSPNet's dilated
pyramid and auxiliary loss — and learning a tiny synthetic task. Shapes, strides, channels, the model file and
ONNX export are checked for every model by tests/test_model_contract.py."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segwise.config import load_config
from segwise.engine.module import SegmentationTask
from segwise.errors import ModelError
from segwise.models import create_model, input_stride, list_models, model_entry
from segwise.models.classic import bilinear_kernel
from segwise.models.classic.duc_hdc import DenseUpsampling, hybrid_dilation
from segwise.models.classic.gcn import BoundaryRefinement, GlobalConvolution
from segwise.models.spec import ModelSpec

TINY = {"segnet": {"base_channels": 8}, "fcn8": {"base_channels": 8, "fc_channels": 32},
        "enet": {"base_channels": 8}, "gcn": {"encoder": "tu-test_resnet", "kernel_size": 5},
        "duc_hdc": {"encoder": "resnet18"}, "segresnet": {"encoder": "tu-test_resnet"},
        "unet_classic": {"base_channels": 8}, "pspnet_dilated": {"encoder": "tu-test_resnet"}}
STEPS = {"fcn8": 60, "duc_hdc": 12}  # FCN-8s has no BatchNorm and leaves the class-prior plateau later
CLASSIC = list_models("classic")

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name: str, in_channels: int = 4, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, in_channels=in_channels, classes=classes, **TINY[name])


def test_classic_family_strides_and_encoders():
    """GCN, DUC-HDC, SegResNet and PSPNet sit on an smp encoder; the others have fixed VGG-like / ENet / U-Net
    bodies."""
    assert CLASSIC == sorted(TINY)
    assert {n: model_entry(n).uses_encoder for n in CLASSIC} == {
        "duc_hdc": True, "enet": False, "fcn8": False, "gcn": True, "pspnet_dilated": True, "segnet": False,
        "segresnet": True, "unet_classic": False}
    assert {n: input_stride(tiny(n)) for n in CLASSIC} == {
        "duc_hdc": 8, "enet": 8, "fcn8": 32, "gcn": 32, "pspnet_dilated": 8, "segnet": 32, "segresnet": 32,
        "unet_classic": 16}
    with torch.device("meta"):  # the default backbones' structure, without initialising their weights
        assert type(create_model("gcn").encoder).__name__ == "ResNetEncoder"  # ResNet-50 by default
        assert [m.encoder.out_channels[-1] for m in (create_model("segresnet"), create_model("pspnet_dilated"))] \
            == [2048, 2048]  # ResNet-50, as pytorch-segmentation's
    with pytest.raises(ModelError, match="not one of smp's ResNets"):
        create_model("duc_hdc", encoder="tu-test_resnet")
    with pytest.raises(ModelError, match="segresnet mirrors a ResNet's stages"):
        create_model("segresnet", encoder="efficientnet-b0")
    with pytest.raises(ModelError, match="cannot run at output stride 8"):
        create_model("pspnet_dilated", encoder="tu-test_vit")


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


def test_unet_has_the_papers_size_and_widths():
    """The paper's 31 M parameters at base width 64; blocks at widths 64 … 1024 and strides 1 … 16."""
    with torch.device("meta"):
        assert 31.0e6 < sum(p.numel() for p in create_model("unet_classic", classes=2).parameters()) < 31.1e6
    model = tiny("unet_classic").eval()
    seen = []
    for block in model.down:
        block.register_forward_hook(lambda _m, _inputs, out: seen.append(tuple(out.shape[1:])))
    with torch.no_grad():
        model(torch.randn(1, 4, 32, 48))
    assert seen == [(8, 32, 48), (16, 16, 24), (32, 8, 12), (64, 4, 6), (128, 2, 3)]


def test_segresnet_mirrors_resnet50_and_unpools_by_the_stem_indices():
    """Decoder stages of ResNet-50's 3, 6, 4, 3 blocks, each ending at the next stage's width; the stride-4 map is
    unpooled to the positions of the stem max-pool's maxima."""
    with torch.device("meta"):
        model = create_model("segresnet")
    assert [len(stage) for stage in model.decoder] == [3, 6, 4, 3]
    assert [stage[-1].residual[-2].out_channels for stage in model.decoder] == [1024, 512, 256, 64]
    model = tiny("segresnet").eval()
    stem, unpooled = [], []
    model.encoder.model.act1.register_forward_hook(lambda _m, _inputs, out: stem.append(out))
    model.classifier.register_forward_hook(lambda _m, inputs, _out: unpooled.append(inputs[0]))
    with torch.no_grad():
        model(torch.randn(1, 4, 64, 64))
    _, indices = F.max_pool2d(stem[0], 3, 2, 1, return_indices=True)
    at_maxima = torch.zeros_like(unpooled[0]).flatten(2).scatter_(2, indices.flatten(2), 1.0)
    values = unpooled[0].flatten(2)
    assert (values[at_maxima == 0] == 0).all() and values.count_nonzero() > 0


def test_pspnet_keeps_stride_8_pools_to_the_bins_and_runs_its_aux_head_only_when_asked():
    model = tiny("pspnet_dilated").train()
    pooled, aux_calls = [], []
    for branch in model.head[0].branches:
        branch.register_forward_hook(lambda _m, _inputs, out: pooled.append(tuple(out.shape[-2:])))
    model.aux_head.register_forward_hook(lambda _m, inputs, _out: aux_calls.append(tuple(inputs[0].shape[1:])))
    x = torch.randn(2, 4, 48, 64)
    features = model.encoder(x)
    assert [f.shape[-1] for f in features[-3:]] == [8, 8, 8]  # res-3 … res-5 at stride 8: dilation, not stride
    logits = model(x)
    assert isinstance(logits, torch.Tensor) and not aux_calls  # no aux head unless asked, even in training
    assert pooled == [(1, 1), (2, 2), (3, 3), (6, 6)]
    main, aux = model(x, aux=True)
    assert main.shape == aux.shape == (2, 3, 48, 64)
    assert aux_calls == [(features[-2].shape[1], 6, 8)]  # the aux head reads res-4
    with pytest.raises(ModelError, match="bins"):
        create_model("pspnet_dilated", encoder="tu-test_resnet", bins=[1, 0])


@pytest.mark.parametrize("aux_weight", [0.0, 0.25])
def test_the_training_step_adds_aux_weight_times_the_aux_loss(aux_weight: float):
    """`loss.aux_weight` × the same loss on the auxiliary logits (eval mode: no dropout, so both sides agree)."""
    config = load_config(overrides=[f"loss.aux_weight={aux_weight}", "loss.name=ce + dice"])
    model = tiny("pspnet_dilated", in_channels=3)
    spec = ModelSpec(name="pspnet_dilated", encoder="tu-test_resnet", args={}, in_channels=3, num_classes=3,
                     class_names=["a", "b", "c"], palette=[[0, 0, 0]] * 3)
    task = SegmentationTask(model, spec, config, []).eval()
    batch = {"image": torch.randn(2, 3, 32, 32), "mask": torch.randint(0, 3, (2, 32, 32))}
    with torch.no_grad():
        loss = task.training_step(batch, 0)
        main, aux = model(batch["image"], aux=True)
        main_loss = task.loss(main, batch["mask"])
        torch.testing.assert_close(loss, main_loss + aux_weight * task.loss(aux, batch["mask"]))
    assert load_config().loss.aux_weight == 0.4  # pytorch-segmentation's weight


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
    """The loss falls below half its start and half the class prior's (the cross-entropy of predicting each class's
    pixel share everywhere, which a model that ignores the image can reach)."""
    images, masks = _square_batch()
    share = masks.float().mean().item()
    prior = -(share * np.log(share) + (1 - share) * np.log(1 - share))
    model = tiny(name, classes=2).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(STEPS.get(name, 40)):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), masks)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * min(losses[0], prior), losses
