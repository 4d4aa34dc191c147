"""Fuzz every reader of user files with hypothesis (fixed seed, bounded example counts, well under a minute): images
and masks, YAML configs and dataset.yaml, sketch files, RLE CSVs, data-set list files and .mat annotations, model
files and checkpoints. The invariant: a
valid result or a `SegwiseError` naming the problem, never any other exception."""

from __future__ import annotations

import gzip
import json
import math
import os
from io import BytesIO
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import pytest
import scipy.io
import tifffile
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segwise.config import Config, DataConfig, load_config
from segwise.data.io import read_image, read_mask, write_png
from segwise.data.layouts.cocostuff import read_stuff_mat
from segwise.data.readers import find_split
from segwise.data.sketch.formats import Sketch, read_sketches
from segwise.errors import SegwiseError
from segwise.inference.rle import coco_string_to_counts, decode_rle_csv
from segwise.models.spec import SPEC_FILE, WEIGHTS_FILE, ModelSpec, load_model, save_model

T = TypeVar("T")
SCALE = float(os.environ.get("SEGWISE_FUZZ_SCALE", "1"))
"""Multiplies every example count (e.g. 20 for a long fuzzing session); 1 keeps the suite under a minute."""
pytestmark = pytest.mark.usefixtures("one_thread")


def fuzz(examples: int) -> settings:
    """Fixed seed and a bounded number of examples, so the suite is fast and the same on every run."""
    return settings(max_examples=max(1, round(examples * SCALE)), derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def clean(read: Callable[[], T]) -> T | None:
    """The reader's result, or None when it refused the input with a SegwiseError; anything else fails the test."""
    try:
        return read()
    except SegwiseError as error:
        assert str(error).strip(), "a SegwiseError must say what is wrong"
        return None


def mutated(seed: bytes, data: st.DataObject) -> bytes:
    """`seed` truncated, with a few bytes replaced, or with a run of random bytes spliced in."""
    kind = data.draw(st.sampled_from(["truncate", "replace", "splice"]))
    if kind == "truncate":
        return seed[: data.draw(st.integers(0, len(seed)))]
    out = bytearray(seed)
    if kind == "replace":
        for position, value in data.draw(st.lists(st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)),
                                                  min_size=1, max_size=8)):
            out[position] = value
        return bytes(out)
    start = data.draw(st.integers(0, len(seed)))
    return bytes(out[:start]) + data.draw(st.binary(min_size=1, max_size=64)) + bytes(out[start:])


# ---- images and masks -------------------------------------------------------------------------------------------
def _encoded(suffix: str, array: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(suffix, array)
    assert ok
    return buffer.tobytes()


def _tiff(array: np.ndarray, **options: Any) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


RNG = np.random.default_rng(0)
IMAGE_SEEDS: dict[str, bytes] = {
    ".png": _encoded(".png", RNG.integers(0, 255, (6, 5, 3), dtype=np.uint8)),
    ".PNG": _encoded(".png", RNG.integers(0, 4000, (5, 4), dtype=np.uint16)),
    ".jpg": _encoded(".jpg", RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8)),
    ".bmp": _encoded(".bmp", RNG.integers(0, 255, (4, 6), dtype=np.uint8)),
    ".tif": _tiff(RNG.random((5, 6, 3), dtype=np.float32)),
    ".tiff": _tiff(RNG.integers(0, 9, (2, 6, 5), dtype=np.uint8)),  # two pages
    ".TIF": _tiff(RNG.integers(0, 255, (16, 16), dtype=np.uint8), tile=(16, 16), compression="zlib"),
}


def _check_image(array: np.ndarray) -> None:
    assert array.ndim == 3 and min(array.shape) > 0 and array.dtype in (np.uint8, np.uint16, np.float32)


