"""`segwise train --auto` against segwise's defaults and the shipped hand-written configs, on one time budget.

For each data set, three recipes train on the same CPU clock and are scored on the same held-out split:

- `defaults`: `segwise train DATA --config DEF --max-time B`, where DEF holds only what defines the data set (class
  names, number of classes, ignore label, palette), so every recipe learns the same task;
- `shipped`: `segwise train DATA --config configs/<set>.yaml --max-time B` (the hand-written config; none for the
  synthetic set);
- `auto`: `segwise train DATA --auto --budget B --config DEF` (plans, then trains; `trainer.max_time` = B).

Each run is evaluated as its recipe says: defaults whole images (`segwise eval`'s default), the shipped config with
the command in its header, `--auto` with the eval line its plan writes. The test mIoU is the mean IoU over the
classes of the held-out split (CamVid: test, 233 images; Dubai: tile 2, 9 whole images, tiles 1 and 3 train;
tiny-objects: a synthetic set whose objects are 3 to 7 px across, written by this script with seed 0).

    python benchmarks/plan_compare.py                                 # CamVid + Dubai at 8 min, tiny at 3 min
    python benchmarks/plan_compare.py --sets tiny --tiny-budget 2m
    python benchmarks/plan_compare.py --sets camvid --budget 20m --recipes defaults auto
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml
from sliding import machine  # this folder is on sys.path when a benchmark runs as a script

from segwise.models.smp_bridge import DEFAULT_ENCODER

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
DATA_KEYS = ("num_classes", "class_names", "ignore_index", "palette", "unmapped", "val_split")
"""The keys of a config that define the data set rather than the recipe: every recipe gets them."""


@dataclass
class DataSet:
    name: str
    root: Path
    test: Path
    shipped: Path | None
    shipped_eval: list[str] = field(default_factory=list)
    definition: dict = field(default_factory=dict)


def segwise(*args: str, log: Path) -> float:
    """Run the CLI as a user would; its output goes to `log`; returns the wall time. Fails loudly."""
    command = [sys.executable, "-m", "segwise", *args]
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"$ segwise {shlex.join(args)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"segwise {shlex.join(args)} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def data_definition(config: Path) -> dict:
    data = yaml.safe_load(config.read_text())["data"]
    return {"data": {k: data[k] for k in DATA_KEYS if k in data}}


def camvid(work: Path, log: Path) -> DataSet:
    shipped = REPO / "configs" / "camvid.yaml"
    root = SHARED / "camvid"
    return DataSet("CamVid", root, root / "test", shipped, [], data_definition(shipped))


def dubai(work: Path, log: Path) -> DataSet:
    """Tiles 1 and 3 cut into 256² training tiles (stride 192), tile 2 kept whole for testing: the shipped config's
    own preparation (its header)."""
    shipped = REPO / "configs" / "dubai_factseg.yaml"
    root = work / "dubai_data"
    if not (root / "val").is_dir():
        source = SHARED / "dubai_aerial"
        for tile in ("tile_1", "tile_3"):
            segwise("data", "tile", str(source / tile), str(root / "train"), "--size", "256", "--stride", "192",
                    "--prefix", f"t{tile[-1]}_", "--config", str(shipped), log=log)
        segwise("data", "tile", str(source / "tile_2"), str(root / "val"), "--whole", "--config", str(shipped),
                log=log)
    return DataSet("Dubai aerial", root, root / "val", shipped,
                   ["--mode", "slide", "--window", "256", "--stride", "192", "--background-index", "0"],
                   data_definition(shipped))


def tiny_objects(work: Path, log: Path) -> DataSet:
    """256² textured fields with 4 to 12 objects of 3 to 7 px: class 1 bright discs, class 2 dark squares; larger
    faint blobs of both tones are background (so brightness alone does not find the objects)."""
    root = work / "tiny_data"
    if not (root / "test").is_dir():
        for split, count in (("train", 64), ("val", 16), ("test", 24)):
            for index in range(count):
                rng = np.random.default_rng([0, len(split), index])
                image, mask = tiny_object_image(rng, 256)
                for kind, pixels in (("images", image), ("masks", mask)):
                    path = root / split / kind / f"{split}_{index:03d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(path), pixels)
    definition = {"data": {"num_classes": 3, "class_names": ["background", "bright_dot", "dark_square"]}}
    return DataSet("tiny objects (synthetic)", root, root / "test", None, [], definition)


def tiny_object_image(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    field_ = cv2.GaussianBlur(rng.normal(0, 1, (side, side, 3)).astype(np.float32), (0, 0), 6)
    image = 110 + 40 * field_ / (field_.std() + 1e-6) + rng.normal(0, 6, (side, side, 3))
    for _ in range(rng.integers(3, 7)):  # distractors: wide faint blobs of both tones
        y, x, r = *rng.integers(0, side, 2), int(rng.integers(12, 30))
        cv2.circle(image, (int(x), int(y)), r, [float(v) for v in rng.choice([70, 150], 3)], -1)
    mask = np.zeros((side, side), np.uint8)
    for _ in range(rng.integers(4, 13)):
        y, x, size, cls = *rng.integers(4, side - 4, 2), int(rng.integers(3, 8)), int(rng.integers(1, 3))
        tone = 215 if cls == 1 else 25
        if cls == 1:
            cv2.circle(image, (int(x), int(y)), size // 2 + 1, (tone, tone, tone), -1)
            cv2.circle(mask, (int(x), int(y)), size // 2 + 1, 1, -1)
        else:
            image[y:y + size, x:x + size] = tone
            mask[y:y + size, x:x + size] = 2
    return np.clip(image, 0, 255).astype(np.uint8), mask


SETS = {"camvid": camvid, "dubai": dubai, "tiny": tiny_objects}


def plan_eval_flags(plan_file: Path) -> list[str]:
    """The flags of the eval line a plan writes in its header (`eval: ... segwise eval RUN DATA/val FLAGS`)."""
    for line in plan_file.read_text().splitlines():
        if "segwise eval RUN DATA/val" in line:
            return shlex.split(line.split("segwise eval RUN DATA/val", 1)[1])
    return []


def train_and_score(data: DataSet, recipe: str, budget: str, work: Path, log: Path) -> dict:
    runs = work / "runs"
    definition = work / "definition.yaml"
    definition.write_text(yaml.safe_dump(data.definition, sort_keys=False))
    common = ["--log-dir", str(runs), "--name", recipe, "--cpu", "--set", "trainer.progress_bar=false"]
    if recipe == "auto":
        args = ["train", str(data.root), "--auto", "--budget", budget, "--config", str(definition), *common]
    else:
        config = data.shipped if recipe == "shipped" else definition
        args = ["train", str(data.root), "--config", str(config), "--max-time", budget, *common]
    seconds = segwise(*args, log=log)
    run = runs / recipe
    flags = plan_eval_flags(run / "plan.yaml") if recipe == "auto" else data.shipped_eval if recipe == "shipped" else []
    out = work / "eval" / recipe
    segwise("eval", str(run), str(data.test), "-o", str(out), "--metrics-only", "--device", "cpu", *flags, log=log)
    metrics = json.loads((out / "metrics.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    steps = _trained_steps(run)
    return {"recipe": recipe, "miou": metrics["miou"], "train_s": seconds, "steps": steps,
            "model": f"{config['model']['name']}-{config['model']['encoder'] or DEFAULT_ENCODER}", "loss": config["loss"]["name"],
            "crop": config["data"].get("crop_size"), "batch": config["data"]["batch_size"], "eval": flags}


def _trained_steps(run: Path) -> int:
    import torch

    return int(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["global_step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--budget", default="8m", help="training time of each recipe on CamVid and Dubai")
    parser.add_argument("--tiny-budget", default="3m", help="training time of each recipe on the tiny-object set")
    parser.add_argument("--recipes", nargs="+", choices=["defaults", "shipped", "auto"],
                        default=["defaults", "shipped", "auto"], help="which recipes to train (default all three)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segwise_plan_compare"))
    args = parser.parse_args()
    print(f"# segwise plan comparison, {datetime.date.today()}, {machine()}")
    print(f"# command: python benchmarks/{Path(__file__).name} {shlex.join(sys.argv[1:])}")
    results = {}
    for name in args.sets:
        work = args.work / name
        work.mkdir(parents=True, exist_ok=True)
        log = work / "log.txt"
        if name != "tiny" and not SHARED.is_dir():
            print(f"{name}: skipped, {SHARED} is absent")
            continue
        data = SETS[name](work, log)
        budget = args.tiny_budget if name == "tiny" else args.budget
        recipes = [r for r in args.recipes if r != "shipped" or data.shipped]
        rows = []
        for recipe in recipes:
            rows.append(train_and_score(data, recipe, budget, work, log))
            row = rows[-1]
            print(f"{data.name} | {recipe} | test mIoU {100 * row['miou']:.2f} | {row['steps']} steps in "
                  f"{row['train_s'] / 60:.1f} min | {row['model']}, loss {row['loss']}, crop {row['crop']}, "
                  f"batch {row['batch']} | eval {' '.join(row['eval']) or 'whole'}", flush=True)
        results[name] = {"budget": budget, "rows": rows}
        (args.work / "results.json").write_text(json.dumps(results, indent=2))
    print("\n| data set | budget | recipe | test mIoU | steps | model | loss | crop | batch |\n|---|---|---|---|---|---|---|---|---|")
    for name, result in results.items():
        for row in result["rows"]:
            print(f"| {SETS[name].__name__} | {result['budget']} | {row['recipe']} | {100 * row['miou']:.2f} | "
                  f"{row['steps']} | {row['model']} | {row['loss']} | {row['crop']} | {row['batch']} |")


if __name__ == "__main__":
    main()
