"""`segwise predict --devices 2` (issue 17, "Many devices and machines"): two CPU processes over gloo, started by
Lightning's launcher as a user's command starts them, write byte for byte what one process writes, for a folder
(split by files) and for one GeoTIFF (split by bands of window rows, merged, or shown through a VRT)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from segwise.cli import main
from segwise.data.io import write_png
from tests.helpers import save_untrained_unet_run, write_geotiff

SEGWISE = [str(Path(sys.executable).with_name("segwise"))]  # the installed command, as a user runs it
# sliding windows of 32 rows every 24 over 200 rows: 8 window rows, so each process blends rows from its neighbour's
# windows at the band border; 5 windows per forward, so batches straddle window rows
RASTER_FLAGS = ["--mode", "slide", "--window", "32x48", "--stride", "24x40", "--blend", "gaussian",
                "--window-batch", "5", "--probs", "float16", "--confidence", "--color"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained_unet_run(tmp_path_factory.mktemp("run"), seed=0)


def segwise(*argv: str) -> subprocess.CompletedProcess:
    """The `segwise` command in a fresh process, one torch thread per process (two of them on a 2-core machine)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT=str(29500 + os.getpid() % 1000))
    return subprocess.run([*SEGWISE, *argv], capture_output=True, text=True, env=env, timeout=300)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow  # three segwise processes start (torch, Lightning, gloo): about 25 s on 2 busy cores
def test_a_folder_split_over_two_processes_equals_one_process(run, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(7):  # an odd count: the processes get 4 and 3
        write_png(images / f"tile_{index}.png", rng.integers(0, 256, (32 + 8 * (index % 2), 48, 3), dtype=np.uint8))
    common = ["--device", "cpu", "--save", "index", "color", "overlay", "probs", "--batch", "2"]
    one = segwise("predict", str(run), str(images), "-o", str(tmp_path / "one"), *common,
                  "--rle", str(tmp_path / "one" / "submission.csv"))
    assert one.returncode == 0, one.stderr
    two = segwise("predict", str(run), str(images), "-o", str(tmp_path / "two"), *common,
                  "--rle", str(tmp_path / "two" / "submission.csv"), "--devices", "2")
    assert two.returncode == 0, two.stderr
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert len(files(tmp_path / "one")) == 7 * 4 + 1
    assert two.stdout.count("predicted 7 image(s)") == 1, two.stdout  # one summary, from rank 0


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pixels = (np.random.default_rng(1).random((3, 200, 120)) * 250 + 5).astype(np.uint8)
    pixels[:, 90:110, :30] = 0  # nodata across the band border
    folder = tmp_path_factory.mktemp("scene")
    return write_geotiff(folder / "scene.tif", pixels)


@pytest.fixture(scope="module")
def one_process(run, scene, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one")
    result = segwise("predict", str(run), str(scene), "-o", str(out), "--device", "cpu", *RASTER_FLAGS,
                     "--rle", str(out / "submission.csv"))
    assert result.returncode == 0, result.stderr
    return out


def test_a_raster_split_into_bands_over_two_processes_merges_into_one_process_s_files(run, scene, one_process,
                                                                                     tmp_path):
    out = tmp_path / "two"
    result = segwise("predict", str(run), str(scene), "-o", str(out), "--device", "cpu", *RASTER_FLAGS,
                     "--rle", str(out / "submission.csv"), "--devices", "2")
    assert result.returncode == 0, result.stderr
    assert files(out) == files(one_process)  # the parts are gone, the merged files are byte for byte the same
    with rasterio.open(out / "scene.tif") as merged, rasterio.open(scene) as source:
        assert (merged.crs, merged.transform, merged.nodata) == (source.crs, source.transform, 255)
        assert (merged.read(1)[95:105, :30] == 255).all()


def test_vrt_over_the_parts_reads_back_one_process_s_labels(run, scene, one_process, tmp_path):
    out = tmp_path / "vrt"
    result = segwise("predict", str(run), str(scene), "-o", str(out), "--device", "cpu", *RASTER_FLAGS,
                     "--rle", str(out / "submission.csv"), "--devices", "2", "--vrt")
    assert result.returncode == 0, result.stderr
    assert (out / "submission.csv").read_bytes() == (one_process / "submission.csv").read_bytes()  # read from the VRT
    assert {p.name for p in out.glob("*.vrt")} == {"scene.vrt", "scene_color.vrt", "scene_probs.vrt",
                                                   "scene_confidence.vrt"}
    for name in ("scene", "scene_color", "scene_probs", "scene_confidence"):
        with rasterio.open(out / f"{name}.vrt") as vrt, rasterio.open(one_process / f"{name}.tif") as tif:
            assert (vrt.crs, vrt.transform, vrt.shape) == (tif.crs, tif.transform, tif.shape)
            assert repr(vrt.nodata) == repr(tif.nodata)  # nan for float16 probabilities
            np.testing.assert_array_equal(vrt.read(), tif.read())
            np.testing.assert_array_equal(vrt.dataset_mask(), tif.dataset_mask())
    with rasterio.open(out / "scene.vrt") as vrt, rasterio.open(one_process / "scene.tif") as tif:
        assert vrt.colormap(1) == tif.colormap(1)


@pytest.mark.parametrize(("extra", "named"), [
    (["--vrt"], "--devices"),
    (["--vrt", "--devices", "2", "--device", "cuda:1"], "--device cuda"),
])
def test_bad_process_options_fail_before_any_work(run, tmp_path, capsys, extra, named):
    image = tmp_path / "a.png"
    write_png(image, np.zeros((32, 32, 3), np.uint8))
    assert main(["predict", str(run), str(image), "-o", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "out" / "index").exists()


def test_vrt_without_a_raster_input_is_refused(run, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_png(images / "a.png", np.zeros((32, 32, 3), np.uint8))
    result = segwise("predict", str(run), str(images), "-o", str(tmp_path / "out"), "--device", "cpu",
                     "--devices", "2", "--vrt")
    assert result.returncode == 2
    assert "--vrt" in result.stderr and "Traceback" not in result.stderr
