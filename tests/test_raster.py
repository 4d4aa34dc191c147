"""Streaming rasters: GeoTIFF in → GeoTIFF out with georeference and nodata kept, bounded memory, clean errors,
and the `predict`/`eval` wiring (`--mode slide`, rasters, PNGs over --max-pixels)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from segwise.cli import main
from segwise.data.io import read_mask, write_png
from segwise.data.transforms import normalize
from segwise.models.spec import ModelSpec, save_model
from segwise.errors import DataError
from segwise.inference import (Ensemble, MultiScaleFlip, Predictor, RasterModel, SlidingWindow, WholeImage,
                               predict_raster, rle_encode)
from segwise.inference.raster import DEFAULT_WINDOW, streaming_mode
from tests.helpers import ConvNet, write_geotiff

pytestmark = pytest.mark.usefixtures("one_thread")
PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]


def make_spec(in_channels: int = 3, **kwargs) -> ModelSpec:
    values = dict(name="unet", encoder="tu-test_resnet", args={"decoder_channels": [16, 8, 8, 8, 8]},
                  in_channels=in_channels, num_classes=4, class_names=["a", "b", "c", "d"], palette=PALETTE,
                  mean=[100.0] * in_channels, std=[60.0] * in_channels)
    return ModelSpec(**{**values, **kwargs})


def random_pixels(bands: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    pixels = (np.random.default_rng(seed).random((bands, height, width)) * 250 + 5).astype(np.uint8)
    pixels[:, :9, :13] = 0  # a nodata corner
    return pixels


def in_memory(model, spec: ModelSpec, pixels: np.ndarray, mode, valid: np.ndarray) -> torch.Tensor:
    image = normalize(pixels.transpose(1, 2, 0), spec.mean, spec.std)
    image[~valid] = 0
    with torch.inference_mode():
        return mode(model, torch.from_numpy(image.transpose(2, 0, 1).copy())[None], 1)[0]


def stream(model, spec: ModelSpec, src, dst: Path, **options):
    """`predict_raster` with one stride-1 model."""
    return predict_raster([RasterModel(model, spec, 1)], src, dst, **options)


@pytest.fixture(scope="module")
def net() -> ConvNet:
    return ConvNet().eval()


def test_geotiff_in_geotiff_out_keeps_georeference_nodata_and_matches_in_memory(net, tmp_path):
    pixels = random_pixels(3, 150, 200)
    src = write_geotiff(tmp_path / "scene.tif", pixels)
    spec = make_spec()
    mode = SlidingWindow(48, overlap=0.25, blend="gaussian", batch_size=5)
    result = stream(net, spec, src, tmp_path / "out" / "scene.tif", mode=mode, probs="uint8",
                            confidence=True, color=True)
    valid = ~(pixels == 0).all(0)
    expected = in_memory(net, spec, pixels, mode, valid)
    labels = expected.argmax(0).numpy()
    with rasterio.open(src) as a, rasterio.open(result.classes) as b:
        assert (b.crs, b.transform, b.width, b.height, b.count) == (a.crs, a.transform, 200, 150, 1)
        classes = b.read(1)
        assert b.dtypes[0] == "uint8" and b.nodata == 255 and b.colormap(1)[1][:3] == (255, 0, 0)
    assert np.array_equal(classes[valid], labels[valid]) and (classes[~valid] == 255).all()
    with rasterio.open(result.probs) as probs:
        assert probs.count == 4 and probs.crs.to_epsg() == 32633
        quantised = probs.read()
        assert np.abs(quantised[:, valid] / 255 - expected.numpy()[:, valid]).max() <= 0.5 / 255 + 1e-6
        assert (probs.dataset_mask()[~valid] == 0).all() and (probs.dataset_mask()[valid] == 255).all()
    with rasterio.open(result.confidence) as confidence:
        conf = confidence.read(1)
        assert confidence.nodata == 0 and (conf[~valid] == 0).all()
        assert np.abs(conf[valid] / 255 - expected.max(0).values.numpy()[valid]).max() <= 0.5 / 255 + 1e-6
    with rasterio.open(result.color) as color:
        rgb = color.read()
        assert color.count == 3 and np.array_equal(rgb[:, valid].T, np.asarray(PALETTE, np.uint8)[labels[valid]])
    assert result.stats.windows == len(mode.plan(150, 200))


def test_float16_probabilities_and_a_raster_without_nodata(net, tmp_path):
    pixels = random_pixels(3, 70, 90, seed=1)
    src = write_geotiff(tmp_path / "plain.tif", pixels, nodata=None)
    spec = make_spec()
    result = stream(net, spec, src, tmp_path / "plain_out.tif", mode=SlidingWindow(32, stride=20),
                            probs="float16")
    expected = in_memory(net, spec, pixels, SlidingWindow(32, stride=20), np.ones((70, 90), bool)).numpy()
    with rasterio.open(result.probs) as probs, rasterio.open(result.classes) as classes:
        assert probs.nodata is None and classes.nodata is None
        assert np.abs(probs.read() - expected).max() < 1e-3  # half precision
        assert np.array_equal(classes.read(1), expected.argmax(0))


def test_memory_is_bounded_by_the_window_rows_not_the_image(net, tmp_path):
    """Rasters whose float32 probability map is many times the budget stream with a band of window rows, and the
    peak does not grow with the raster's height."""
    width, classes = 480, 4
    mode = SlidingWindow(64, stride=48, batch_size=4)
    peaks = {}
    for height in (800, 3200):
        src = write_geotiff(tmp_path / f"tall{height}.tif", random_pixels(3, height, width, seed=2))
        tracemalloc.start()
        try:
            result = stream(net, make_spec(), src, tmp_path / f"tall{height}_out.tif", mode=mode,
                                    probs="uint8", confidence=True)
            peaks[height] = tracemalloc.get_traced_memory()[1]  # numpy: input rows, windows, outputs, writers
        finally:
            tracemalloc.stop()
        stats = result.stats
        assert stats.band_rows <= 64 + 48 and stats.input_rows <= 64
        with rasterio.open(result.classes) as out:
            assert (out.height, out.width) == (height, width)
            assert out.read(1, window=rasterio.windows.Window(0, height - 5, width, 5)).max() < 4  # last rows
    full_map = classes * 3200 * width * 4  # 24.6 MB: what a full-size float32 accumulator holds (MONAI, mmseg)
    accumulator = stats.band_rows * width * (classes + 1) * 4  # torch sums + weights (tracemalloc cannot see them)
    assert accumulator + peaks[3200] < full_map / 4, (accumulator, peaks, full_map)
    assert peaks[3200] < 1.5 * peaks[800], peaks


