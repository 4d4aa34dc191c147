"""Window planner, blending, `SlidingWindow` and TTA: exact agreements with whole-image inference and with MONAI."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segwise.errors import ConfigError
from segwise.inference import MultiScaleFlip, SlidingWindow, WholeImage, build_mode, plan_windows, weight_map
from segwise.data.tile import axis_starts
from segwise.inference.windows import BandAccumulator
from tests.helpers import ConvNet

pytestmark = pytest.mark.usefixtures("one_thread")


class FlipSymmetricNet(ConvNet):
    """Flip-equivariant in both directions: kernels symmetric under horizontal and vertical mirroring."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            for layer in self.body:
                if isinstance(layer, nn.Conv2d):
                    w = layer.weight
                    layer.weight.copy_((w + w.flip(-1) + w.flip(-2) + w.flip(-1, -2)) / 4)


@pytest.fixture(scope="module")
def net() -> ConvNet:
    return ConvNet().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 50, 70, generator=torch.Generator().manual_seed(1))


def run(mode, model, images, stride=1) -> torch.Tensor:
    with torch.inference_mode():
        return mode(model, images, stride)


# ---- planner and weights -------------------------------------------------------------------------------------
def test_axis_starts_end_on_the_border_and_cover_everything():
    assert axis_starts(100, 40, 30) == [0, 30, 60]
    assert axis_starts(100, 40, 20) == [0, 20, 40, 60]
    assert axis_starts(90, 40, 30) == [0, 30, 50]  # last window moved back to end at 90
    assert axis_starts(30, 40, 10) == [0]  # window larger than the image: one (shrunk) window
    for size, window, stride in [(517, 64, 48), (64, 64, 1), (65, 64, 64), (1000, 96, 96)]:
        starts = axis_starts(size, window, stride)
        covered = torch.zeros(size, dtype=torch.bool)
        for s in starts:
            covered[s:s + window] = True
        assert covered.all() and starts[-1] + window == size and starts == sorted(set(starts))


def test_plan_shrinks_a_window_larger_than_the_image():
    plan = plan_windows(30, 200, (64, 64), overlap=0.5)
    assert plan.window == (30, 64) and plan.ys == (0,) and plan.xs == (0, 32, 64, 96, 128, 136)
    assert list(plan)[:2] == [(0, 0), (0, 32)] and len(plan) == 6


@pytest.mark.parametrize(("kwargs", "option"), [
    (dict(window=64, stride=0), "stride"), (dict(window=64, overlap=1.0), "overlap"),
    (dict(window=64, overlap=-0.1), "overlap"), (dict(window=0), "window"), (dict(window=(64, -1)), "window"),
    (dict(window=64, stride=65), "stride"), (dict(window=64, stride=8, overlap=0.5), "either"),
])
def test_bad_window_options_are_config_errors_naming_the_option(kwargs, option):
    with pytest.raises(ConfigError, match=option):
        plan_windows(100, 100, **kwargs)
    with pytest.raises(ConfigError, match=option):
        SlidingWindow(**kwargs)


def test_gaussian_weights_match_monai_definition():
    weights = weight_map(9, 16, "gaussian", 0.125)
    assert weights.shape == (9, 16) and weights.max() <= 1 and weights.min() >= 1e-3
    assert torch.equal(weights, weights.flip(0)) and torch.equal(weights, weights.flip(1))
    assert torch.equal(weight_map(4, 5), torch.ones(4, 5))
    monai_utils = pytest.importorskip("monai.data.utils")
    expected = monai_utils.compute_importance_map((9, 16), mode="gaussian", sigma_scale=0.125)
    assert torch.allclose(weights, expected, rtol=0, atol=1e-7)
    with pytest.raises(ConfigError, match="blend"):
        weight_map(4, 4, "cosine")


