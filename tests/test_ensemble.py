"""Ensembles: mean / weighted mean of probabilities, majority vote, pytorch-segmentation's floored label mean,
member checks, and `segwise predict/eval --ensemble ... --rle` end to end on tiny real run directories."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segwise.cli import main
from segwise.data.io import read_image, read_mask, write_png
from segwise.models.spec import ModelSpec, save_model
from segwise.errors import CheckpointError, ConfigError
from segwise.inference import Ensemble, Predictor, read_rle_csv, rle_decode

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["bg", "a", "b"]
PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]


def tiny_spec(**changes) -> ModelSpec:
    base = dict(name="unet", encoder="tu-test_resnet", args={"decoder_channels": [16, 8, 8, 8, 8]}, in_channels=3,
                num_classes=3, class_names=CLASSES, palette=PALETTE, mean=[0.5] * 3, std=[0.25] * 3)
    return ModelSpec(**{**base, **changes})


def make_run(directory: Path, spec: ModelSpec, seed: int) -> Path:
    """A run directory with a tiny model whose weights are perturbed so members really differ."""
    torch.manual_seed(seed)
    model = spec.build().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    save_model(model, spec, directory)
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "a": make_run(root / "a", tiny_spec(), seed=0),
        # another decoder, a fixed input size and another normalisation: each member preprocesses itself
        "b": make_run(root / "b", tiny_spec(args={"decoder_channels": [8, 8, 8, 8, 8]}, image_size=[48, 48],
                                            mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.2]), seed=1),
        "two_classes": make_run(root / "two", tiny_spec(num_classes=2, class_names=["bg", "fg"],
                                                        palette=PALETTE[:2]), seed=2),
        "four_bands": make_run(root / "four", tiny_spec(in_channels=4, mean=[0.5] * 4, std=[0.25] * 4), seed=3),
    }


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(37, 45, 3), dtype=np.uint8)


def test_mean_and_weighted_mean_of_probabilities(runs, image):
    a, b = Predictor.from_path(runs["a"], "cpu"), Predictor.from_path(runs["b"], "cpu")
    pa, pb = a.predict_proba(image), b.predict_proba(image)
    assert not np.allclose(pa, pb, atol=1e-3)
    mean = Ensemble([a, b]).predict_proba(image)
    assert mean.shape == (3, 37, 45) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, (pa + pb) / 2, atol=1e-6)
    weighted = Ensemble([a, b], weights=[3, 1], method="weighted")
    np.testing.assert_allclose(weighted.predict_proba(image), 0.75 * pa + 0.25 * pb, atol=1e-6)
    np.testing.assert_array_equal(weighted.predict(image), (0.75 * pa + 0.25 * pb).argmax(0))


def test_from_paths_matches_members(runs, image):
    ensemble = Ensemble.from_paths([runs["a"], runs["b"]], device="cpu")
    manual = (Predictor.from_path(runs["a"], "cpu").predict_proba(image)
              + Predictor.from_path(runs["b"], "cpu").predict_proba(image)) / 2
    np.testing.assert_allclose(ensemble.predict_proba(image), manual, atol=1e-6)
    assert ensemble.spec.class_names == CLASSES and ensemble.names == [str(runs["a"]), str(runs["b"])]


@pytest.mark.parametrize(("method", "weights"), [("mean", None), ("weighted", [3, 1]), ("vote", None),
                                                 ("floor_mean", None)])
def test_a_batch_combines_each_image_as_alone(runs, method, weights):
    """One batched forward per member (folder prediction, the server's micro-batches) gives every image the labels
    it gets alone, for every combining rule."""
    ensemble = Ensemble.from_paths([runs["a"], runs["b"]], device="cpu", weights=weights, method=method)
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, size=(37, 45, 3), dtype=np.uint8) for _ in range(3)]
    batch = ensemble.predict_proba_batch(images)
    assert batch.shape == (3, 3, 37, 45)
    for image, probs in zip(images, batch):
        alone = ensemble.predict_proba(image)
        np.testing.assert_allclose(probs, alone, atol=5e-4)  # a batched convolution sums in another order
        np.testing.assert_array_equal(ensemble.labels(probs), ensemble.labels(alone))


class FixedLabels(Predictor):
    """A member that always 'predicts' the given label map (one-hot probabilities)."""

    def __init__(self, labels: np.ndarray, num_classes: int) -> None:
        self.labels_map = labels
        self.spec = tiny_spec(num_classes=num_classes, class_names=CLASSES[:num_classes] + ["c"] * (num_classes - 3))
        self.device = torch.device("cpu")

    def predict_proba_batch(self, images, source: str = "image") -> np.ndarray:
        one_hot = (np.arange(self.spec.num_classes)[:, None, None] == self.labels_map[None]).astype(np.float32)
        return np.stack([one_hot] * len(images))


def test_majority_vote_of_three_members():
    rng = np.random.default_rng(0)
    maps = [rng.integers(0, 3, size=(20, 30)) for _ in range(3)]
    ensemble = Ensemble([FixedLabels(m, 3) for m in maps], method="vote")
    counts = np.stack([sum(m == c for m in maps) for c in range(3)])
    expected = counts.argmax(0)  # argmax takes the first maximum: a three-way tie goes to the lowest class
    np.testing.assert_array_equal(ensemble.predict(np.zeros((20, 30, 3))), expected)
    majority = counts.max(0) >= 2
    np.testing.assert_array_equal(expected[majority], np.where(maps[0] == maps[1], maps[0], maps[2])[majority])
    np.testing.assert_allclose(ensemble.predict_proba(np.zeros((20, 30, 3))), counts / 3, atol=1e-6)
    tie = [FixedLabels(np.full((2, 2), c), 3) for c in (2, 1, 0)]
    assert (Ensemble(tie, method="vote").predict(np.zeros((2, 2, 3))) == 0).all()
    weighted = Ensemble(tie, weights=[1, 3, 1], method="vote")
    assert (weighted.predict(np.zeros((2, 2, 3))) == 1).all()
    weighted = Ensemble(tie, weights=[3, 1, 1], method="vote")
    assert (weighted.predict(np.zeros((2, 2, 3))) == 2).all()


def test_floor_mean_is_all_agree_for_two_classes():
    rng = np.random.default_rng(1)
    maps = [rng.integers(0, 2, size=(16, 16)) for _ in range(3)]
    ensemble = Ensemble([FixedLabels(m, 2) for m in maps], method="floor_mean")
    np.testing.assert_array_equal(ensemble.predict(np.zeros((16, 16, 3))), maps[0] & maps[1] & maps[2])
    probs = ensemble.predict_proba(np.zeros((16, 16, 3)))
    assert set(np.unique(probs)) <= {0.0, 1.0} and (probs.sum(0) == 1).all()
    several = Ensemble([FixedLabels(np.full((1, 1), c), 4) for c in (1, 2)], method="floor_mean")
    assert several.predict(np.zeros((1, 1, 3)))[0, 0] == 1  # floor((1 + 2) / 2), as pytorch-segmentation's vote.py
    thirds = Ensemble([FixedLabels(np.full((1, 1), 3), 4)] * 3, weights=[0.1, 0.2, 0.7], method="floor_mean")
    assert thirds.predict(np.zeros((1, 1, 3)))[0, 0] == 3  # rounding in the weight sum does not floor 3 to 2


def test_members_must_agree_on_classes_and_bands(runs):
    with pytest.raises(CheckpointError, match="disagree on classes") as info:
        Ensemble.from_paths([runs["a"], runs["two_classes"]], device="cpu")
    assert str(runs["a"]) in str(info.value) and str(runs["two_classes"]) in str(info.value)
    with pytest.raises(CheckpointError, match="different inputs"):
        Ensemble.from_paths([runs["a"], runs["four_bands"]], device="cpu")


@pytest.mark.parametrize(("weights", "method", "message"), [
    (None, "weighted", "needs one weight per model"),
    ([1, 2], "mean", "use method 'weighted'"),
    ([1, 2, 3], "weighted", "3 ensemble weight"),
    ([1, -1], "weighted", "non-negative"),
    ([0, 0], "vote", "positive sum"),
    (None, "median", "not one of"),
])
def test_weight_and_method_errors(weights, method, message):
    members = [FixedLabels(np.zeros((2, 2), int), 3)] * 2
    with pytest.raises(ConfigError, match=message):
        Ensemble(members, weights=weights, method=method)


# ---- CLI ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled split of three odd-sized RGB images with 3-class masks."""
    root = tmp_path_factory.mktemp("split")
    rng = np.random.default_rng(2)
    for i in range(3):
        write_png(root / "images" / f"tile_{i}.png", rng.integers(0, 256, size=(37, 45, 3), dtype=np.uint8))
        write_png(root / "masks" / f"tile_{i}.png", rng.integers(0, 3, size=(37, 45), dtype=np.uint8))
    return root


def test_cli_predict_ensemble_writes_rle(runs, split, tmp_path, capsys):
    jpg = tmp_path / "jpg"  # competition test sets are JPEGs; the CSV names them by file name with extension
    jpg.mkdir()
    for i in range(3):
        cv2.imwrite(str(jpg / f"tile_{i}.jpg"), read_image(split / "images" / f"tile_{i}.png")[..., ::-1])
    out, csv = tmp_path / "pred", tmp_path / "submission.csv"
    argv = ["predict", str(runs["a"]), str(jpg), "-o", str(out), "--save", "index", "probs",
            "--device", "cpu", "--rle", str(csv), "--ensemble", str(runs["b"]), "--ensemble-method", "vote"]
    assert main(argv) == 0
    assert f"run-length encoded masks written to {csv}" in capsys.readouterr().out
    rows = read_rle_csv(csv, (37, 45))
    assert [name for name, _ in rows] == ["tile_0.jpg", "tile_1.jpg", "tile_2.jpg"]
    a, b = Predictor.from_path(runs["a"], "cpu"), Predictor.from_path(runs["b"], "cpu")
    vote = Ensemble([a, b], method="vote")
    for name, rle in rows:
        labels = read_mask(out / "index" / f"{Path(name).stem}.png")
        np.testing.assert_array_equal(rle_decode(rle, labels.shape), (labels != 0).astype(np.uint8))
        np.testing.assert_array_equal(labels, vote.predict(read_image(jpg / name)))
        shares = np.load(out / "probs" / f"{Path(name).stem}.npy")
        assert set(np.unique(shares.astype(np.float32))) <= {0.0, 0.5, 1.0}  # vote shares of two members
    batched = tmp_path / "batched"  # without saved probabilities the three images share one forward per member
    assert main([*argv[:4], str(batched), "--save", "index", "--device", "cpu", "--batch", "3", "--ensemble",
                 str(runs["b"]), "--ensemble-method", "vote"]) == 0
    for i in range(3):
        np.testing.assert_array_equal(read_mask(batched / "index" / f"tile_{i}.png"),
                                      read_mask(out / "index" / f"tile_{i}.png"))
    assert main(["rle", "decode", str(csv), "--shape", "37x45", "-o", str(tmp_path / "decoded"), "--value", "1"]) == 0
    for i in range(3):
        labels = read_mask(out / "index" / f"tile_{i}.png")
        np.testing.assert_array_equal(read_mask(tmp_path / "decoded" / f"tile_{i}.png"), labels != 0)

    class_csv = tmp_path / "class2.csv"
    assert main(["predict", str(runs["a"]), str(split / "images"), "-o", str(tmp_path / "p2"), "--save",
                 "--device", "cpu", "--rle", str(class_csv), "--rle-class", "2"]) == 0
    for name, rle in read_rle_csv(class_csv):
        labels = a.predict(read_image(split / "images" / name))
        np.testing.assert_array_equal(rle_decode(rle, labels.shape), (labels == 2).astype(np.uint8))
    assert not (tmp_path / "p2" / "index").exists()  # `--save` with no kinds: only the CSV


def test_cli_predict_and_eval_errors(runs, split, tmp_path, capsys):
    base = ["predict", str(runs["a"]), str(split / "images"), "-o", str(tmp_path / "x"), "--device", "cpu"]
    assert main([*base, "--rle", str(tmp_path / "s.csv"), "--rle-class", "3"]) == 2
    assert "--rle-class 3 is not a class of this model (0..2)" in capsys.readouterr().err
    assert main([*base, "--ensemble-method", "vote"]) == 2
    assert "need further models" in capsys.readouterr().err
    assert main([*base, "--ensemble", str(runs["two_classes"])]) == 2
    err = capsys.readouterr().err
    assert "disagree on classes" in err and str(runs["two_classes"]) in err
    assert main([*base, "--ensemble", str(runs["b"]), "--ensemble-weights", "1"]) == 2
    assert "1 ensemble weight(s) for 2 models" in capsys.readouterr().err


def test_cli_eval_weighted_ensemble(runs, split, tmp_path):
    """Ground truth = the weighted ensemble's own labels, so only the ensemble scores 100 % pixel accuracy."""
    a, b = Predictor.from_path(runs["a"], "cpu"), Predictor.from_path(runs["b"], "cpu")
    ensemble = Ensemble([a, b], weights=[1, 2], method="weighted")
    data = tmp_path / "data"
    differs = False
    for i in range(3):
        image = read_image(split / "images" / f"tile_{i}.png")
        write_png(data / "images" / f"tile_{i}.png", image)
        write_png(data / "masks" / f"tile_{i}.png", ensemble.predict(image).astype(np.uint8))
        differs |= bool((a.predict(image) != ensemble.predict(image)).any())
    assert differs
    out = tmp_path / "eval"
    argv = ["eval", str(runs["a"]), str(data), "-o", str(out), "--metrics-only", "--device", "cpu",
            "--ensemble", str(runs["b"]), "--ensemble-weights", "1,2"]
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["pixel_accuracy"] == 1.0
