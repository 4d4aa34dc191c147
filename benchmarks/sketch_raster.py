"""Sketch rasterisation and distance-field time of segwise against the reference's PIL + scipy pipeline.

For every sketch both sides produce what ContextSeg consumes: one stroke image per stroke (width 2), one group
image per ground-truth part (width 4) and the distance field of each group image. segwise draws with one
cv2.polylines call per image on 1/16-pixel fixed-point coordinates and takes cv2's exact Euclidean distance
transform; the reference (ContextSeg's data scripts, `write_data_*.py`) draws each image with PIL on a
156 × 156 canvas, pastes it into 256 × 256 at offset 50, flips group images, and takes scipy's
`distance_transform_edt`. The two run alternately on the same normalised sketches, `--repeats` rounds each; the
table shows the median per sketch.

    python benchmarks/sketch_raster.py                        # SPG test split of all categories when present
    python benchmarks/sketch_raster.py --categories face pig --repeats 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from segwise.data.sketch.formats import Sketch, normalize, read_spg_folder
from segwise.data.sketch.raster import distance_field, render_strokes, render_union
from segwise.data.sketch.synthetic import make_synthetic_sketches

SPG = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "spg_sketch"
BOX, OFFSET = 156, 50


def segwise_targets(sketch: Sketch, k: float) -> int:
    strokes = render_strokes(sketch, width=2)
    groups = [render_union(sketch, sketch.labels == part, width=4) for part in np.unique(sketch.labels)]
    fields = distance_field(np.stack(groups), k=k)
    return int(strokes.sum() + fields.size)


def _pil_image(strokes: list[np.ndarray], width: int, flip: bool) -> np.ndarray:
    """The reference: PIL lines on a BOX canvas, pasted into 256 at OFFSET (group images flipped top-bottom)."""
    canvas = Image.new("L", (BOX, BOX), 0)
    draw = ImageDraw.Draw(canvas)
    for stroke in strokes:
        draw.line([tuple(point) for point in (stroke - OFFSET).tolist()], fill=1, width=width)
    small = np.asarray(canvas)
    image = np.zeros((256, 256), np.uint8)
    image[OFFSET:OFFSET + BOX, OFFSET:OFFSET + BOX] = small[::-1] if flip else small
    return image


def reference_targets(sketch: Sketch, k: float) -> int:
    strokes = np.stack([_pil_image([stroke], 2, flip=False) for stroke in sketch.strokes])
    total = int(strokes.sum())
    for part in np.unique(sketch.labels):
        group = _pil_image([s for s, label in zip(sketch.strokes, sketch.labels) if label == part], 4, flip=True)
        with np.errstate(over="ignore"):
            field = 1.0 / (1.0 + k * np.exp(ndimage.distance_transform_edt(group == 0)))
        total += np.nan_to_num(field.astype(np.float32)).size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="*", help="SPG categories (default: all of the test split)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=float, default=0.01)
    args = parser.parse_args()
    if SPG.is_dir():
        sketches, source = read_spg_folder(SPG, args.categories, "test"), f"SPG test split ({SPG})"
    else:
        sketches, source = make_synthetic_sketches(200, categories=3), "600 procedural sketches (SPG absent)"
    sketches = [normalize(sketch) for sketch in sketches]
    strokes = sum(sketch.num_strokes for sketch in sketches)
    groups = sum(len(np.unique(sketch.labels)) for sketch in sketches)
    times: dict[str, list[float]] = {"segwise": [], "reference": []}
    for _ in range(args.repeats):
        for name, run in (("segwise", segwise_targets), ("reference", reference_targets)):
            start = time.perf_counter()
            for sketch in sketches:
                run(sketch, args.k)
            times[name].append((time.perf_counter() - start) / len(sketches) * 1e3)
    print(f"{source}: {len(sketches)} sketches, {strokes / len(sketches):.1f} strokes and "
          f"{groups / len(sketches):.1f} groups per sketch; {platform.processor() or platform.machine()}")
    print("| pipeline | ms per sketch (median) | all rounds | × reference |")
    print("|---|---|---|---|")
    reference = statistics.median(times["reference"])
    for name, values in times.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{value:.2f}" for value in values)
        print(f"| {name} | {median:.2f} | {rounds} | {median / reference:.2f} |")


if __name__ == "__main__":
    main()