def test_band_accumulator_reuses_its_rows_and_normalises():
    acc = BandAccumulator(classes=1, width=4, rows=3)
    ones = torch.ones(1, 3, 4)
    acc.add(0, 0, ones, torch.ones(3, 4))
    acc.add(0, 0, 3 * ones, torch.ones(3, 4))  # mean 2 over rows 0..2
    done = acc.pop(1)
    assert done.shape == (1, 1, 4) and torch.all(done == 2) and acc.top == 1
    acc.add(1, 0, 5 * ones, torch.full((3, 4), 2.0))  # rows 1, 2: (1 + 3 + 5·2)/(2 + 2) = 3.5; row 3 = 5
    rest = acc.pop(4)
    assert torch.allclose(rest[0, :, 0], torch.tensor([3.5, 3.5, 5.0])) and acc.rows == 3
    acc.add(4, 1, 7 * torch.ones(1, 3, 2), torch.ones(3, 2))  # rows 4..6 wrap around the ring of 3 rows
    last = acc.pop(7)
    assert torch.all(last[:, :, 1:3] == 7) and torch.all(last[:, :, [0, 3]].isnan())  # 0/0: no window there
    with pytest.raises(RuntimeError, match="raster order"):
        acc.add(5, 0, ones, torch.ones(3, 4))


def test_finished_rows_come_in_bounded_bands(net, monkeypatch):
    from segwise.inference import windows

    images = torch.randn(1, 3, 50, 70, generator=torch.Generator().manual_seed(5))
    mode = SlidingWindow(24, stride=16, blend="gaussian")
    whole_bands = run(mode, net, images)
    monkeypatch.setattr(windows, "BAND_VALUES", 70 * 4 * 3)  # three rows of 70 pixels × 4 classes
    plan = mode.plan(50, 70)
    with torch.inference_mode():
        crops = ((y, x, images[0, :, y:y + 24, x:x + 24]) for y, x in plan)
        bands = list(windows.blend_windows(net, plan, crops, 1, blend="gaussian"))
    assert max(band.shape[1] for _, band in bands) == 3
    ends = [top + band.shape[1] for top, band in bands]
    assert [top for top, _ in bands] == [0, *ends[:-1]] and ends[-1] == 50  # in order, each row once
    torch.testing.assert_close(torch.cat([band for _, band in bands], dim=1), whole_bands[0])


# ---- sliding == whole where it must be -------------------------------------------------------------------------
def test_one_window_covering_the_image_equals_whole(net, images):
    whole = run(WholeImage(), net, images[:1])
    for window in [(50, 70), 128]:
        for blend in ("constant", "gaussian"):
            slide = run(SlidingWindow(window, blend=blend), net, images[:1])
            assert torch.allclose(slide, whole, rtol=0, atol=1e-6), (window, blend)


def test_one_window_equals_whole_for_a_strided_unet():
    from segwise.models import create_model, input_stride

    model = create_model("unet", encoder="tu-test_resnet", in_channels=3, classes=3, encoder_weights=None,
                         decoder_channels=(16, 8, 8, 8, 8)).eval()
    image = torch.randn(1, 3, 45, 70, generator=torch.Generator().manual_seed(2))  # not a multiple of 32
    stride = input_stride(model)
    whole = run(WholeImage(), model, image, stride)
    slide = run(SlidingWindow(window=(45, 70)), model, image, stride)
    assert torch.allclose(slide, whole, rtol=0, atol=1e-6)


