"""`segwise predict` over a folder with overlapped reading, batched forwards and a writer pool: byte for byte the
outputs of one image at a time, one clear error for a bad image with nothing half-written, checked flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segwise.cli import build_parser, main
from segwise.data.io import read_image, write_png
from segwise.inference.predictor import Predictor
from tests.helpers import save_untrained_unet_run

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ("index", "color", "overlay", "probs")
SIZES = [(32, 32), (40, 48), (24, 56)]  # four images of each, interleaved so every batch waits on its size


@pytest.fixture(scope="module")
def semantic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained Unet (BatchNorm, stride 32)."""
    return save_untrained_unet_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiles")
    rng = np.random.default_rng(0)
    for index in range(12):
        height, width = SIZES[index % len(SIZES)]
        write_png(folder / f"tile_{index:02d}.png", rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return folder


def predict(run: Path, images: Path, out: Path, *flags: str, kinds: tuple[str, ...] = KINDS) -> int:
    return main(["predict", str(run), str(images), "-o", str(out), "--device", "cpu", "--save", *kinds,
                 "--rle", str(out / "submission.csv"), *flags])


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of images in each forward pass `predict` makes."""
    sizes: list[int] = []
    real = Predictor.predict_proba_batch

    def spy(self, images, source="image"):
        sizes.append(len(images))
        return real(self, images, source)

    monkeypatch.setattr(Predictor, "predict_proba_batch", spy)
    return sizes


def test_batched_and_threaded_outputs_equal_one_at_a_time_byte_for_byte(semantic_run, images, tmp_path, batch_sizes):
    assert predict(semantic_run, images, tmp_path / "one", "--batch", "1", "--workers", "0") == 0
    one = files(tmp_path / "one")
    assert len(one) == 12 * 4 + 1  # index, colour, overlay and probs of each image, and the RLE CSV
    labels = [read_image(tmp_path / "one" / "index" / f"tile_{i:02d}.png") for i in range(12)]
    assert len({int(v) for mask in labels for v in np.unique(mask)}) > 1  # not a constant prediction
    batch_sizes.clear()
    assert predict(semantic_run, images, tmp_path / "labels", "--batch", "4", "--workers", "2", kinds=KINDS[:3]) == 0
    assert sorted(batch_sizes) == [4, 4, 4]  # each size's four images in one forward
    batch_sizes.clear()
    assert predict(semantic_run, images, tmp_path / "probs", "--batch", "4", "--workers", "2") == 0
    assert batch_sizes == [1] * 12  # saved probabilities: one image per forward, so the .npy files match too
    for name in ("labels", "probs"):
        other = files(tmp_path / name)
        assert other.keys() == {k for k in one if name == "probs" or not k.startswith("probs/")}
        assert [k for k in other if one[k] != other[k]] == []


def test_a_corrupt_image_stops_with_its_name_and_leaves_nothing_half_written(semantic_run, images, tmp_path, capsys):
    folder = tmp_path / "tiles"
    folder.mkdir()
    for path in images.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    whole = (folder / "tile_05.png").read_bytes()
    (folder / "tile_05.png").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    assert predict(semantic_run, folder, out, "--batch", "4", "--workers", "2") == 2
    error = capsys.readouterr().err
    assert "tile_05.png" in error and "truncated" in error and "Traceback" not in error
    written = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in written if p.name.startswith(".")]  # no temporary file left behind
    assert not [p for p in written if "tile_05" in p.name]
    for path in written:
        if path.suffix == ".png":
            assert read_image(path).shape[:2] in SIZES  # every file there is whole
        else:
            assert path.suffix == ".npy" and np.load(path).shape[0] == 4


@pytest.mark.parametrize("flag, value, message", [
    ("--batch", "0", "at least 1"), ("--batch", "two", "at least 1"), ("--workers", "-1", "at least 0"),
    ("--workers", "1.5", "at least 0"),
])
def test_batch_and_workers_flags_are_checked(flag, value, message, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["predict", "m", "i", "-o", "o", flag, value])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_batch_and_workers_defaults():
    args = build_parser().parse_args(["predict", "m", "i", "-o", "o"])
    assert (args.batch, args.workers) == (8, None)
    args = build_parser().parse_args(["predict", "m", "i", "-o", "o", "--batch", "2", "--workers", "0"])
    assert (args.batch, args.workers) == (2, 0)