def test_wrong_band_count_unreadable_raster_and_existing_output_are_clean_errors(net, tmp_path):
    src = write_geotiff(tmp_path / "four.tif", random_pixels(4, 40, 40))
    with pytest.raises(DataError, match=r"4 band\(s\) but the model takes 3"):
        stream(net, make_spec(), src, tmp_path / "o.tif")
    assert not list(tmp_path.glob("*o.tif*"))  # nothing half-written left behind
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 this is not a tiff")
    with pytest.raises(DataError, match="broken.tif"):
        stream(net, make_spec(), broken, tmp_path / "b.tif")
    src3 = write_geotiff(tmp_path / "three.tif", random_pixels(3, 40, 40))
    stream(net, make_spec(), src3, tmp_path / "three_out.tif", confidence=True)
    with pytest.raises(DataError, match="exists.*--overwrite"):
        stream(net, make_spec(), src3, tmp_path / "three_out.tif")
    stream(net, make_spec(), src3, tmp_path / "three_out.tif", overwrite=True)


def test_streaming_modes_from_whole_and_tta():
    assert streaming_mode(WholeImage()).window == DEFAULT_WINDOW
    slide = SlidingWindow(256, overlap=0.5, blend="gaussian")
    assert streaming_mode(slide) is slide
    tta = streaming_mode(MultiScaleFlip(slide, scales=(1.0, 0.5), hflip=True))
    assert tta.window == 256 and tta.blend == "gaussian" and isinstance(tta.window_mode, MultiScaleFlip)
    assert isinstance(tta.window_mode.base, WholeImage) and tta.window_mode.hflip


