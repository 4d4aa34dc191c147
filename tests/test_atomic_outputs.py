"""Nothing half-written: every output file goes through a temporary file + fsync + rename, a killed or failed write
leaves nothing under the final name, a full disk is one clear error, and stale temporary files are swept."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

import segwise.io_utils as io_utils
from segwise.cli import main
from segwise.data.io import read_image, write_npy, write_png, write_tiff
from segwise.data.synthetic import make_synthetic_dataset
from segwise.errors import SegwiseError
from segwise.io_utils import atomic_write_bytes, ensure_writable_dir, remove_stale_temps, temp_path
from segwise.models.spec import ModelSpec, save_model
from tests.helpers import save_untrained_trimap_run, save_untrained_unet_run

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = Path(__file__).resolve().parents[1] / "src"


def temps(folder: Path) -> list[Path]:
    """Every temporary file segwise's writers make (today's names and earlier versions')."""
    return [p for p in folder.rglob(".*") if p.name.endswith((".tmp", ".partial"))]


def output_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def renames(monkeypatch: pytest.MonkeyPatch) -> dict[Path, Path]:
    """Record every `os.replace` (final name → temporary name) while still doing it."""
    done: dict[Path, Path] = {}
    real = os.replace

    def record(src, dst, **kwargs) -> None:
        real(src, dst, **kwargs)
        done[Path(dst)] = Path(src)

    monkeypatch.setattr(os, "replace", record)
    return done


def assert_all_atomic(out: Path, renames: dict[Path, Path], expected: int) -> None:
    """Each file under `out` came into place by a rename from a segwise temporary name, and none is left over."""
    files = output_files(out)
    assert len(files) >= expected
    missing = sorted(str(p) for p in files - set(renames))
    assert not missing, f"written in place, not atomically: {missing}"
    assert all(io_utils._TEMP_NAME.fullmatch(renames[p].name) for p in files)
    assert all(renames[p].parent == p.parent for p in files)  # same folder: a rename, never a copy
    assert temps(out) == []


# ---- killed and failed writes ------------------------------------------------------------------------------------
_KILLED_WRITER = """
import os, sys, time
import cv2, numpy as np
import segwise.io_utils as io_utils

def stall(fd):  # the whole PNG is in the temporary file; the rename has not happened yet
    print("writing", flush=True)
    time.sleep(60)

pixels = np.random.default_rng(0).integers(0, 256, (1500, 1500, 3), dtype=np.uint8)
encoded = cv2.imencode(".png", pixels)[1].tobytes()
os.fsync = stall
io_utils.atomic_write_bytes(sys.argv[1], encoded)
"""


