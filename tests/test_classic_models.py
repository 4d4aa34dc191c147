"""Classic S2 architectures (SegNet, FCN-8s, ENet): one shared tester over the 'classic' family, plus index
unpooling, learning on a tiny synthetic task, and inference through `WholeImage` and `Predictor`."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segwise.engine.checkpoint import ModelSpec
from segwise.inference import Predictor, WholeImage
from segwise.models import create_model, input_stride, list_models, model_entry

TINY = {"segnet": {"base_channels": 8}, "fcn8": {"base_channels": 8, "fc_channels": 32},
        "enet": {"base_channels": 8}}
STRIDE = {"segnet": 32, "fcn8": 32, "enet": 8}
STEPS = {"fcn8": 60}  # FCN-8s has no BatchNorm and leaves the class-prior plateau later (loss/2 by ~45 steps)
CLASSIC = list_models("classic")

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name: str, in_channels: int = 4, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, in_channels=in_channels, classes=classes, **TINY[name])


def test_classic_family_is_registered():
    assert CLASSIC == sorted(TINY)
    assert all(model_entry(n).family == "classic" and not model_entry(n).uses_encoder for n in CLASSIC)


@pytest.mark.parametrize("name", CLASSIC)
def test_output_at_input_resolution(name: str):
    model = tiny(name).eval()
    stride = input_stride(model)
    assert stride == STRIDE[name]
    with torch.no_grad():
        for height, width in ((2 * stride, 3 * stride), (3 * stride, 2 * stride) if stride > 8 else (40, 56)):
            out = model(torch.randn(1, 4, height, width))
            assert out.shape == (1, 3, height, width) and torch.isfinite(out).all()
        probs = WholeImage()(model, torch.randn(2, 4, 45, 70), stride)  # padded to the stride, cropped back
    assert probs.shape == (2, 3, 45, 70)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 45, 70))


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


@pytest.mark.parametrize("name", CLASSIC)
def test_predictor_matches_the_unfolded_model(name: str):
    model = tiny(name).eval()
    spec = ModelSpec(name=name, encoder=None, args=TINY[name], in_channels=4, num_classes=3,
                     class_names=["a", "b", "c"], palette=[[0, 0, 0]] * 3, mean=[127.0] * 4, std=[64.0] * 4)
    image = np.random.default_rng(0).integers(0, 256, (45, 70, 4), dtype=np.uint8)
    with torch.inference_mode():
        tensor = torch.from_numpy((image.transpose(2, 0, 1) - 127.0) / 64.0).float()[None]
        expected = WholeImage()(model, tensor, input_stride(model))[0].numpy()
    predictor = Predictor(model, spec, "cpu")
    if name != "fcn8":  # FCN-8s has no BatchNorm to fold; the others trace with torch.fx and lose their conv BNs
        assert isinstance(predictor.model, torch.fx.GraphModule)
    np.testing.assert_allclose(predictor.predict_proba(image), expected, atol=1e-4)
    np.testing.assert_array_equal(predictor.predict(image), expected.argmax(0))


def test_spec_rebuilds_a_classic_model():
    spec = ModelSpec(name="enet", encoder=None, args=TINY["enet"], in_channels=4, num_classes=3,
                     class_names=["a", "b", "c"], palette=[[0, 0, 0]] * 3)
    model = spec.build()
    assert type(model).__name__ == "ENet" and input_stride(model) == 8
