"""Sketch data sets read as they ship: fake-data writers for miniatures of the official SPG folder and of
CreativeSketch's raw_data, the seeded split, the prepared cache keyed by split and category, `sketch prepare`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from tests.helpers import SHARED_DATASETS

from segwise.cli import main
from segwise.data.sketch.datasets import load_sketches, read_splits
from segwise.errors import ConfigError, DataError

SPG = SHARED_DATASETS / "spg_sketch"


def _spg_sketch(index: int, group: int) -> list[list[int]]:
    """Two strokes in stroke-3 offsets ``[dx, dy, pen, group]``; the first offset is the sketch's index, so a
    sketch can be recognised after any reordering."""
    return [[index, 0, 0, group], [5, 5, 1, group], [-3, 9, 0, 0], [4, 0, 1, 0]]


def write_spg_file(path: Path, count: int, groups: int = 2) -> Path:
    """One SPG file as SketchX-PRIS ships it: a single JSON object whose ``train_data`` lists ``count`` sketches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"train_data": [_spg_sketch(i, i % groups) for i in range(count)]}))
    return path


def test_second_file_prepared_into_a_folder_keeps_the_first(tmp_path: Path):
    """One file per split, prepared one after the other into the same folder: the second used to replace the first's
    cache (both became OUT/train.npz); the cache is keyed by split and category now."""
    out = tmp_path / "prepared"
    for name in ("airplane", "chair"):
        source = write_spg_file(tmp_path / f"{name}.ndjson", 6)
        assert main(["sketch", "prepare", str(source), "-o", str(out), "--splits", "train"]) == 0
    sketches = load_sketches(out, "train")
    assert sorted({s.category for s in sketches}) == ["airplane", "chair"] and len(sketches) == 12


# ---- fake-data writers --------------------------------------------------------------------------------------------
def write_spg_dataset(root: Path, counts: dict[str, int], parts: dict[str, list[str]]) -> Path:
    """A miniature of SketchX-PRIS-Dataset: ``Perceptual Grouping/<category>.ndjson`` (with its ReadMe) and
    ``Group ID/<category>.txt`` for the categories in ``parts``; returns the data set's root."""
    folder = root / "SketchX-PRIS-Dataset"
    for category, count in counts.items():
        write_spg_file(folder / "Perceptual Grouping" / f"{category}.ndjson", count)
    (folder / "Perceptual Grouping" / "ReadMe").write_text("This dataset contains 25 categories\n")
    for category, names in parts.items():
        (folder / "Group ID").mkdir(exist_ok=True)
        (folder / "Group ID" / f"{category}.txt").write_text("".join(f"{name}\n" for name in names))
    return folder


def write_creative_raw_data(root: Path, name: str, per_file: int, rejected: list[str]) -> Path:
    """A miniature of CreativeSketch's raw_data for one set (``creative_birds`` or ``creative_creatures``): every
    doodle file of the set with ``per_file`` HITs each, in DoodlerGAN's format; record p of the concatenation has
    assignment ``a<p>`` and worker ``w<p % 5>``. Writes the rejected-worker list too; returns the raw_data folder."""
    from segwise.data.sketch.layouts import CREATIVE_SETS

    spec = CREATIVE_SETS[name]
    folder = root / "raw_data"
    folder.mkdir(parents=True, exist_ok=True)
    segment = [[0, 0, 4, 0], [4, 0, 4, 3]]
    position = 0
    for file_name in spec.files:
        lines = []
        for _ in range(per_file):
            output = {"all_strokes": [[segment], [segment], [segment, segment]], "partsUsed": ["wings"],
                      "prompts": [], "comment": "", "description": ""}
            lines.append(json.dumps({"assignment_id": f"a{position}", "hit_id": f"h{position}",
                                     "worker_id": f"w{position % 5}", "output": output, "submit_time": "t"}))
            position += 1
        (folder / file_name).write_text("\n".join(lines) + "\n")
    (folder / spec.rejects).write_text("".join(f"{worker}\n" for worker in rejected))
    return folder


def _ids(sketches) -> list[tuple[str, str]]:
    return [(s.category, s.key) for s in sketches]


