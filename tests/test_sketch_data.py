"""Sketch readers, normalisation, rasteriser, distance field, augmentation, procedural sketches and the cache."""

from __future__ import annotations

import gzip
import json
import lzma
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import SHARED_DATASETS
from scipy import ndimage

from segwise.data.sketch.formats import (
    CREATIVE_CREATURE_PARTS,
    Sketch,
    SketchDataError,
    normalize,
    read_sketches,
    read_spg_folder,
    sketch_format,
)
from segwise.data.sketch.cache import load_prepared, prepare
from segwise.data.sketch.raster import augment_sketch, distance_field, render_strokes, render_union
from segwise.data.sketch.synthetic import SYNTHETIC_CATEGORIES, make_synthetic_sketches

SPG = SHARED_DATASETS / "spg_sketch"


def _write(path: Path, lines: list[str]) -> Path:
    text = "\n".join(lines) + "\n"
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix)
    if opener:
        with opener(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def _ndjson_lines() -> list[str]:
    good = {"i": 0, "key_id": "k0", "drawing": [[[0, 10], [0, 0], [1, 1]], [[5, 5, 5], [0, 4, 8], [0, 0, 2]]]}
    repeated = {"key_id": "k1", "drawing": [[[1, 2], [3, 4], [2, 2], [2, 2]]]}  # a 4th (repeated label) list
    return [
        json.dumps(good),
        "{not json",  # line 2
        json.dumps({"key_id": "k2", "drawing": [[[0, 1], [0], [0, 0]]]}),  # line 3: unequal lengths
        "",
        json.dumps(repeated),  # line 5
        json.dumps({"key_id": "k3", "strokes": []}),  # line 6: no drawing
        json.dumps({"key_id": "k4", "drawing": [[[0, "a"], [0, 1], [0, 0]]]}),  # line 7: not numeric
        json.dumps({"key_id": "k5", "drawing": [[[0, 1], [0, 1], [-1, -1]]]}),  # line 8: negative label
        json.dumps({"key_id": "k6", "drawing": [[[0, 1], [0, 1], [1.5, 1.5]]]}),  # line 9: fractional label
    ]


@pytest.mark.parametrize("suffix", [".ndjson", ".ndjson.gz", ".ndjson.xz"])
def test_ndjson_reader_skips_bad_records_with_line_numbers(tmp_path, suffix, capsys):
    path = _write(tmp_path / f"cat_raw{suffix}", _ndjson_lines())
    assert sketch_format(path) == "ndjson"
    sketches = read_sketches(path, part_names=["a", "b", "c"])
    messages = capsys.readouterr().err.splitlines()
    assert all(message.startswith(f"{path}:") and ": record skipped: " in message for message in messages)
    for line in (2, 3, 6, 7, 8, 9):
        assert any(f"{path}:{line}:" in message for message in messages), (line, messages)
    assert [s.key for s in sketches] == ["k0", "k1"]
    first = sketches[0]
    assert first.category == "cat" and first.part_names == ["a", "b", "c"]
    np.testing.assert_array_equal(first.labels, [1, 0])  # stroke 2 has labels 0, 0, 2: the majority wins
    np.testing.assert_array_equal(first.strokes[1], [[5, 0], [5, 4], [5, 8]])
    assert first.strokes[0].dtype == np.float32
    np.testing.assert_array_equal(sketches[1].labels, [2])


def test_ndjson_reader_raise_names_file_line_and_fix(tmp_path):
    path = _write(tmp_path / "cat.ndjson", _ndjson_lines())
    with pytest.raises(SketchDataError, match=r"cat\.ndjson:2: invalid JSON .*fix or delete this line"):
        read_sketches(path, on_error="raise")
    path = _write(tmp_path / "labels.ndjson", [json.dumps({"key_id": "a", "drawing": [[[0], [0], [3]]]})])
    with pytest.raises(SketchDataError, match=r"labels\.ndjson:1: part label 3 but only 2 part names"):
        read_sketches(path, part_names=["x", "y"], on_error="raise")


def test_default_part_names_cover_the_file(tmp_path):
    path = _write(tmp_path / "cat.ndjson", _ndjson_lines()[:1])
    (sketch,) = read_sketches(path)
    assert sketch.part_names == ["part_0", "part_1"]


def test_truncated_xz_is_a_clear_error(tmp_path):
    path = _write(tmp_path / "cat.ndjson.xz", _ndjson_lines()[:1] * 200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SketchDataError, match="truncated or corrupt|cannot read"):
        read_sketches(path)


def test_spg_json_reader_sums_offsets_and_splits_strokes(tmp_path, capsys):
    sketch = [[10, 20, 0, 1], [5, 0, 0, 1], [0, 5, 1, 1], [-20, 0, 0, 0], [3, 3, 1, 0]]
    bad = [[1, 2, 3]]
    path = tmp_path / "airplane.ndjson"
    path.write_text(json.dumps({"train_data": [sketch, bad, sketch]}, indent=1))
    assert sketch_format(path) == "spg_json"
    sketches = read_sketches(path, part_names=["front wings", "body"])
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{path}: train_data[1]: record skipped: points have shape (1, 3)")
    assert len(sketches) == 2 and sketches[0].category == "airplane"
    assert [s.key for s in sketches] == ["0", "2"]  # the index in train_data
    np.testing.assert_array_equal(sketches[0].strokes[0], [[10, 20], [15, 20], [15, 25]])
    np.testing.assert_array_equal(sketches[0].strokes[1], [[-5, 25], [-2, 28]])
    np.testing.assert_array_equal(sketches[0].labels, [1, 0])
    with pytest.raises(SketchDataError, match=r"train_data\[1\]"):
        read_sketches(path, on_error="raise")
    path.write_text(json.dumps({"train_data": 5}))
    with pytest.raises(SketchDataError, match="no 'train_data' list"):
        read_sketches(path)


def _creative(steps: list, parts: list, key: str = "a1") -> str:
    return json.dumps({"assignment_id": key, "worker_id": "w", "output": {"all_strokes": steps, "partsUsed": parts}})


def test_creative_reader_maps_steps_to_parts(tmp_path, capsys):
    seg = [[0, 0, 4, 0], [4, 0, 4, 3]]
    steps = [[seg], [[[1, 1, 2, 2]], []], [seg, seg], [[[5, 5, 6, 6]]]]
    lines = [
        _creative(steps, ["beak", "none"]),
        json.dumps({"assignment_id": "x", "output": {"prompts": []}}),  # line 2: no strokes
        _creative([[seg], [seg], [seg]], []),  # line 3: a step without a part name
        _creative([[seg], [[[0, 0, 1]]]], []),  # line 4: a segment of three numbers
    ]
    path = _write(tmp_path / "birds.txt", lines)
    assert sketch_format(path) == "creative"
    sketches = read_sketches(path)
    assert sorted(int(line.split(":")[1]) for line in capsys.readouterr().err.splitlines()) == [2, 3, 4]
    (sketch,) = sketches
    names = sketch.part_names
    assert names[0] == "initial" and "details" in names
    assert [names[i] for i in sketch.labels] == ["initial", "eye", "beak", "beak", "details"]
    np.testing.assert_array_equal(sketch.strokes[0], [[0, 0], [4, 0], [4, 3]])
    with pytest.raises(SketchDataError, match=r"birds\.txt:2: no 'output.all_strokes'"):
        read_sketches(path, on_error="raise")
    creature = _write(tmp_path / "creatures.txt", [_creative([[seg], [seg], [seg]], ["beak"]),
                                                   _creative([[seg], [seg], [seg]], ["horns"])])
    bird_like, horned = read_sketches(creature)  # one part list for the whole file
    assert bird_like.part_names == horned.part_names and "horns" in horned.part_names
    assert [bird_like.part_names[k] for k in bird_like.labels] == ["initial", "eye", "beak"]
    with pytest.raises(SketchDataError, match="no readable sketch"):
        read_sketches(creature, part_names=["initial", "eye"])
    assert "unknown part name" in capsys.readouterr().err


def test_unknown_format_and_missing_file(tmp_path):
    path = _write(tmp_path / "x.ndjson", [json.dumps({"word": "cat"})])
    with pytest.raises(SketchDataError, match="unknown sketch format"):
        read_sketches(path)
    with pytest.raises(SketchDataError, match="no such file"):
        read_sketches(tmp_path / "missing.ndjson")
    with pytest.raises(ValueError, match="on_error"):
        read_sketches(path, on_error="ignore")


@pytest.mark.skipif(not SPG.is_dir(), reason="shared SPG sketch data not present")
def test_real_spg_category_counts_and_splits():
    raw = read_sketches(SPG / "raw" / "candle_raw.ndjson.xz")
    assert len(raw) == 800
    splits = {split: read_spg_folder(SPG, "candle", split) for split in ("train", "valid", "test")}
    assert {split: len(s) for split, s in splits.items()} == {"train": 650, "valid": 50, "test": 100}
    keys = [{s.key for s in sketches} for sketches in splits.values()]
    assert set.union(*keys) == {s.key for s in raw} and sum(map(len, keys)) == 800
    expected = json.loads((SPG / "splits.json").read_text())["candle"]["test"]
    assert [s.key for s in splits["test"]] == expected
    sketch = splits["test"][0]
    assert sketch.part_names == ["main", "candlewick", "fire", "base"] and sketch.category == "candle"
    assert all(s.labels.max() < 4 and s.num_strokes >= 2 for s in raw)
    with pytest.raises(SketchDataError, match="no category"):
        read_spg_folder(SPG, "unicorn")


def test_normalize_scales_larger_side_and_centres():
    sketch = Sketch([np.array([[10, 10], [110, 10]]), np.array([[60, 30]])], [0, 1], "c", ["a", "b"])
    out = normalize(sketch, canvas=256, box=156)
    points = out.points()
    np.testing.assert_allclose(points.min(0), [50, 128 - 156 * 20 / 100 / 2], atol=1e-4)
    np.testing.assert_allclose(points.max(0), [206, 128 + 156 * 20 / 100 / 2], atol=1e-4)
    np.testing.assert_array_equal(out.labels, sketch.labels)
    dot = normalize(Sketch([np.array([[3, 4]])], [0], "c", ["a"]))
    np.testing.assert_array_equal(dot.strokes[0], [[128, 128]])


def _tiny() -> Sketch:
    return Sketch([np.array([[1, 1], [5, 1]]), np.array([[3, 5]]), np.array([[6, 2], [6, 4]])], [0, 1, 0], "t",
                  ["a", "b"])


def test_render_strokes_exact_pixels():
    images = render_strokes(_tiny(), size=8, width=1)
    assert images.shape == (3, 8, 8) and images.dtype == np.uint8
    expected = np.zeros((3, 8, 8), np.uint8)
    expected[0, 1, 1:6] = 1  # row = y: the horizontal stroke on row 1
    expected[1, 5, 3] = 1  # a one-point stroke is a dot
    expected[2, 2:5, 6] = 1
    np.testing.assert_array_equal(images, expected)
    thick = render_strokes(_tiny(), size=8, width=2)[0]
    assert thick[0:3, 1:6].all() and thick[1, 0] == 1 and thick[4:].sum() == 0
    even = Sketch([np.array([[2, 2], [6, 2]])], [0], "t", ["a"])
    half = render_strokes(even, size=4, width=1, canvas=8)[0]  # coordinates scaled by 4 / 8
    np.testing.assert_array_equal(np.argwhere(half), [[1, 1], [1, 2], [1, 3]])


def test_render_union_is_the_or_of_its_strokes():
    sketch = _tiny()
    union = render_union(sketch, [0, 2], size=8, width=1)
    np.testing.assert_array_equal(union, render_strokes(sketch, 8, 1)[[0, 2]].max(axis=0))
    np.testing.assert_array_equal(render_union(sketch, np.array([True, False, True]), size=8, width=1), union)
    assert render_union(sketch, [], size=8).sum() == 0


def test_distance_field_matches_scipy_edt():
    ink = np.zeros((7, 9), np.uint8)
    ink[1, 2] = ink[5, 7] = 1
    k = 0.01
    expected = 1.0 / (1.0 + k * np.exp(ndimage.distance_transform_edt(ink == 0)))
    field = distance_field(ink, k=k)
    assert field.dtype == np.float32
    np.testing.assert_allclose(field, expected, rtol=1e-5)
    assert field[1, 2] == pytest.approx(1 / 1.01) and field[3, 2] == pytest.approx(1 / (1 + k * np.exp(2)))
    assert field[1, 4] == pytest.approx(1 / (1 + k * np.exp(2)), rel=1e-5)  # distance 2 along the row
    stack = distance_field(np.stack([ink, np.zeros_like(ink)]), k=0.001)
    assert stack.shape == (2, 7, 9) and not stack[1].any()  # no ink: d = inf, DF = 0
    big = np.zeros((1, 800), np.uint8)
    big[0, 0] = 1
    far = distance_field(big)  # exp(799) overflows: DF 0, never NaN
    assert np.isfinite(far).all() and far[0, -1] == 0
    with pytest.raises(ValueError, match="positive"):
        distance_field(ink, k=0)


def _numbered(num_strokes: int) -> Sketch:
    """Stroke i has i + 2 points and label i % 3, so strokes and labels can be matched after augmentation."""
    rng = np.random.default_rng(num_strokes)
    strokes = [rng.uniform(60, 200, (i + 2, 2)) for i in range(num_strokes)]
    return Sketch(strokes, np.arange(num_strokes) % 3, "c", ["a", "b", "c"], "k")


def test_augment_p0_is_identity_and_p1_keeps_bookkeeping():
    sketch = _numbered(10)
    assert augment_sketch(sketch, np.random.default_rng(0), p=0.0) is sketch
    dropped_any = False
    for seed in range(20):
        out = augment_sketch(sketch, np.random.default_rng(seed), p=1.0)
        kept = [len(stroke) - 2 for stroke in out.strokes]  # original index of each kept stroke
        assert kept == sorted(kept) and len(out.labels) == len(out.strokes)
        np.testing.assert_array_equal(out.labels, sketch.labels[kept])
        dropped_any |= len(kept) < 10
        assert len(kept) >= 7  # at most 30 % dropped
        source = np.concatenate([sketch.strokes[i] for i in kept])
        target = np.concatenate(out.strokes)
        design = np.hstack([source, np.ones((len(source), 1))])
        fit, *_ = np.linalg.lstsq(design, target, rcond=None)
        np.testing.assert_allclose(design @ fit, target, atol=1e-3)  # one affine moved every stroke
        assert not np.allclose(fit[:2], np.eye(2))
    assert dropped_any
    small = _numbered(3)
    assert all(augment_sketch(small, np.random.default_rng(s), p=1.0).num_strokes == 3 for s in range(10))


def test_synthetic_sketches_are_deterministic_and_labelled():
    first = make_synthetic_sketches(6, categories=3, seed=4)
    again = make_synthetic_sketches(6, categories=3, seed=4)
    assert len(first) == 18 and [s.category for s in first[::6]] == list(SYNTHETIC_CATEGORIES)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert all(np.array_equal(x, y) for x, y in zip(a.strokes, b.strokes))
    assert make_synthetic_sketches(2, categories=["tree"], seed=4)[1].key == first[13].key
    for sketch in first:
        assert sketch.labels.max() < len(sketch.part_names) and sketch.num_strokes >= 4
    houses = [s for s in first if s.category == "house"]
    assert len({int(s.labels[0]) for s in houses}) > 1  # stroke order is shuffled
    assert any(np.bincount(s.labels).max() > 1 for s in houses)  # some parts take several strokes
    with pytest.raises(Exception, match="unknown"):
        make_synthetic_sketches(1, categories=["boat"])


def test_prepare_round_trip(tmp_path):
    sketches = make_synthetic_sketches(5, categories=2)
    path = prepare(sketches, tmp_path / "cache" / "train")
    assert path.name == "train.npz" and path.is_file() and len(list(path.parent.iterdir())) == 1
    back = load_prepared(path)
    assert len(back) == len(sketches)
    for original, loaded in zip(sketches, back):
        expected = normalize(original)
        assert (loaded.key, loaded.category, loaded.part_names) == (original.key, original.category,
                                                                    original.part_names)
        np.testing.assert_array_equal(loaded.labels, original.labels)
        assert len(loaded.strokes) == len(expected.strokes)
        for x, y in zip(loaded.strokes, expected.strokes):
            np.testing.assert_array_equal(x, y)
    raw = load_prepared(prepare(sketches[:1], tmp_path / "raw.npz", canvas=None))
    np.testing.assert_array_equal(raw[0].strokes[0], sketches[0].strokes[0])


def test_prepare_rejects_bad_input(tmp_path):
    one, two = make_synthetic_sketches(2, categories=1)
    two.part_names = ["other"] * 4
    with pytest.raises(SketchDataError, match="part names"):
        prepare([one, two], tmp_path / "x.npz")
    with pytest.raises(SketchDataError, match="nothing to prepare"):
        prepare([], tmp_path / "x.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(SketchDataError, match="not a sketch cache"):
        load_prepared(tmp_path / "other.npz")
    (tmp_path / "broken.npz").write_bytes(b"nope")
    with pytest.raises(SketchDataError, match="cannot read"):
        load_prepared(tmp_path / "broken.npz")


def test_readers_never_crash_on_garbage(tmp_path):
    path = tmp_path / "junk.ndjson"
    path.write_bytes(b'{"drawing": 5}\n[1, 2]\n{"drawing": [null, [[], [], []]]}\n')
    with pytest.raises(SketchDataError, match="no readable sketch"):
        read_sketches(path)


def _mutate(value, rng: np.random.Generator, depth: int = 0):
    """A copy of a JSON value with one random node replaced by junk (wrong type, ragged list, huge or NaN number)."""
    junk = [None, "x", {}, [], [[1, 2], [3]], 1e300, -7, 2.5, float("nan"), True, {"a": [1]}]
    if isinstance(value, list) and value and rng.random() < 0.8:
        index = int(rng.integers(len(value)))
        return [_mutate(item, rng, depth + 1) if i == index else item for i, item in enumerate(value)]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = list(value)[int(rng.integers(len(value)))]
        return {**value, key: _mutate(value[key], rng, depth + 1)}
    return junk[int(rng.integers(len(junk)))]


@pytest.mark.parametrize("fmt", ["ndjson", "creative", "spg_json"])
def test_readers_never_crash_on_mutated_records(tmp_path, fmt, capsys):
    seg = [[0, 0, 4, 0], [4, 0, 4, 3]]
    valid = {
        "ndjson": {"key_id": "k", "drawing": [[[0, 10, 12], [0, 0, 3], [1, 1, 1]], [[5, 5], [0, 4], [0, 0]]]},
        "creative": {"assignment_id": "a",
                     "output": {"all_strokes": [[seg], [seg], [seg, seg]], "partsUsed": ["beak"]}},
        "spg_json": [[10, 20, 0, 1], [5, 0, 1, 1], [-20, 0, 0, 0], [3, 3, 1, 0]],
    }[fmt]
    rng = np.random.default_rng(0)
    records = [valid] + [_mutate(valid, rng) for _ in range(150)]
    path = tmp_path / "cat.ndjson"
    if fmt == "spg_json":
        path.write_text(json.dumps({"train_data": records}))
    else:
        path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    sketches = read_sketches(path, part_names=list(CREATIVE_CREATURE_PARTS) if fmt == "creative" else None)
    skipped = [line for line in capsys.readouterr().err.splitlines() if ": record skipped: " in line]
    assert sketches and len(sketches) + len(skipped) == len(records)
    for sketch in sketches:
        assert len(sketch.strokes) == len(sketch.labels) > 0
        assert all(np.isfinite(stroke).all() and stroke.shape[1] == 2 for stroke in sketch.strokes)
        assert sketch.labels.min() >= 0 and sketch.labels.max() < len(sketch.part_names)


def test_spg_folder_reader_on_a_crafted_folder(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    (tmp_path / "part_names").mkdir()
    records = [{"key_id": f"k{i}", "drawing": [[[0, i + 1], [0, 0], [i % 2, i % 2]]]} for i in range(5)]
    _write(tmp_path / "raw" / "cup_raw.ndjson.gz", [json.dumps(r) for r in records])
    (tmp_path / "part_names" / "cup.txt").write_text("handle\nbody\n\n\n")
    splits = {"cup": {"train": ["k3", "k0", "k4"], "valid": ["k1"], "test": ["k2", "k9"]}}
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    train = read_spg_folder(tmp_path, "cup", "train")
    assert [s.key for s in train] == ["k3", "k0", "k4"] and train[0].part_names == ["handle", "body"]
    assert [s.key for s in read_spg_folder(tmp_path, ["cup"], "test")] == ["k2"]
    assert "1 sketches of split test are missing" in capsys.readouterr().err
    with pytest.raises(SketchDataError, match="k9"):
        read_spg_folder(tmp_path, "cup", "test", on_error="raise")
    with pytest.raises(SketchDataError, match="split 'dev' is unknown"):
        read_spg_folder(tmp_path, "cup", "dev")
    (tmp_path / "splits.json").write_text(json.dumps({"cup": {"train": []}, "mug": {}}))
    with pytest.raises(SketchDataError, match="lacks a key_id list for split valid"):
        read_spg_folder(tmp_path, "cup", "valid")
    with pytest.raises(SketchDataError, match="no mug_raw"):
        read_spg_folder(tmp_path, "mug", "train")
    (tmp_path / "part_names" / "cup.txt").unlink()
    with pytest.raises(SketchDataError, match="cannot read the part names"):
        read_spg_folder(tmp_path, "cup", "train")
    (tmp_path / "splits.json").write_text("{")
    with pytest.raises(SketchDataError, match="invalid JSON"):
        read_spg_folder(tmp_path)
    with pytest.raises(SketchDataError, match="splits.json: missing"):
        read_spg_folder(tmp_path / "raw")