def test_tta_per_window_with_scale_one_and_no_flip_equals_plain_streaming(net, tmp_path):
    src = write_geotiff(tmp_path / "s.tif", random_pixels(3, 60, 60, seed=3))
    plain = stream(net, make_spec(), src, tmp_path / "plain.tif", mode=SlidingWindow(32),
                           probs="float16")
    tta = stream(net, make_spec(), src, tmp_path / "tta.tif", mode=MultiScaleFlip(SlidingWindow(32)),
                         probs="float16")
    with rasterio.open(plain.probs) as a, rasterio.open(tta.probs) as b:
        assert np.array_equal(a.read(), b.read(), equal_nan=True)


# ---- predict / eval wiring ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    spec = make_spec()
    directory = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    save_model(spec.build(), spec, directory)
    return directory


def test_predictor_predict_raster_uses_its_mode(model_dir, tmp_path):
    pixels = random_pixels(3, 80, 100, seed=4)
    pixels[pixels == 0] = 1  # no nodata: the in-memory path does not mask it
    src = write_geotiff(tmp_path / "p.tif", pixels, nodata=None)
    mode = SlidingWindow(64, overlap=0.5, blend="gaussian")
    predictor = Predictor.from_path(model_dir, "cpu", mode)
    result = predictor.predict_raster(src, tmp_path / "out.tif", probs="float16")
    expected = predictor.predict_proba(pixels.transpose(1, 2, 0).copy())  # the same mode, in memory
    with rasterio.open(result.classes) as out, rasterio.open(result.probs) as probs:
        assert np.array_equal(out.read(1), expected.argmax(0))
        assert np.abs(probs.read() - expected).max() < 1e-3