def _assert_partition(splits: dict, total: dict[str, int]) -> None:
    """The splits share no sketch and together hold every sketch of every category."""
    ids = [set(_ids(sketches)) for sketches in splits.values()]
    assert sum(map(len, ids)) == sum(len(sketches) for sketches in splits.values())  # no duplicate in a split
    assert all(not (a & b) for i, a in enumerate(ids) for b in ids[i + 1:])
    assert set.union(*ids) == {(category, str(k)) for category, count in total.items() for k in range(count)}


def test_spg_folder_is_one_data_set_with_a_seeded_split(tmp_path: Path):
    counts = {"airplane": 40, "chair": 30}
    root = write_spg_dataset(tmp_path, counts, {"airplane": ["front wings", "body"]})
    splits = read_splits(root)
    assert list(splits) == ["train", "valid", "test"]
    _assert_partition(splits, counts)
    sizes = {split: Counter(s.category for s in sketches) for split, sketches in splits.items()}
    assert sizes == {"train": {"airplane": 32, "chair": 24}, "valid": {"airplane": 4, "chair": 3},
                     "test": {"airplane": 4, "chair": 3}}  # 80/10/10 of each category
    first = splits["train"][0]
    assert first.category == "airplane" and first.part_names == ["front wings", "body"]  # from Group ID/
    assert splits["train"][-1].part_names == ["part_0", "part_1"]  # chair has no Group ID file
    assert [int(s.key) for s in splits["test"][:4]] == sorted(int(s.key) for s in splits["test"][:4])  # file order
    again = read_splits(root / "Perceptual Grouping", ["test", "train"])  # the files' own folder: the same split
    assert _ids(again["test"]) == _ids(splits["test"]) and _ids(again["train"]) == _ids(splits["train"])
    alone = load_sketches(root, "valid", ["chair"])  # a category's split does not depend on the others read
    assert _ids(alone) == [i for i in _ids(splits["valid"]) if i[0] == "chair"]
    other = read_splits(root, ["test"], seed=1)["test"]
    assert set(_ids(other)) != set(_ids(splits["test"]))
    custom = read_splits(root, scheme="50/25/25")
    assert Counter(s.category for s in custom["valid"]) == {"airplane": 10, "chair": 8}  # 7.5 rounds half up


def test_official_split_is_700_train_and_the_rest_test(tmp_path: Path):
    root = write_spg_dataset(tmp_path, {"airplane": 803, "chair": 30}, {})
    splits = read_splits(root, categories=["airplane"], scheme="official", seed=5)
    assert list(splits) == ["train", "test"] and [len(s) for s in splits.values()] == [700, 103]
    _assert_partition(splits, {"airplane": 803})
    with pytest.raises(DataError, match="no valid split: .* has train, test; .*data.val_split"):
        load_sketches(root, "valid", scheme="official")
    with pytest.raises(DataError, match="'chair' has 30 sketches, but the official split trains on 700"):
        read_splits(root, scheme="official")


@pytest.mark.parametrize("scheme", ["80/10", "80/10/5", "0/50/50", "official-ish", "a/b/c"])
def test_bad_split_schemes_are_refused_before_reading(tmp_path: Path, scheme: str):
    with pytest.raises(ConfigError, match=f"split scheme '{scheme}'.*sum to 100.*e.g. 80/10/10"):
        read_splits(tmp_path / "never read", scheme=scheme)


def test_sketch_prepare_writes_three_disjoint_splits_from_one_seeded_split(tmp_path: Path, capsys):
    counts = {"airplane": 20, "chair": 10}
    root = write_spg_dataset(tmp_path, counts, {"chair": ["seat", "legs"]})
    for out in ("a", "b"):
        assert main(["sketch", "prepare", str(root), "-o", str(tmp_path / out), "--seed", "3"]) == 0
    assert "prepared train, valid, test into" in capsys.readouterr().out
    files = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*.npz"))
    assert files == [f"{split}/{category}.npz" for split in ("test", "train", "valid") for category in counts]
    prepared = {split: load_sketches(tmp_path / "a", split) for split in ("train", "valid", "test")}
    _assert_partition(prepared, counts)
    direct = read_splits(root, seed=3)  # the same split as reading the folder directly with that seed
    for split, sketches in prepared.items():
        assert _ids(sketches) == _ids(direct[split]) == _ids(load_sketches(tmp_path / "b", split))
    assert load_sketches(tmp_path / "a", "train", ["chair"])[0].part_names == ["seat", "legs"]
    assert main(["sketch", "prepare", str(root), "-o", str(tmp_path / "c"), "--split-scheme", "official"]) == 2
    assert "official split trains on 700" in capsys.readouterr().err


