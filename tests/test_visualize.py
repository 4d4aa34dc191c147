import numpy as np
import pytest

from segwise.visualize import colorize, default_palette, legend, overlay, side_by_side, to_display_rgb


def test_default_palette_matches_voc():
    palette = default_palette(256)
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    expected = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128],
                [128, 0, 128], [0, 128, 128], [128, 128, 128], [64, 0, 0], [192, 0, 0]]
    np.testing.assert_array_equal(palette[:10], expected)
    np.testing.assert_array_equal(palette[255], [224, 224, 192])
    np.testing.assert_array_equal(default_palette(3), palette[:3])


def test_default_palette_is_unique_up_to_65536():
    palette = default_palette(65536)
    assert len(np.unique(palette, axis=0)) == 65536


@pytest.mark.parametrize("bad", [0, -1, 65537])
def test_default_palette_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match=str(bad)):
        default_palette(bad)


def test_colorize_maps_classes_ignore_and_out_of_range():
    palette = default_palette(3)
    mask = np.array([[0, 1, 2], [255, 7, -1]])
    rgb = colorize(mask, palette, ignore_index=255, ignore_color=(9, 8, 7))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0], palette)
    np.testing.assert_array_equal(rgb[1], [[9, 8, 7]] * 3)


def test_colorize_rejects_float_mask():
    with pytest.raises(ValueError, match="integer dtype"):
        colorize(np.zeros((2, 2), dtype=np.float32), default_palette(2))


def test_to_display_rgb_keeps_uint8():
    image = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    out = to_display_rgb(image)
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_to_display_rgb_stretches_uint16_per_channel():
    ramp = np.arange(10000, dtype=np.uint16).reshape(100, 100)
    image = np.stack([ramp, ramp // 4, np.full_like(ramp, 7)], axis=2)
    out = to_display_rgb(image)
    assert out.shape == (100, 100, 3) and out.dtype == np.uint8
    for channel in range(2):
        assert out[..., channel].min() == 0 and out[..., channel].max() == 255
        assert 100 < out[50, 50, channel] < 155
    assert np.all(out[..., 2] == 0)


def test_to_display_rgb_one_channel_is_grey():
    image = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8, 1)
    out = to_display_rgb(image)
    assert out.shape == (8, 8, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    np.testing.assert_array_equal(to_display_rgb(image[..., 0]), out)


def test_to_display_rgb_multispectral_uses_first_three_bands():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(6, 7, 5)).astype(np.float32)
    image[0, 0, 0] = np.nan
    out = to_display_rgb(image)
    assert out.shape == (6, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, to_display_rgb(image[..., :3]))
    two = to_display_rgb(image[..., :2])
    assert np.all(two[..., 2] == 0)


def test_overlay_alpha_zero_returns_image():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (10, 12))
    np.testing.assert_array_equal(overlay(image, mask, default_palette(4), alpha=0.0), image)


def test_overlay_ignore_shows_image_and_interior_blends():
    image = np.full((9, 9, 3), 100, dtype=np.uint8)
    mask = np.full((9, 9), 255)
    mask[2:7, 2:7] = 1
    palette = np.array([[0, 0, 0], [200, 0, 0]], dtype=np.uint8)
    out = overlay(image, mask, palette, alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(out[4, 4], [150, 50, 50])
    np.testing.assert_array_equal(out[2, 4], [100, 0, 0])  # boundary: darker colour, full opacity


def test_overlay_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="does not match"):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), int), default_palette(2))


def test_side_by_side_shape_and_panels():
    a = np.full((20, 30, 3), 10, dtype=np.uint8)
    b = np.full((16, 25, 3), 200, dtype=np.uint8)
    out = side_by_side([a, b], ["image", "a very long prediction title"])
    with_caption = side_by_side([a, b], ["image", "prediction"], caption="IoU 63.2%")
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[1] == 30 + 25 + 3 * 4
    assert out.shape[0] > 20 and with_caption.shape[0] > out.shape[0]
    assert with_caption.shape[1] == out.shape[1]
    top = out.shape[0] - 20 - 4
    np.testing.assert_array_equal(out[top : top + 20, 4 : 4 + 30], a)
    np.testing.assert_array_equal(out[top : top + 16, 38 : 38 + 25], b)
    assert out[:top].max() == 255  # white title text was drawn


def test_side_by_side_requires_one_title_per_rgb_panel():
    panel = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="titles"):
        side_by_side([panel, panel], ["only one"])
    with pytest.raises(ValueError, match="uint8"):
        side_by_side([np.zeros((4, 4))], ["grey"])


def test_legend_draws_swatches():
    palette = default_palette(3)
    out = legend(["background", "road", "building"], palette)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert {(128, 0, 0), (0, 128, 0)} <= colours
    wide = legend([f"class {i}" for i in range(40)], default_palette(40), max_rows=10)
    assert wide.shape[1] > wide.shape[0]
    with pytest.raises(ValueError, match="palette has 2"):
        legend(["a", "b", "c"], default_palette(2))