def test_constant_blend_with_stride_equal_to_window_is_a_tiled_whole(net):
    images = torch.randn(1, 3, 48, 60, generator=torch.Generator().manual_seed(3))
    slide = run(SlidingWindow((16, 20), stride=(16, 20), blend="constant"), net, images)
    whole = WholeImage()
    for y in range(0, 48, 16):
        for x in range(0, 60, 20):
            tile = run(whole, net, images[..., y:y + 16, x:x + 20])
            assert torch.allclose(slide[..., y:y + 16, x:x + 20], tile, rtol=0, atol=1e-6)


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_result_does_not_depend_on_the_window_batch_size(net, images, blend):
    results = [run(SlidingWindow(24, overlap=0.4, batch_size=b, blend=blend), net, images) for b in (1, 3, 7, 64)]
    for result in results[1:]:
        assert torch.allclose(result, results[0], rtol=0, atol=1e-6)
    assert results[0].shape == (2, 4, 50, 70) and torch.allclose(results[0].sum(1), torch.ones(2, 50, 70), atol=1e-5)


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_translation_equivariant_model_agrees_with_whole_away_from_window_borders(net, images, blend):
    """Every window prediction is exact except within the receptive radius of a window edge inside the image."""
    mode = SlidingWindow(24, stride=12, blend=blend)
    slide, whole = run(mode, net, images), run(WholeImage(), net, images)
    plan = mode.plan(50, 70)
    exact = torch.ones(50, 70, dtype=torch.bool)
    r, (wh, ww) = ConvNet.radius, plan.window
    for y, x in plan:
        for edge in (y, y + wh):
            if 0 < edge < 50:
                exact[max(edge - r, y):min(edge + r, y + wh), x:x + ww] = False
        for edge in (x, x + ww):
            if 0 < edge < 70:
                exact[y:y + wh, max(edge - r, x):min(edge + r, x + ww)] = False
    assert exact.float().mean() > 0.3
    assert torch.allclose(slide[..., exact], whole[..., exact], rtol=0, atol=1e-5)
    assert not torch.allclose(slide, whole, atol=1e-3)  # the zero-padded window borders do differ


def test_logit_averaging_is_softmax_of_the_mean_logits(net, images):
    image = images[:1, :, :24, :36]
    slide = run(SlidingWindow((24, 24), stride=12, average="logits"), net, image)
    with torch.inference_mode():
        left, right = net(image[..., :24]), net(image[..., 12:36])
    logits = torch.cat([left[..., :12], (left[..., 12:] + right[..., :12]) / 2, right[..., 12:]], dim=-1)
    assert torch.allclose(slide, logits.softmax(1), atol=1e-5)
    probs = run(SlidingWindow((24, 24), stride=12), net, image)
    assert not torch.allclose(slide, probs, atol=1e-4)  # probability averaging is the default and differs


# ---- MONAI cross-check ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("blend", ["constant", "gaussian"])
@pytest.mark.parametrize(("size", "roi", "overlap"), [((64, 96), (32, 32), 0.25), ((50, 70), (24, 32), 0.5),
                                                      ((37, 41), (16, 16), 0.3)])
def test_same_probabilities_as_monai_sliding_window_inference(net, size, roi, overlap, blend):
    """Same placement (MONAI's, for images at least as large as the window) and same weights → same result."""
    inferers = pytest.importorskip("monai.inferers")
    image = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(4))
    ours = run(SlidingWindow(roi, overlap=overlap, blend=blend, batch_size=3), net, image)
    with torch.inference_mode():
        theirs = inferers.sliding_window_inference(image, roi, 3, lambda x: net(x).softmax(1), overlap=overlap,
                                                   mode=blend, sigma_scale=0.125)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-5), (ours - theirs).abs().max()


# ---- TTA ------------------------------------------------------------------------------------------------------
def test_tta_with_scale_one_and_no_flip_is_the_base_mode(net, images):
    for base in (WholeImage(), SlidingWindow(24, overlap=0.5, blend="gaussian")):
        assert torch.equal(run(MultiScaleFlip(base), net, images), run(base, net, images))


def test_flip_tta_on_a_flip_equivariant_model_equals_the_base():
    model = FlipSymmetricNet().eval()
    image = torch.randn(1, 3, 32, 40, generator=torch.Generator().manual_seed(5))  # window plan mirror-symmetric
    for base in (WholeImage(), SlidingWindow(16, stride=8, blend="gaussian")):
        plain = run(base, model, image)
        flipped = run(MultiScaleFlip(base, hflip=True, vflip=True), model, image)
        assert torch.allclose(flipped, plain, atol=1e-5)
    assert not torch.allclose(run(MultiScaleFlip(WholeImage(), hflip=True), ConvNet(seed=7).eval(), image),
                              run(WholeImage(), ConvNet(seed=7).eval(), image), atol=1e-3)