def test_creative_sketch_drops_rejected_workers_and_tests_on_the_last_500(tmp_path: Path):
    folder = write_creative_raw_data(tmp_path, "creative_birds", per_file=50, rejected=["w3"])  # 550 records
    write_creative_raw_data(tmp_path, "creative_creatures", per_file=46, rejected=["w0", "w1"])  # 506 records
    splits = read_splits(tmp_path)  # the folder above raw_data works too
    assert list(splits) == ["train", "test"]
    kept = {"creative_birds": lambda p: p % 5 != 3, "creative_creatures": lambda p: p % 5 > 1}
    for category, total in (("creative_birds", 550), ("creative_creatures", 506)):
        for split, positions in (("train", range(total - 500)), ("test", range(total - 500, total))):
            keys = [s.key for s in splits[split] if s.category == category]
            assert keys == [f"a{p}" for p in positions if kept[category](p)], (category, split)
    bird = next(s for s in splits["test"] if s.category == "creative_birds")
    assert [bird.part_names[k] for k in bird.labels] == ["initial", "eye", "wings", "wings"]
    with pytest.raises(DataError, match="no valid split: CreativeSketch"):
        load_sketches(folder, "valid")
    assert main(["sketch", "prepare", str(folder), "-o", str(tmp_path / "out"), "--categories",
                 "creative_birds"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test", "train"]
    assert len(load_sketches(tmp_path / "out", "test")) == 400  # 500 minus the rejected worker's fifth
    (folder / "reject_generic_workids_all.txt").unlink()
    with pytest.raises(DataError, match="reject_generic_workids_all.txt: missing; .*rejected workers"):
        read_splits(folder, categories=["creative_creatures"])
    (folder / "doodle_short_birds_4.txt").unlink()
    with pytest.raises(DataError, match="missing doodle_short_birds_4.txt of creative_birds; .*last 500"):
        read_splits(folder, categories=["creative_birds"])


def test_a_folder_that_is_no_data_set_says_what_it_expected(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="holds no sketch data set: expected splits.json .* <category>.ndjson"):
        load_sketches(tmp_path, "train")
    write_spg_file(tmp_path / "cup.ndjson", 3)
    write_spg_file(tmp_path / "cup.json", 3)
    with pytest.raises(DataError, match="cup.json and cup.ndjson both hold category 'cup'"):
        load_sketches(tmp_path, "train")


@pytest.mark.skipif(not SPG.is_dir(), reason="shared SPG sketch data not present")
def test_real_spg_files_read_as_a_folder_with_their_part_names():
    """SketchGNN's copy of SPG without its splits.json: raw/<category>_raw.ndjson.xz split 80/10/10."""
    splits = read_splits(SPG / "raw", categories=["candle"])
    assert [len(s) for s in splits.values()] == [640, 80, 80]
    assert len({s.key for sketches in splits.values() for s in sketches}) == 800
    assert splits["test"][0].part_names == ["main", "candlewick", "fire", "base"]  # from ../part_names/


def test_eval_uses_the_split_of_the_training_run(tmp_path: Path):
    from segwise.config import save_config
    from segwise.tasks.sketch.config import SketchConfig
    from segwise.tasks.sketch.infer import run_split

    (tmp_path / "model.yaml").write_text("name: contextseg\n")
    assert run_split(tmp_path) == ("80/10/10", 0)  # no saved config: the defaults
    config = SketchConfig.model_validate({"data": {"split_scheme": "official", "split_seed": 7}})
    save_config(config, tmp_path / "config.yaml")
    assert run_split(tmp_path) == ("official", 7)


def test_a_folder_prepared_by_an_earlier_segwise_says_to_prepare_again(tmp_path: Path):
    from segwise.data.sketch.datasets import read_splits
    from segwise.errors import DataError

    (tmp_path / "train.npz").write_bytes(b"old cache")
    with pytest.raises(DataError, match="prepare` on the source again"):
        read_splits(tmp_path, ["train"])