def _check_mask(array: np.ndarray) -> None:
    assert array.ndim in (2, 3) and min(array.shape) > 0


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _read_both(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    for read, check in ((read_image, _check_image), (read_mask, _check_mask)):
        array = clean(lambda: read(path))
        if array is not None:
            check(array)


@fuzz(250)
@given(data=st.data())
def test_image_and_mask_readers_on_damaged_files(work: Path, data: st.DataObject):
    suffix = data.draw(st.sampled_from(sorted(IMAGE_SEEDS)))
    _read_both(work / f"image{suffix}", mutated(IMAGE_SEEDS[suffix], data))


@fuzz(100)
@given(suffix=st.sampled_from(sorted(IMAGE_SEEDS)), content=st.binary(max_size=300))
def test_image_and_mask_readers_on_random_bytes(work: Path, suffix: str, content: bytes):
    header = IMAGE_SEEDS[suffix][:8]  # half the files start like the real format, so the decoders go further
    _read_both(work / f"random{suffix}", header + content if content[:1] < b"\x80" else content)


# ---- YAML configs and dataset.yaml ------------------------------------------------------------------------------
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["auto", "gpu", "ce + dice", "#ff0000", "1,", ".inf"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def _section_keys(section: str) -> list[str]:
    annotation = Config.model_fields[section].annotation
    return sorted(annotation.model_fields)


SECTIONS = st.sampled_from(sorted(Config.model_fields)).flatmap(
    lambda section: st.tuples(st.just(section), st.dictionaries(
        st.one_of(st.sampled_from(_section_keys(section)), st.text(max_size=6)), VALUES, max_size=4)))
CONFIGS = st.one_of(
    st.lists(SECTIONS, max_size=4).map(dict).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    VALUES.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)


@fuzz(250)
@given(text=CONFIGS, as_bytes=st.booleans())
def test_config_reader(work: Path, text: str, as_bytes: bool):
    path = work / "config.yaml"
    path.write_bytes(text.encode("latin-1", "replace") if as_bytes else text.encode("utf-8", "surrogatepass"))
    config = clean(lambda: load_config(path))
    assert config is None or isinstance(config, Config)


DATASET_FILES = st.one_of(
    st.dictionaries(st.sampled_from(sorted(DataConfig.model_fields) + ["other"]), VALUES, max_size=4)
    .map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.text(max_size=150),
)


@fuzz(150)
@given(text=DATASET_FILES)
def test_dataset_yaml_reader(work: Path, text: str):
    from segwise.tasks.semantic.data import with_dataset_defaults

    (work / "dataset.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    data = clean(lambda: with_dataset_defaults(DataConfig(root=work)))
    assert data is None or isinstance(data, DataConfig)


# ---- sketch files -----------------------------------------------------------------------------------------------
NUMBERS = st.one_of(st.integers(-5, 300), st.floats(-1e3, 1e3), st.integers(-10**500, 10**500),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([10**400, -(10**400), 2**63]))
NUMBER_LISTS = st.lists(st.one_of(NUMBERS, st.text(max_size=2), st.none()), max_size=5)
NDJSON_RECORDS = st.fixed_dictionaries({"drawing": st.lists(st.lists(NUMBER_LISTS, max_size=4), max_size=3)},
                                       optional={"key_id": st.one_of(st.text(max_size=5), NUMBERS)})
SPG_SKETCHES = st.lists(st.lists(st.one_of(st.lists(NUMBERS, min_size=4, max_size=4), NUMBER_LISTS), max_size=6),
                        max_size=3)
CREATIVE_RECORDS = st.fixed_dictionaries({"output": st.fixed_dictionaries({
    "all_strokes": st.lists(st.lists(st.lists(st.lists(NUMBERS, min_size=4, max_size=4), max_size=3), max_size=2),
                            max_size=4),
    "partsUsed": st.lists(st.sampled_from(["beak", "body", "none", "wings", "arms", "xyz", 7]), max_size=3)})})
JSON_ANY = st.recursive(st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=6)),
                        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                st.dictionaries(st.sampled_from(["drawing", "train_data", "output",
                                                                                 "all_strokes", "key_id", "x"]),
                                                                inner, max_size=3)), max_leaves=15)