def test_multiscale_averages_resized_probabilities(net, images):
    scales = MultiScaleFlip(WholeImage(), scales=(0.5, 1.0, 1.5), hflip=True)
    probs = run(scales, net, images)
    assert probs.shape == (2, 4, 50, 70) and torch.allclose(probs.sum(1), torch.ones(2, 50, 70), atol=1e-5)
    half = torch.nn.functional.interpolate(images, size=(25, 35), mode="bilinear", align_corners=False)
    small = torch.nn.functional.interpolate(run(WholeImage(), net, half), size=(50, 70), mode="bilinear",
                                            align_corners=False)
    one = run(MultiScaleFlip(WholeImage(), scales=(0.5,)), net, images)
    assert torch.allclose(one, small, atol=1e-6)
    with pytest.raises(ConfigError, match="scales"):
        MultiScaleFlip(WholeImage(), scales=(0.0,))


# ---- options → mode -------------------------------------------------------------------------------------------
def test_build_mode_from_options():
    assert isinstance(build_mode("whole"), WholeImage)
    slide = build_mode("slide", window=[256, 384], overlap=0.5, window_batch=8, blend="gaussian")
    assert isinstance(slide, SlidingWindow) and slide.window == (256, 384) and slide.batch_size == 8
    tta = build_mode("slide", window=128, stride=64, scales=[0.5, 1.0], flip="hv")
    assert isinstance(tta, MultiScaleFlip) and tta.hflip and tta.vflip and tta.scales == (0.5, 1.0)
    assert isinstance(tta.base, SlidingWindow) and tta.base.stride == 64
    assert build_mode("whole", flip="h").flips() == [(), (3,)]
    with pytest.raises(ConfigError, match="--mode slide"):
        build_mode("whole", window=256)
    with pytest.raises(ConfigError, match="flip"):
        build_mode("whole", flip="x")
    with pytest.raises(ConfigError, match="mode"):
        build_mode("tiles")


def test_predictor_runs_the_network_in_channels_last_with_the_same_probabilities():
    import numpy as np
    import segmentation_models_pytorch as smp

    from segwise.models.spec import ModelSpec
    from segwise.inference import Predictor

    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3, encoder_depth=3,
                     decoder_channels=(32, 16, 8)).eval()
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    spec = ModelSpec(name="unet", encoder="resnet18", args={}, in_channels=3, num_classes=3,
                     class_names=["a", "b", "c"], palette=[[0, 0, 0]] * 3, mean=[127.0] * 3, std=[64.0] * 3)
    with torch.inference_mode():
        expected = WholeImage()(model, torch.from_numpy((image.transpose(2, 0, 1) - 127.0) / 64.0).float()[None],
                                8)[0].numpy()
    predictor = Predictor(model, spec, "cpu")
    assert predictor.model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in predictor.model.modules())  # folded into the convs
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the caller's model is left as it was
    np.testing.assert_allclose(predictor.predict_proba(image), expected, atol=1e-5)


class BranchyNet(nn.Module):
    """Python control flow on the input, which torch.fx cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 2, 3, padding=1), nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) if x.sum() > 0 else -self.bn(self.conv(x))


class TwoHeads(nn.Module):
    """A tuple output, which the fold check does not compare."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 2, 3, padding=1), nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.bn(self.conv(x))
        return y, -y


def test_fold_batchnorm_keeps_models_it_cannot_trace_or_check():
    from segwise.inference.predictor import fold_batchnorm

    example = torch.randn(1, 3, 8, 8)
    for model in (BranchyNet().eval(), TwoHeads().eval()):
        assert fold_batchnorm(model, example) is model
    plain = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU()).eval()
    with torch.no_grad():
        plain[1].running_mean.uniform_(-1, 1)
        plain[1].running_var.uniform_(0.5, 2)
    folded = fold_batchnorm(plain, example)
    assert folded is not plain and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        torch.testing.assert_close(folded(example), plain(example), rtol=1e-5, atol=1e-5)