def test_cli_predict_streams_tiffs_and_large_pngs_and_slides_the_rest(model_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_geotiff(inputs / "geo.tif", random_pixels(3, 90, 120, seed=5))
    png = random_pixels(3, 64, 80, seed=6).transpose(1, 2, 0)
    write_png(inputs / "big.png", png)
    write_png(inputs / "small.png", png[:40, :50])
    out = tmp_path / "out"
    argv = ["predict", str(model_dir), str(inputs), "-o", str(out), "--mode", "slide", "--window", "32x48",
            "--overlap", "0.5", "--blend", "gaussian", "--window-batch", "3", "--flip", "h", "--max-pixels", "3000",
            "--probs", "float16", "--confidence", "--color"]
    assert main(argv) == 0
    assert "2 streamed to GeoTIFF" in capsys.readouterr().out
    for name in ("geo", "big"):
        for suffix in ("", "_probs", "_confidence", "_color"):
            assert (out / f"{name}{suffix}.tif").is_file(), (name, suffix)
    with rasterio.open(out / "geo.tif") as geo:
        assert geo.crs.to_epsg() == 32633 and geo.nodata == 255
    assert read_mask(out / "index" / "small.png").shape == (40, 50)
    assert main(argv) == 2  # the rasters exist now
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


@pytest.mark.parametrize(("flags", "message"), [
    (["--mode", "slide", "--stride", "0"], "argument --stride: '0' is not a size"),
    (["--mode", "slide", "--overlap", "1"], "overlap"),
    (["--window", "64"], "--mode slide"),
])
def test_cli_bad_window_options_fail_before_any_work(model_dir, tmp_path, capsys, flags, message):
    try:  # a malformed size is refused by the argument parser itself (exit status 2, like any usage error)
        code = main(["predict", str(model_dir), str(tmp_path / "missing"), "-o", str(tmp_path / "o"), *flags])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_eval_with_sliding_windows_and_tta(model_dir, tmp_path, capsys):
    split = tmp_path / "val"
    rng = np.random.default_rng(7)
    for index in range(2):
        write_png(split / "images" / f"{index}.png", (rng.random((48, 64, 3)) * 255).astype(np.uint8))
        write_png(split / "masks" / f"{index}.png", rng.integers(0, 4, (48, 64)).astype(np.uint8))
    assert main(["eval", str(model_dir), str(split), "-o", str(tmp_path / "eval"), "--mode", "slide",
                 "--window", "32", "--stride", "16", "--scales", "1.0", "0.5", "--flip", "hv"]) == 0
    assert "miou" in (tmp_path / "eval" / "metrics.csv").read_text()


# ---- ensembles, extra planes and fixed-size models stream too ---------------------------------------------------
def no_nodata(bands: int, height: int, width: int, seed: int) -> np.ndarray:
    pixels = random_pixels(bands, height, width, seed)
    pixels[pixels == 0] = 1  # the in-memory path does not mask nodata
    return pixels


@pytest.mark.parametrize("method", ["mean", "weighted", "vote", "floor_mean"])
def test_streamed_ensemble_equals_the_in_memory_ensemble(tmp_path, method):
    pixels = no_nodata(3, 70, 90, seed=8)
    src = write_geotiff(tmp_path / "e.tif", pixels, nodata=None)
    mode = SlidingWindow(32, overlap=0.5, blend="gaussian")
    members = [Predictor(ConvNet(seed=seed).eval(), make_spec(mean=[mean] * 3, std=[std] * 3), "cpu", mode)
               for seed, mean, std in ((0, 100.0, 60.0), (1, 120.0, 40.0), (2, 90.0, 70.0))]
    ensemble = Ensemble(members, [0.5, 0.3, 0.2] if method == "weighted" else None, method)
    result = ensemble.predict_raster(src, tmp_path / "out.tif", probs="float16")
    expected = ensemble.predict_proba(pixels.transpose(1, 2, 0).copy())
    alone = members[0].predict(pixels.transpose(1, 2, 0).copy())
    with rasterio.open(result.classes) as out, rasterio.open(result.probs) as probs:
        classes = out.read(1)
        assert np.array_equal(classes, ensemble.labels(expected))
        assert np.abs(probs.read() - expected).max() < 1e-3
    assert (classes != alone).mean() > 0.05  # the other members changed the answer
    assert result.stats.windows == 3 * len(SlidingWindow(32, overlap=0.5).plan(70, 90))


def test_every_ensemble_member_sees_nodata_as_the_mean(net, tmp_path):
    src = write_geotiff(tmp_path / "n.tif", random_pixels(3, 60, 70, seed=12))  # nodata corner
    mode = SlidingWindow(32, overlap=0.5)
    members = [Predictor(net, make_spec(), "cpu", mode) for _ in range(2)]
    pair = Ensemble(members).predict_raster(src, tmp_path / "pair.tif", probs="float16")
    alone = members[0].predict_raster(src, tmp_path / "alone.tif", probs="float16")
    with rasterio.open(pair.probs) as a, rasterio.open(alone.probs) as b:
        np.testing.assert_allclose(a.read(), b.read(), atol=1e-3)
    with rasterio.open(pair.classes) as out:
        assert (out.read(1)[:9, :13] == 255).all()


def test_extra_channel_planes_stream_with_the_image(tmp_path):
    from segwise.data.folder import Sample, read_sample_image

    image = no_nodata(3, 60, 80, seed=9)
    plane = (np.random.default_rng(9).random((1, 60, 80)) * 60000).astype(np.uint16)  # another pixel type
    src = write_geotiff(tmp_path / "img.tif", image, nodata=None)
    extra = write_geotiff(tmp_path / "nir.tif", plane, nodata=None)
    spec = make_spec(4, extra_channels=["nir"], mean=[0.45] * 4, std=[0.25] * 4)
    predictor = Predictor(ConvNet(in_channels=4).eval(), spec, "cpu", SlidingWindow(32, overlap=0.25))
    result = predictor.predict_raster([src, extra], tmp_path / "out.tif", probs="float16")
    expected = predictor.predict_proba(read_sample_image(Sample("img", src, None, (extra,))))  # the training reader
    with rasterio.open(result.classes) as out, rasterio.open(result.probs) as probs:
        assert np.array_equal(out.read(1), expected.argmax(0))
        assert np.abs(probs.read() - expected).max() < 1e-3
    small = write_geotiff(tmp_path / "small.tif", plane[:, :50], nodata=None)
    with pytest.raises(DataError, match=r"small\.tif: extra plane is 50x80 but the image .*img\.tif is 60x80"):
        predictor.predict_raster([src, small], tmp_path / "o1.tif")
    with pytest.raises(DataError, match=r"img\.tif: raster has 3 band\(s\) but the model takes 4 \(.*nir"):
        predictor.predict_raster(src, tmp_path / "o2.tif")
    with pytest.raises(DataError, match=r"3 \(img\.tif\) \+ 1 \(nir\.tif\) \+ 1 \(nir\.tif\) = 5 band"):
        predictor.predict_raster([src, extra, extra], tmp_path / "o3.tif")
    assert not list(tmp_path.glob("*o[123]*.tif*"))  # nothing written, not even partial files


def test_fixed_size_model_sees_each_window_resized_to_its_input(net, tmp_path):
    from segwise.inference.whole import ResizedInput

    pixels = no_nodata(3, 40, 56, seed=10)
    src = write_geotiff(tmp_path / "f.tif", pixels, nodata=None)
    fixed = stream(net, make_spec(image_size=[16, 24]), src, tmp_path / "fixed.tif", mode=SlidingWindow(64),
                   probs="float16")
    native = stream(net, make_spec(), src, tmp_path / "native.tif", mode=SlidingWindow(64), probs="float16")
    expected = in_memory(net, make_spec(), pixels, ResizedInput((16, 24)), np.ones((40, 56), bool)).numpy()
    with rasterio.open(fixed.probs) as a, rasterio.open(native.probs) as b:
        resized, full = a.read(), b.read()
    assert np.abs(resized - expected).max() < 1e-3
    assert np.abs(full - expected).max() > 0.05  # the resize is not a no-op here


def test_a_fixed_size_model_gives_the_same_labels_streamed_and_in_memory(tmp_path):
    """Trained with --image-size: a GeoTIFF (streamed) and the same pixels as a PNG (in memory) are one
    computation, the whole image resized to the model's size, so the labels agree on every pixel."""
    spec = make_spec(image_size=[32, 64])
    torch.manual_seed(0)
    save_model(spec.build(), spec, tmp_path / "model")
    pixels = no_nodata(3, 90, 130, seed=11)
    (tmp_path / "in").mkdir()
    write_geotiff(tmp_path / "in" / "scene.tif", pixels, nodata=None)
    write_png(tmp_path / "png" / "scene.png", pixels.transpose(1, 2, 0))
    assert main(["predict", str(tmp_path / "model"), str(tmp_path / "in"), "-o", str(tmp_path / "a")]) == 0
    assert main(["predict", str(tmp_path / "model"), str(tmp_path / "png"), "-o", str(tmp_path / "b")]) == 0
    streamed, in_memory = read_mask(tmp_path / "a" / "scene.tif"), read_mask(tmp_path / "b" / "index" / "scene.png")
    assert len(np.unique(in_memory)) > 1
    np.testing.assert_array_equal(streamed, in_memory)


def test_cli_predict_streams_an_ensemble_and_writes_its_rle(model_dir, tmp_path, capsys):
    from segwise.inference import read_rle_csv

    other = tmp_path / "other"
    torch.manual_seed(1)
    save_model(make_spec().build(), make_spec(), other)
    inputs = tmp_path / "in"
    inputs.mkdir()
    pixels = no_nodata(3, 90, 120, seed=11)
    write_geotiff(inputs / "geo.tif", pixels, nodata=None)
    csv = tmp_path / "submission.csv"
    assert main(["predict", str(model_dir), str(inputs), "-o", str(tmp_path / "out"), "--mode", "slide",
                 "--window", "64", "--rle", str(csv), "--rle-class", "1", "--ensemble", str(other),
                 "--ensemble-method", "vote"]) == 0
    assert "1 streamed to GeoTIFF" in capsys.readouterr().out
    with rasterio.open(tmp_path / "out" / "geo.tif") as out:
        classes = out.read(1)
    ensemble = Ensemble.from_paths([model_dir, other], "cpu", SlidingWindow(64), method="vote")
    assert np.array_equal(classes, ensemble.predict(pixels.transpose(1, 2, 0).copy()))
    [(name, rle)] = read_rle_csv(csv)
    assert name == "geo.tif" and rle == rle_encode(classes, 1) and rle