def _json(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


SKETCH_FILES = st.one_of(
    st.lists(st.one_of(NDJSON_RECORDS, CREATIVE_RECORDS, JSON_ANY).map(_json), min_size=1, max_size=4)
    .map("\n".join).map(lambda text: ("cat.ndjson", text)),
    SPG_SKETCHES.map(lambda sketches: ("cat.json", _json({"train_data": sketches}))),
    JSON_ANY.map(lambda value: ("cat.json", _json(value))),
    st.integers(1, 6000).map(lambda depth: ("deep.ndjson", '{"drawing": ' + "[" * depth + "]" * depth + "}")),
    st.text(max_size=100).map(lambda text: ("cat.ndjson", text)),
)


@fuzz(300)
@given(file=SKETCH_FILES, on_error=st.sampled_from(["skip", "raise"]), compress=st.booleans())
def test_sketch_readers(work: Path, file: tuple[str, str], on_error: str, compress: bool):
    name, text = file
    raw = text.encode("utf-8", "surrogatepass")
    path = work / (name + ".gz" if compress else name)
    path.write_bytes(gzip.compress(raw, mtime=0)[: len(raw) + 10] if compress else raw)  # .gz may be cut short
    sketches = clean(lambda: read_sketches(path, on_error=on_error))  # skipped records are reported on stderr
    for sketch in sketches or []:
        assert isinstance(sketch, Sketch) and sketch.num_strokes == len(sketch.labels) > 0
        assert all(np.isfinite(stroke).all() for stroke in sketch.strokes)


# ---- RLE CSVs ---------------------------------------------------------------------------------------------------
RLE_TEXT = st.one_of(
    st.text(st.sampled_from("0123456789 \t\n-.a,\r\x00"), max_size=120),
    st.lists(st.tuples(st.text(max_size=12), st.lists(st.integers(-3, 40), max_size=8)), max_size=5)
    .map(lambda rows: "".join(f"{name}\t{' '.join(map(str, runs))}\n" for name, runs in rows)),
    st.text(max_size=120),
)


@fuzz(250)
@given(text=RLE_TEXT, shape=st.tuples(st.integers(1, 7), st.integers(1, 7)))
def test_rle_csv_decoder(work: Path, text: str, shape: tuple[int, int]):
    path = work / "masks.csv"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    written = clean(lambda: decode_rle_csv(path, shape, work / "decoded"))
    for png in written or []:
        assert read_mask(png).shape == shape


@fuzz(150)
@given(text=st.one_of(st.text(max_size=40), st.text(st.sampled_from("0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                                   "[\\]^_`abcdefghijklmno"), max_size=40)))
def test_coco_counts_decoder(text: str):
    counts = clean(lambda: coco_string_to_counts(text))
    assert counts is None or counts.ndim == 1


# ---- data-set list files and COCO-Stuff .mat annotations (segwise.data.layouts) --------------------------------
LIST_LINES = st.lists(st.one_of(
    st.lists(st.sampled_from(["a.png", "m.png", "/SegNet/CamVid/a.png", "../a.png", "missing.png", "", ",", " ",
                              "a.png,m.png", "\t", "nul\x00.png", "é.png"]), max_size=4).map(" ".join),
    st.text(max_size=40)), max_size=6).map("\n".join)


@pytest.fixture(scope="module")
def list_root(work: Path) -> Path:
    """A folder with one image and one mask, for list files naming them or not."""
    root = work / "lists"
    write_png(root / "a.png", np.zeros((4, 4, 3), np.uint8))
    write_png(root / "m.png", np.zeros((4, 4), np.uint8))
    for folder in ("train", "trainannot"):  # a CamVid split, so that its reader reads the list
        (root / folder).mkdir()
    return root


@fuzz(120)
@given(text=LIST_LINES, layout=st.sampled_from(["list", "meter", "camvid"]), masks=st.booleans())
def test_list_file_readers(list_root: Path, text: str, layout: str, masks: bool):
    (list_root / "train.txt").write_text(text, encoding="utf-8", errors="surrogatepass")
    samples = clean(lambda: find_split(layout, list_root / "train", require_masks=masks))
    assert samples is None or all(s.image.is_file() for s in samples)


def _mat_file(labels: np.ndarray) -> bytes:
    buffer = BytesIO()
    scipy.io.savemat(buffer, {"S": labels})
    return buffer.getvalue()


MAT_SEED = _mat_file(RNG.integers(0, 183, (5, 4)).astype(np.uint16))


@fuzz(120)
@given(data=st.data())
def test_cocostuff_mat_reader(work: Path, data: st.DataObject):
    path = work / "annotation.mat"
    path.write_bytes(mutated(MAT_SEED, data))
    labels = clean(lambda: read_stuff_mat(path, (5, 4)))
    assert labels is None or (labels.ndim == 2 and labels.dtype in (np.uint8, np.uint16))


# ---- model files and checkpoints --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny U-Net run: model.yaml, model.safetensors and a Lightning-style checkpoints/last.ckpt."""
    spec = ModelSpec(name="unet", encoder="tu-test_resnet", args={"decoder_channels": [8, 8, 8, 8, 8]},
                     in_channels=3, num_classes=2, class_names=["bg", "fg"], palette=[[0, 0, 0], [255, 255, 255]],
                     mean=[1.0, 2.0, 3.0], std=[1.0, 1.0, 1.0])
    run = tmp_path_factory.mktemp("run")
    model = spec.build()
    save_model(model, spec, run)
    (run / "checkpoints").mkdir()
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 1}, run / "checkpoints" / "last.ckpt")
    return run


def _fresh_copy(run: Path, target: Path) -> Path:
    target.mkdir(exist_ok=True)
    for name in (SPEC_FILE, WEIGHTS_FILE):
        (target / name).write_bytes((run / name).read_bytes())
    (target / "checkpoints").mkdir(exist_ok=True)
    return target


def _check_loaded(loaded: tuple[torch.nn.Module, ModelSpec] | None) -> None:
    if loaded is not None:
        model, spec = loaded
        assert isinstance(model, torch.nn.Module) and isinstance(spec, ModelSpec) and spec.num_classes >= 1


SPEC_VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=5), SCALARS,
                                                                               max_size=2),
                        st.sampled_from([0, -1, 4097, 10**9, [], [[1, 2, 3]], [1.0, math.nan], "unet", None]))


@fuzz(60)
@given(data=st.data())
def test_model_yaml_reader(tiny_run: Path, work: Path, data: st.DataObject):
    run = _fresh_copy(tiny_run, work / "model_yaml")
    described = yaml.safe_load((tiny_run / SPEC_FILE).read_text())
    kind = data.draw(st.sampled_from(["field", "drop", "bytes", "text"]))
    if kind == "field":
        described[data.draw(st.sampled_from(sorted(described)))] = data.draw(SPEC_VALUES)
    elif kind == "drop":
        del described[data.draw(st.sampled_from(sorted(described)))]
    text = yaml.safe_dump(described) if kind in ("field", "drop") else data.draw(st.text(max_size=80))
    content = mutated((tiny_run / SPEC_FILE).read_bytes(), data) if kind == "bytes" else text.encode("utf-8", "replace")
    (run / SPEC_FILE).write_bytes(content)
    _check_loaded(clean(lambda: load_model(run)))


@fuzz(50)
@given(data=st.data())
def test_safetensors_reader(tiny_run: Path, work: Path, data: st.DataObject):
    run = _fresh_copy(tiny_run, work / "weights")
    (run / WEIGHTS_FILE).write_bytes(mutated((tiny_run / WEIGHTS_FILE).read_bytes(), data))
    _check_loaded(clean(lambda: load_model(run)))


@fuzz(50)
@given(data=st.data())
def test_checkpoint_reader(tiny_run: Path, work: Path, data: st.DataObject):
    run = _fresh_copy(tiny_run, work / "ckpt")
    seed = (tiny_run / "checkpoints" / "last.ckpt").read_bytes()
    random = data.draw(st.booleans())
    content = data.draw(st.binary(max_size=200)) if random and data.draw(st.booleans()) else mutated(seed, data)
    (run / "checkpoints" / "last.ckpt").write_bytes(content)
    _check_loaded(clean(lambda: load_model(run / "checkpoints" / "last.ckpt")))


@fuzz(40)
@given(state=st.dictionaries(st.one_of(st.text(max_size=12), st.sampled_from(["model.decoder.x", "model."])),
                             st.one_of(st.just(torch.zeros(2)), st.integers(), st.text(max_size=3), st.none()),
                             max_size=4),
       wrapper=st.sampled_from(["state_dict", "list", "none"]))
def test_checkpoint_reader_on_unexpected_contents(tiny_run: Path, work: Path, state: dict, wrapper: str):
    run = _fresh_copy(tiny_run, work / "ckpt_contents")
    content = {"state_dict": state} if wrapper == "state_dict" else [state] if wrapper == "list" else state
    torch.save(content, run / "checkpoints" / "last.ckpt")
    _check_loaded(clean(lambda: load_model(run / "checkpoints" / "last.ckpt")))
