"""Transforms keep masks aligned with images for every preset and input type; normalisation."""

import albumentations as A
import numpy as np
import pytest
from scipy import ndimage

from segwise.data.transforms import (
    PRESETS,
    apply_transform,
    build_eval_transform,
    build_train_transform,
    normalize,
    seed_transform,
)
from segwise.errors import ConfigError

IGNORE = 255
INPUTS = {
    "uint8x3": (np.uint8, 3, 1.0),
    "uint16x3": (np.uint16, 3, 100.0),
    "uint8x5": (np.uint8, 5, 1.0),
    "float32x4": (np.float32, 4, 1 / 255),
}


def _blocks(seed=0, shape=(7, 9), block=8):
    labels = np.random.default_rng(seed).integers(0, 6, shape)
    return np.kron(labels, np.ones((block, block), np.int64))


def _image(mask, dtype, channels, scale):
    return np.repeat((mask * 10 * scale)[..., None], channels, axis=2).astype(dtype)


def _geometric_only(transform):
    """Switch off pixel-value ops so that image values must still equal mask * 10 wherever both are defined."""
    for op in getattr(transform, "transforms", ()):
        if isinstance(op, (A.ImageOnlyTransform, A.CoarseDropout)):
            op.p = 0.0
        _geometric_only(op)
    return transform


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("kind", INPUTS)
def test_presets_run_and_keep_mask_aligned(preset, kind):
    dtype, channels, scale = INPUTS[kind]
    mask = _blocks()
    image = _image(mask, dtype, channels, scale)
    kwargs = {"crop_size": 40, "scale_range": (0.8, 1.25), "rotate": 10, "hflip": True, "num_channels": channels}
    colour = build_train_transform(preset, **kwargs)
    aligned = _geometric_only(build_train_transform(preset, **kwargs))
    for seed in range(6):
        seed_transform(colour, seed)
        out, out_mask = apply_transform(colour, image, mask)
        assert out.shape == (40, 40, channels) and out.dtype == np.float32 and np.isfinite(out).all()
        assert out_mask.shape == (40, 40) and out_mask.dtype == np.int64
        assert set(np.unique(out_mask)) <= {0, 1, 2, 3, 4, 5, IGNORE}

        seed_transform(aligned, seed)
        out, out_mask = apply_transform(aligned, image, mask)
        # pixels whose 5×5 neighbourhood has one class and lies inside the image: linear interpolation is exact
        flat = ndimage.minimum_filter(out_mask, 5, mode="constant", cval=-1) == ndimage.maximum_filter(out_mask, 5)
        interior = flat & (out_mask != IGNORE)
        if interior.sum() < 50:
            continue
        # chained interpolations may blend a few units across edges; a shifted mask would be off by >= 10
        agreement = np.abs(out[..., -1] / scale - out_mask * 10)[interior] < 5.0
        assert agreement.all(), (preset, kind, seed, agreement.mean())


def test_new_mask_pixels_are_ignore_and_image_pixels_zero():
    mask = np.zeros((20, 20), np.int64)
    image = np.full((20, 20, 3), 200, np.uint8)
    transform = build_train_transform("none", crop_size=32)
    out, out_mask = apply_transform(transform, image, mask)
    assert (out_mask == IGNORE).sum() == 32 * 32 - 20 * 20
    assert (out[out_mask == IGNORE] == 0).all() and (out[out_mask == 0] == 200).all()


def test_resize_to_image_size_and_eval_transform():
    mask = _blocks()
    image = _image(mask, np.uint16, 3, 100.0)
    out, out_mask = apply_transform(build_train_transform("none", image_size=(30, 20)), image, mask)
    assert out.shape == (30, 20, 3) and out_mask.shape == (30, 20)
    assert out.max() > 255  # uint16 stays in raw units
    assert build_eval_transform() is None
    out, out_mask = apply_transform(build_eval_transform(16), image, mask)
    assert out.shape == (16, 16, 3) and set(np.unique(out_mask)) <= set(range(6))


def test_seeded_transform_is_reproducible():
    mask = _blocks()
    image = _image(mask, np.uint8, 3, 1.0)
    transform = build_train_transform("hard", crop_size=32, hflip=True, vflip=True)
    seed_transform(transform, 5)
    first = apply_transform(transform, image, mask)
    apply_transform(transform, image, mask)
    seed_transform(transform, 5)
    again = apply_transform(transform, image, mask)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_normalize_uses_raw_units_or_dtype_scale():
    image = np.array([[[0, 255, 51]]], np.uint8)
    np.testing.assert_allclose(normalize(image), [[[0.0, 1.0, 0.2]]])
    np.testing.assert_allclose(normalize(image.astype(np.uint16) * 257), [[[0.0, 1.0, 0.2]]], rtol=1e-6)
    np.testing.assert_allclose(normalize(image, mean=[0, 100, 51], std=[1, 5, 3]), [[[0.0, 31.0, 0.0]]])
    with pytest.raises(ConfigError, match="data.mean has 2 values but the images have 3 channels"):
        normalize(image, mean=[1, 2])
    with pytest.raises(ConfigError, match="data.std must be positive"):
        normalize(image, std=[1, 0, 1])


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError, match="preset"):
        build_train_transform("extreme")
    with pytest.raises(ConfigError, match="data.crop_size"):
        build_train_transform("none", crop_size=(0, 4))
    with pytest.raises(ConfigError, match="scale_range"):
        build_train_transform("none", scale_range=(2.0, 1.0))
