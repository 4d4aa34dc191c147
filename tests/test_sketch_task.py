"""Sketch task: config, data/collation, drawing, both training stages end to end through the CLI, eval, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from segwise.cli import main
from segwise.config import load_config
from segwise.data.sketch.datasets import SketchDataset, StrokeImageDataset, collate_sketches, load_sketches
from segwise.data.sketch.formats import Sketch
from segwise.data.sketch.raster import distance_field
from segwise.models.spec import load_model
from segwise.errors import ConfigError, DataError
from segwise.metrics.sketch import sketch_metrics
from segwise.models.contextseg import ContextSeg, StrokeEmbedder
from segwise.tasks.sketch.config import SegmentConfig, SketchConfig
from segwise.tasks.sketch.draw import draw_parts, part_palette, sketch_svg
from segwise.tasks.sketch.infer import evaluate
from segwise.tasks.sketch.module import membership, teacher_forcing_ratio

from tests.helpers import SHARED_DATASETS

TINY = ["--cpu", "--canvas", "32", "--workers", "0", "--seed", "0",
        "--set", "trainer.progress_bar=false", "--set", "trainer.log_every_steps=5",
        "--set", "embed.root_features=4", "--set", "embed.depth=3", "--set", "embed.hidden=64",
        "--set", "embed.code_size=32", "--set", "data.max_val_per_category=8", "--set", "trainer.log_images=2"]
TRANSFORMER = ["--set", "segment.transformer.d_model=32", "--set", "segment.transformer.num_layers=2",
               "--set", "segment.transformer.num_heads=2", "--set", "segment.transformer.d_ff=64"]


def _toy() -> Sketch:
    strokes = [np.array([[10, 10], [60, 10]]), np.array([[10, 40], [60, 40], [60, 80]]), np.array([[30, 90], [40, 95]])]
    return Sketch(strokes, np.array([0, 1, 0]), "toy", ["top", "side"], "toy_0")


def test_config_keeps_sketch_defaults_under_overrides_and_names_bad_keys():
    config = load_config(None, ["trainer.max_steps=7", "optimizer.lr=0.01"], schema=SketchConfig)
    assert config.trainer.max_steps == 7 and config.trainer.monitor == "val/C"
    assert (config.optimizer.name, config.optimizer.lr, config.optimizer.args["eps"]) == ("Adam", 0.01, 1e-9)
    with pytest.raises(ConfigError, match="did you mean 'segment.transformer'"):
        load_config(None, ["segment.transfomer.d_model=8"], schema=SketchConfig)
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        load_config(None, ["segment.transformer.d_model=10", "segment.transformer.num_heads=4"],
                    schema=SketchConfig)


def test_teacher_forcing_ratio_decays_linearly_then_stays():
    segment = SegmentConfig(teacher_forcing_steps=100)
    ratios = [teacher_forcing_ratio(step, segment) for step in (0, 50, 100, 500)]
    assert ratios == pytest.approx([1.0, 0.6, 0.2, 0.2])


def test_collation_pads_strokes_labels_and_groups():
    a = {"strokes": torch.ones(2, 4, 4, dtype=torch.bool), "labels": torch.tensor([1, 0]), "groups": 2, "index": 0}
    b = {"strokes": torch.ones(3, 4, 4, dtype=torch.bool), "labels": torch.tensor([2, 2, 0]), "groups": 3, "index": 5}
    batch = collate_sketches([a, b])
    assert batch["strokes"].shape == (2, 3, 4, 4) and not batch["strokes"][0, 2].any()
    assert batch["labels"].tolist() == [[1, 0, -1], [2, 2, 0]]
    assert batch["stroke_valid"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["group_valid"].tolist() == [[True, True, False], [True, True, True]]
    target = membership(batch["labels"], batch["group_valid"])
    assert target[0].tolist() == [[0, 1, -1], [1, 0, -1], [-1, -1, -1]]
    assert target[1].tolist() == [[0, 0, 1], [0, 0, 0], [1, 1, 0]]
    assert batch["index"].tolist() == [0, 5]


def test_stage1_items_are_single_strokes_and_multi_stroke_parts_with_their_distance_field():
    data = StrokeImageDataset([_toy()], canvas=32, line_width=1, df_k=0.01)
    assert [ids for _, ids in data.items] == [(0,), (1,), (2,), (0, 2)]  # part 1 has one stroke: no group item
    item = data[3]
    single = data[0]["image"] + data[2]["image"]
    assert torch.equal(item["image"], single.clamp(max=1))
    assert np.allclose(item["df"][0].numpy(), distance_field(item["image"][0].numpy() > 0, 0.01))


def test_augmentation_depends_only_on_seed_epoch_and_index():
    sketches = [_toy()] * 3
    data = SketchDataset(sketches, {"toy": ["top", "side"]}, canvas=32, line_width=1, augment_p=1.0, seed=4)
    assert torch.equal(data[(2, 1)]["strokes"], data[(2, 1)]["strokes"])
    assert not all(torch.equal(data[(e, 1)]["strokes"], data[(0, 1)]["strokes"]) for e in range(1, 6))
    with pytest.raises(DataError, match="knows only"):
        SketchDataset(sketches, {"cup": ["a"]}, canvas=32, line_width=1)


def test_drawing_colours_each_stroke_by_its_part(tmp_path: Path):
    sketch, labels = _toy(), np.array([1, 0, 1])
    picture = draw_parts(sketch, labels, size=64, width=1)
    palette = part_palette(2)
    colours = {tuple(c) for c in picture.reshape(-1, 3)} - {(255, 255, 255)}
    assert colours == {tuple(int(v) for v in palette[0]), tuple(int(v) for v in palette[1])}
    svg = sketch_svg(sketch, labels, size=64)
    assert svg.count("<polyline") == 3
    r, g, b = (int(v) for v in palette[1])
    assert svg.count(f'stroke="rgb({r},{g},{b})"') == 2 and "<title>side</title>" not in svg.split("<polyline")[2]


def test_load_sketches_names_what_is_missing(tmp_path: Path):
    with pytest.raises(DataError, match="holds no sketch data set"):
        load_sketches(tmp_path, "valid")
    assert main(["sketch", "prepare", "--synthetic", "5", "--categories", "house", "-o", str(tmp_path),
                 "--splits", "train"]) == 0
    with pytest.raises(DataError, match="no valid split: a `segwise sketch prepare` folder has train"):
        load_sketches(tmp_path, "valid")
    with pytest.raises(DataError, match=r"train: no prepared face \(it has house\)"):
        load_sketches(tmp_path, "train", ["face"])
    assert len(load_sketches(tmp_path, "train", limit=2)) == 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, one_thread) -> dict[str, Path]:
    """Synthetic house/face/tree sketches; stage 1, stage 2 and the baseline trained briefly on 32-px strokes."""
    root = tmp_path_factory.mktemp("sketch")
    data, runs = root / "data", root / "runs"
    assert main(["sketch", "prepare", "--synthetic", "150", "-o", str(data), "--seed", "1"]) == 0
    assert main(["sketch", "train-embed", str(data), "--name", "embed", "--log-dir", str(runs), "--steps", "120",
                 "-b", "32", "--lr", "2e-3", *TINY, "--set", "trainer.val_every_steps=120"]) == 0
    assert main(["sketch", "train", str(data), "--embed", str(runs / "embed"), "--name", "seg", "--log-dir",
                 str(runs), "--steps", "400", "-b", "16", "--lr", "2e-3", *TINY, *TRANSFORMER,
                 "--set", "segment.teacher_forcing_steps=250", "--set", "trainer.val_every_steps=200"]) == 0
    return {"data": data, "runs": runs}


def test_embed_stage_exports_a_loadable_embedder_and_resumes(trained, capsys):
    run = trained["runs"] / "embed"
    model, spec = load_model(run)
    assert isinstance(model, StrokeEmbedder) and (model.image_size, model.line_width) == (32, 2)
    assert spec.name == "contextseg_embed" and (run / "config.yaml").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    # The same name continues the run from last.ckpt instead of starting over.
    assert main(["sketch", "train-embed", str(trained["data"]), "--name", "embed", "--log-dir", str(trained["runs"]),
                 "--steps", "125", "-b", "32", *TINY, "--set", "trainer.val_every_steps=125"]) == 0
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 125
    # Resuming with another network size would load mismatched weights: refused, naming the setting.
    assert main(["sketch", "train-embed", str(trained["data"]), "--name", "embed", "--log-dir", str(trained["runs"]),
                 "--steps", "130", "-b", "32", *TINY, "--set", "embed.root_features=8"]) == 2
    assert "was trained with args=" in capsys.readouterr().err


def test_contextseg_learns_parts_far_above_chance(trained, capsys):
    """C-metric of the auto-regressive decoder on held-out synthetic sketches vs. random and majority guessing."""
    out = trained["runs"] / "eval_seg"
    assert main(["sketch", "eval", str(trained["runs"] / "seg"), str(trained["data"]), "--split", "test",
                 "-o", str(out), "--plots", "3"]) == 0
    printed = capsys.readouterr().out
    assert "mean (categories)" in printed
    assert [p.name[:4] for p in sorted((out / "plots").glob("*.png"))] == ["000_", "001_", "002_"]  # worst first
    metrics = json.loads((out / "metrics.json").read_text())
    test = load_sketches(trained["data"], "test")
    chance = np.mean([1 / len(s.part_names) for s in test])
    majority = np.mean([np.mean(s.labels == np.bincount(s.labels).argmax()) for s in test])  # per-sketch oracle
    c_metric = metrics["mean"]["c_metric"]
    print(f"C-metric {c_metric:.3f}, P {metrics['mean']['p_metric']:.3f}; chance {chance:.3f}, "
          f"per-sketch majority oracle {majority:.3f}")
    assert c_metric > 2 * chance and c_metric > majority + 0.1
    model, spec = load_model(trained["runs"] / "seg")
    assert isinstance(model, ContextSeg) and set(model.categories) == {"house", "face", "tree"}


def test_both_stages_log_sketch_images_to_tensorboard(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {}
    for run in ("embed", "seg"):
        events = EventAccumulator(str(trained["runs"] / run / "tensorboard"))
        events.Reload()
        tags[run] = events.Tags()
    assert "val_embed/0" in tags["embed"]["images"] and "val/loss" in tags["embed"]["scalars"]
    assert {"val_sketches/0", "val_sketches/1"} <= set(tags["seg"]["images"])
    assert {"val/P", "val/C", "val/SAcc", "val/CAcc", "train/teacher_forcing"} <= set(tags["seg"]["scalars"])


def test_predict_writes_coloured_svg_and_png_per_sketch(trained, tmp_path: Path):
    sketches = load_sketches(trained["data"], "test")[:2]
    source = tmp_path / "house.ndjson"
    source.write_text("\n".join(json.dumps({"key_id": f"k{i}", "drawing": [
        [s.tolist() for s in (stroke[:, 0], stroke[:, 1], np.zeros(len(stroke)))] for stroke in sk.strokes]})
        for i, sk in enumerate(sketches)))
    assert main(["sketch", "predict", str(trained["runs"] / "seg"), str(source), "-o", str(tmp_path / "out")]) == 0
    table = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert set(table) == {"k0", "k1"} and table["k0"]["category"] == "house"
    assert len(table["k0"]["labels"]) == sketches[0].num_strokes
    assert (tmp_path / "out" / "k0.png").is_file()
    assert (tmp_path / "out" / "k1.svg").read_text().count("<polyline") == sketches[1].num_strokes
    assert main(["sketch", "predict", str(trained["runs"] / "seg"), str(source), "-o", str(tmp_path / "x"),
                 "--category", "cup"]) == 2


def test_sketches_of_a_category_the_model_does_not_know_are_refused(trained, tmp_path: Path, capsys):
    """A file named airplane_raw.ndjson fed to a house/face/tree model: never silently labelled with their parts."""
    sketch = load_sketches(trained["data"], "test")[0]
    source = tmp_path / "airplane_raw.ndjson"
    source.write_text(json.dumps({"key_id": "k0", "drawing": [
        [s.tolist() for s in (stroke[:, 0], stroke[:, 1], np.zeros(len(stroke)))] for stroke in sketch.strokes]}))
    model = str(trained["runs"] / "seg")
    assert main(["sketch", "predict", model, str(source), "-o", str(tmp_path / "out")]) == 2
    assert "sketches of 'airplane'" in capsys.readouterr().err and not (tmp_path / "out" / "labels.json").exists()
    assert main(["sketch", "predict", model, str(source), "-o", str(tmp_path / "out"), "--category", "house"]) == 0


def test_baseline_trains_on_the_same_embedder(trained):
    assert main(["sketch", "train", str(trained["data"]), "--embed", str(trained["runs"] / "embed"), "--model",
                 "stroke_classifier", "--name", "base", "--log-dir", str(trained["runs"]), "--steps", "40", "-b", "16",
                 "--lr", "2e-3", *TINY, "--set", "trainer.val_every_steps=40"]) == 0
    assert main(["sketch", "train", str(trained["data"]), "--embed", str(trained["runs"] / "base"), "--name", "x",
                 "--log-dir", str(trained["runs"]), *TINY]) == 2  # a stage-2 run is no embedder: a clear error
    spec = yaml.safe_load((trained["runs"] / "base" / "model.yaml").read_text())
    assert spec["name"] == "stroke_classifier"
    metrics = evaluate(trained["runs"] / "base", trained["data"], "test", limit=10)
    assert 0 <= metrics["mean"]["c_metric"] <= 1 and metrics["overall"]["num_sketches"] == 30


@pytest.mark.slow
def test_spg_slice_trains_and_reports_p_and_c(tmp_path: Path, one_thread, capsys):
    """A slice of SPG airplane (first 120 training sketches), both stages briefly on 64-px strokes."""
    spg = SHARED_DATASETS / "spg_sketch"
    if not (spg / "splits.json").is_file():
        pytest.skip(f"SPG sketches not found at {spg}")
    common = ["--cpu", "--canvas", "64", "--workers", "0", "--categories", "airplane", "--max-per-category", "120",
              "--log-dir", str(tmp_path), "--set", "trainer.progress_bar=false", "--set", "embed.root_features=4",
              "--set", "embed.depth=3", "--set", "embed.hidden=64", "--set", "embed.code_size=32",
              "--set", "data.max_val_per_category=20"]
    assert main(["sketch", "train-embed", str(spg), "--name", "e", "--steps", "100", "-b", "32", "--lr", "2e-3",
                 *common, "--set", "trainer.val_every_steps=100"]) == 0
    assert main(["sketch", "train", str(spg), "--embed", str(tmp_path / "e"), "--name", "s", "--steps", "150",
                 "-b", "16", "--lr", "2e-3", *common, *TRANSFORMER, "--set", "segment.teacher_forcing_steps=100",
                 "--set", "trainer.val_every_steps=150"]) == 0
    metrics = evaluate(tmp_path / "s", spg, "test", limit=50)
    airplane = metrics["per_category"]["airplane"]
    # The baseline a model must beat: every stroke gets the part most strokes of the training slice have.
    train_strokes = np.concatenate([s.labels for s in load_sketches(spg, "train", ["airplane"], 120)])
    test = load_sketches(spg, "test", ["airplane"], 50)
    majority = np.bincount(train_strokes).argmax()
    baseline = sketch_metrics(test, [np.full(s.num_strokes, majority) for s in test])["per_category"]["airplane"]
    print(f"SPG airplane slice: P {airplane['p_metric']:.3f} C {airplane['c_metric']:.3f}; majority part: "
          f"P {baseline['p_metric']:.3f} C {baseline['c_metric']:.3f}")
    assert airplane["num_sketches"] == 50 and airplane["c_metric"] > baseline["c_metric"] + 0.05


@pytest.mark.parametrize("name", ["sketch_spg.yaml", "sketch_cpu.yaml"])
def test_shipped_sketch_configs_are_valid(name: str):
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / name, schema=SketchConfig)
    assert config.segment.model == "contextseg" and config.optimizer.name == "Adam"
    assert config.data.canvas % 2 ** config.embed.depth == 0
