"""Real data (alphamatting.com low-res, 9 images): leave-one-out fine-tune of a tiny ViT, then predict + eval, and
compare the predicted trimap with the provided Trimap1/Trimap2 by IoU and by the SAD of the pymatting alpha."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers import SHARED_DATASETS
from segwise.cli import main
from segwise.data.io import read_mask
from segwise.data.matting import baseline_trimap, find_matting_samples, prompt_from_alpha, read_rgb, trimap_classes
from segwise.metrics.trimap import image_trimap_iou, matting_errors
from segwise.tasks.trimap.infer import solve_alpha

DATA = SHARED_DATASETS / "alphamatting_lowres"
HELD_OUT = "GT05"  # plush toy: soft fur edges and hard ones
FOLDERS = ("images", "alpha", "trimap1", "trimap2")
BASELINE_BAND = 5  # px each side of the prompt's edge: the trivial trimap, for scale


def _split(root, names) -> None:
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True)
        for name in names:
            (root / folder / f"{name}.png").symlink_to(DATA / folder / f"{name}.png")


@pytest.mark.slow
def test_leave_one_out_trimaps_against_the_provided_ones(tmp_path, one_thread, capsys) -> None:
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is not present")
    names = sorted(p.stem for p in (DATA / "images").glob("*.png"))
    _split(tmp_path / "data" / "train", [n for n in names if n != HELD_OUT])
    _split(tmp_path / "data" / "val", [HELD_OUT])
    recipe = ["model.args.patch_size=16", "model.args.img_size=160", "model.args.depth=2",
              "model.args.head_channels=64", "model.args.upsample=x2", "optimizer.lr=2e-3", "scheduler.name=cosine",
              "scheduler.warmup_steps=5", "trimap.trimap_dir=trimap1", "trainer.val_every_epochs=100",
              "trainer.log_images=0", "trainer.log_worst_images=0", "trainer.progress_bar=false",
              "data.num_workers=0"]
    assert main(["trimap", "train", str(tmp_path / "data"), "--cpu", "--size", "tiny", "--steps", "60", "--batch",
                 "4", "--name", "loo", "--log-dir", str(tmp_path / "runs"),
                 *(x for item in recipe for x in ("--set", item))]) == 0
    run, val = tmp_path / "runs" / "loo", tmp_path / "data" / "val"

    assert main(["trimap", "predict", str(run), str(val), "-o", str(tmp_path / "pred"), "--overlay"]) == 0
    predicted = trimap_classes(read_mask(tmp_path / "pred" / f"{HELD_OUT}.png"))
    sample = find_matting_samples(val, "trimap1")[0]
    image, alpha = read_rgb(sample.image), read_mask(sample.alpha) / 255.0
    assert predicted.shape == alpha.shape and set(np.unique(predicted)) == {0, 1, 2}

    capsys.readouterr()
    for trimap_dir in ("trimap1", "trimap2"):
        assert main(["trimap", "eval", str(run), str(val), "--trimap-dir", trimap_dir, "--matte",
                     "-o", str(tmp_path / trimap_dir)]) == 0
    print(capsys.readouterr().out)
    scores = {d: json.loads((tmp_path / d / "trimap_metrics.json").read_text())["val"] for d in ("trimap1", "trimap2")}

    sad = {"predicted": scores["trimap1"]["sad"]}
    for trimap_dir in ("trimap1", "trimap2"):
        given = trimap_classes(read_mask(val / trimap_dir / f"{HELD_OUT}.png"))
        ious = image_trimap_iou(torch.from_numpy(predicted).long(), torch.from_numpy(given).long())
        assert ious.tolist() == pytest.approx([scores[trimap_dir][f"iou_{c}"] for c in
                                               ("background", "unknown", "foreground")])
        sad[trimap_dir] = matting_errors(solve_alpha(image, given), alpha)["sad"]
    band = baseline_trimap(prompt_from_alpha(read_mask(sample.alpha)), BASELINE_BAND)
    sad["prompt band"] = matting_errors(solve_alpha(image, band), alpha)["sad"]
    print(f"{HELD_OUT}: IoU vs Trimap1 {scores['trimap1']['miou']:.3f} (unknown {scores['trimap1']['iou_unknown']:.3f}), "
          f"vs Trimap2 {scores['trimap2']['miou']:.3f}; SAD of the closed-form alpha: {sad}")
    # The prompt fixes most of the known regions; the unknown band overlaps the users' trimaps. A 60-step model
    # from scratch at 160 px is far from the users' trimaps (and from the band around the alpha-derived prompt,
    # which leaks the ground truth): the figures are printed for docs/benchmarks.md, the bounds only catch breakage.
    assert scores["trimap1"]["iou_background"] > 0.8 and scores["trimap1"]["iou_foreground"] > 0.5
    assert scores["trimap2"]["iou_unknown"] > 0.1
    assert sad["predicted"] < 20 * sad["trimap1"]  # a bound on breakage only: a better model must not fail it