def _kill_while_writing(target: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout.readline().strip() == b"writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL


def test_kill_during_a_write_leaves_no_file_and_the_next_process_sweeps_the_temp(tmp_path: Path):
    target = tmp_path / "out" / "pred.png"
    _kill_while_writing(target)
    assert not target.exists()
    assert len(temps(tmp_path)) == 1  # the killed process could not clean up ...
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    sweep = "import sys; from segwise.io_utils import ensure_writable_dir; ensure_writable_dir(sys.argv[1])"
    subprocess.run([sys.executable, "-c", sweep, str(target.parent)], check=True, env=env)
    assert temps(tmp_path) == [] and not target.exists()  # ... the next segwise process did


def test_kill_during_a_rewrite_keeps_the_previous_file_whole(tmp_path: Path):
    target = tmp_path / "pred.png"
    write_png(target, np.full((8, 9), 3, np.uint8))
    _kill_while_writing(target)
    assert (read_image(target)[..., 0] == 3).all()  # the old output, complete; never a truncated new one


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_interrupted_rename_leaves_nothing_under_the_final_name(tmp_path: Path, monkeypatch, interruption):
    def interrupted(src, dst):
        raise interruption("stopped")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(interruption):
        write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_failing_encoder_writes_nothing(tmp_path: Path, monkeypatch):
    import cv2

    monkeypatch.setattr(cv2, "imencode", lambda *args: (False, None))
    with pytest.raises(SegwiseError, match="could not encode"):
        write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


# ---- full disk, no permission ----------------------------------------------------------------------------------
def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_names_the_file_and_keeps_the_previous_png(tmp_path: Path, monkeypatch):
    target = tmp_path / "index" / "a.png"
    write_png(target, np.full((4, 4), 7, np.uint8))
    monkeypatch.setattr(os, "fsync", _no_space)  # delayed allocation: a full disk often shows only at fsync
    with pytest.raises(SegwiseError) as info:
        write_png(target, np.zeros((4, 4), np.uint8))
    assert str(target) in str(info.value) and "disk is full" in str(info.value)
    assert (read_image(target) == 7).all()
    assert temps(tmp_path) == []


def test_full_disk_half_way_through_an_npy_keeps_the_previous_file(tmp_path: Path, monkeypatch):
    target = tmp_path / "probs" / "a.npy"
    write_npy(target, np.ones((2, 3, 3), np.float16))

    def half_then_full(handle, array):
        handle.write(b"\x93NUMPY" + b"\0" * 100)
        _no_space()

    monkeypatch.setattr(np, "save", half_then_full)
    with pytest.raises(SegwiseError, match="disk is full") as info:
        write_npy(target, np.zeros((2, 3, 3), np.float16))
    assert str(target) in str(info.value)
    monkeypatch.undo()
    assert (np.load(target) == 1).all() and temps(tmp_path) == []


def test_permission_error_says_not_writable(tmp_path: Path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "fsync", denied)
    with pytest.raises(SegwiseError, match="is not writable") as info:
        atomic_write_bytes(tmp_path / "x.json", b"{}")
    assert str(tmp_path / "x.json") in str(info.value) and temps(tmp_path) == []


# ---- the sweep of stale temporary files ------------------------------------------------------------------------
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweep_removes_only_segwise_temps_of_finished_processes(tmp_path: Path):
    old = time.time() - 3600
    dead, alive = _dead_pid(), os.getppid()
    names = {
        "stale": f".a.png.segwise-{dead}-abcd_123.tmp",
        "older_version": ".model.yaml.k2j4_x9q.tmp",
        "older_raster": ".scene.tif.partial",
        "running": f".b.png.segwise-{alive}-abcd_123.tmp",  # another live segwise process is writing it
        "mine": f".c.png.segwise-{os.getpid()}-abcd_123.tmp",
        "user_tmp": "notes.tmp",
        "user_hidden": ".cache.tmp",
        "output": "a.png",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (old, old))
    fresh = tmp_path / f".d.png.segwise-{dead}-abcd_123.tmp"  # newer than this process: maybe a concurrent run
    fresh.write_bytes(b"x")
    removed = {p.name for p in remove_stale_temps(tmp_path)}
    assert removed == {names["stale"], names["older_version"], names["older_raster"]}
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {names[k] for k in ("running", "mine", "user_tmp", "user_hidden", "output")} | {fresh.name}


@pytest.mark.parametrize("long_name", ["x" * 250 + ".png", "a" + "é" * 124 + ".png"])
def test_temporary_names_are_recognised_and_short_enough(tmp_path: Path, long_name: str):
    assert io_utils._TEMP_NAME.fullmatch(temp_path(tmp_path / long_name).name)
    atomic_write_bytes(tmp_path / long_name, b"data")  # a 254-byte name still gets a temporary name under 255
    assert (tmp_path / long_name).read_bytes() == b"data"


def test_npy_and_tiff_writers_round_trip(tmp_path: Path, renames):
    array = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    assert (np.load(write_npy(tmp_path / "a.npy", array)) == array).all()  # numpy adds no second suffix
    assert (tifffile.imread(write_tiff(tmp_path / "a.tif", array)) == array).all()
    assert_all_atomic(tmp_path, renames, expected=2)


# ---- every command family writes atomically ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), num_train=0, num_val=2, num_test=0, size=32)


@pytest.fixture(scope="module")
def semantic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained_unet_run(tmp_path_factory.mktemp("run"))


def test_data_synth_writes_atomically(tmp_path: Path, renames):
    assert main(["data", "synth", str(tmp_path / "synth"), "--train", "1", "--val", "1", "--test", "0",
                 "--size", "32"]) == 0
    assert_all_atomic(tmp_path / "synth", renames, expected=5)  # 2 images, 2 masks, dataset.yaml


def test_predict_writes_atomically_and_a_rerun_replaces_a_damaged_output(data, semantic_run, tmp_path, renames):
    out = tmp_path / "pred"
    argv = ["predict", str(semantic_run), str(data / "val"), "-o", str(out), "--device", "cpu",
            "--save", "index", "color", "overlay", "probs", "--rle", str(out / "submission.csv")]
    assert main(argv) == 0
    assert_all_atomic(out, renames, expected=9)  # 2 × (index, colour, overlay, probs) + the RLE CSV
    index = out / "index" / "val_0000.png"
    whole = index.read_bytes()
    index.write_bytes(whole[: len(whole) // 2])  # what a killed write of an older version left
    renames.clear()
    assert main(argv) == 0
    assert index.read_bytes() == whole and index in renames


def test_streamed_geotiff_predict_writes_atomically(semantic_run, tmp_path, renames):
    from tests.helpers import write_geotiff

    pixels = np.random.default_rng(0).integers(0, 256, (3, 40, 48), dtype=np.uint8)
    scene = write_geotiff(tmp_path / "scene.tif", pixels, nodata=None, block=16)
    out = tmp_path / "pred"
    assert main(["predict", str(semantic_run), str(scene), "-o", str(out), "--device", "cpu", "--color",
                 "--confidence"]) == 0
    assert_all_atomic(out, renames, expected=3)  # classes, colour and confidence GeoTIFFs


def test_eval_save_writes_atomically(data, semantic_run, tmp_path, renames):
    out = tmp_path / "eval"
    assert main(["eval", str(semantic_run), str(data / "val"), "-o", str(out), "--device", "cpu",
                 "--save", "index", "probs", "--plots", "1"]) == 0
    assert_all_atomic(out, renames, expected=7)  # metrics.json/.csv, 2 × (index, probs), one plot
    assert json.loads((out / "metrics.json").read_text())


def test_rle_encode_and_decode_write_atomically(data, tmp_path, renames):
    csv = tmp_path / "rle" / "masks.csv"
    assert main(["rle", "encode", str(data / "val" / "masks"), "-o", str(csv)]) == 0
    assert main(["rle", "decode", str(csv), "--shape", "32x32", "-o", str(tmp_path / "rle" / "decoded")]) == 0
    assert_all_atomic(tmp_path / "rle", renames, expected=3)


def test_data_tile_writes_atomically(data, tmp_path, renames):
    assert main(["data", "tile", str(data / "val"), str(tmp_path / "tiles"), "--size", "16", "--stride", "16"]) == 0
    assert_all_atomic(tmp_path / "tiles", renames, expected=16)  # 2 images × 4 tiles × (image, mask)


def test_trimap_predict_writes_atomically(tmp_path_factory, tmp_path, renames):
    from segwise.data.matting import make_synthetic_matting

    root = make_synthetic_matting(tmp_path_factory.mktemp("mattes"), num_train=0, num_val=1, size=32, seed=0)
    run = save_untrained_trimap_run(tmp_path_factory.mktemp("trimap_run"))
    out = tmp_path / "trimaps"
    assert main(["trimap", "predict", str(run), str(root / "val"), "-o", str(out), "--device", "cpu",
                 "--save", "overlay"]) == 0
    assert_all_atomic(out, renames, expected=2)


def test_sketch_predict_writes_atomically(tmp_path_factory, tmp_path, renames):
    from segwise.data.sketch.synthetic import make_synthetic_sketches

    sketches = make_synthetic_sketches(2, categories=["house"], seed=0)
    parts = {"house": sketches[0].part_names}
    embed = {"image_size": 32, "root": 4, "depth": 3, "hidden": 16, "code_size": 8, "line_width": 2}
    spec = ModelSpec(name="stroke_classifier", encoder=None, args={"embed": embed, "categories": parts, "hidden": 8},
                     in_channels=1, num_classes=len(parts["house"]), class_names=parts["house"],
                     palette=[[k, k, k] for k in range(len(parts["house"]))], ignore_index=-1, image_size=[32, 32])
    run = tmp_path_factory.mktemp("sketch_run")
    save_model(spec.build(), spec, run)
    source = tmp_path / "house.ndjson"
    source.write_text("\n".join(json.dumps({"key_id": f"k{i}", "drawing": [
        [s.tolist() for s in (stroke[:, 0], stroke[:, 1], np.zeros(len(stroke)))] for stroke in sketch.strokes]})
        for i, sketch in enumerate(sketches)))
    out = tmp_path / "parts"
    assert main(["sketch", "predict", str(run), str(source), "-o", str(out), "--device", "cpu"]) == 0
    assert_all_atomic(out, renames, expected=5)  # 2 × (svg, png) + labels.json


def test_ensure_writable_dir_probe_uses_the_swept_pattern(tmp_path: Path, monkeypatch):
    made = []
    real = io_utils.tempfile.mkstemp

    def record(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        made.append(name)
        return fd, name

    monkeypatch.setattr(io_utils.tempfile, "mkstemp", record)
    ensure_writable_dir(tmp_path / "out")
    assert len(made) == 1 and io_utils._TEMP_NAME.fullmatch(Path(made[0]).name)
    assert list((tmp_path / "out").iterdir()) == []
