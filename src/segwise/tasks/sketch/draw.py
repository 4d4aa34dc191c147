"""Pictures of part-labelled sketches: one colour per part, as PNG-ready arrays and as SVG with a part legend.

Here rather than in `segwise.data.sketch` because the colours beyond the first ten come from `segwise.visualize`,
which the data layer does not import.
"""

from __future__ import annotations

import numpy as np

from segwise.data.sketch.formats import Sketch, normalize
from segwise.data.sketch.raster import FRAME, render_strokes
from segwise.visualize import default_palette

# Matplotlib's tab10: distinct colours on a white page, one per part (more parts fall back to the VOC palette).
PART_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def part_palette(num_parts: int) -> np.ndarray:
    """num_parts×3 uint8 colours, tab10 first."""
    if num_parts <= len(PART_COLOURS):
        return np.asarray(PART_COLOURS[:num_parts], np.uint8)
    return np.concatenate([np.asarray(PART_COLOURS, np.uint8), default_palette(num_parts)[len(PART_COLOURS):]])


def draw_parts(sketch: Sketch, labels: np.ndarray, size: int = 256, width: int = 2) -> np.ndarray:
    """H×W×3 uint8 picture on white: each stroke in its part's colour (later strokes on top)."""
    strokes = render_strokes(normalize(sketch, canvas=FRAME), size=size, width=width, canvas=FRAME) > 0
    palette = part_palette(max(len(sketch.part_names), int(np.max(labels, initial=0)) + 1))
    picture = np.full((size, size, 3), 255, np.uint8)
    for ink, label in zip(strokes, labels):
        picture[ink] = palette[label]
    return picture


def sketch_svg(sketch: Sketch, labels: np.ndarray, size: int = 256, width: int = 2) -> str:
    """An SVG of the sketch, one polyline per stroke in its part's colour, with a legend of the part names."""
    drawn = normalize(sketch, canvas=size, box=round(size * 156 / 256))
    palette = part_palette(max(len(sketch.part_names), int(np.max(labels, initial=0)) + 1))
    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 {size} {size}">',
             f'<rect width="{size}" height="{size}" fill="white"/>']
    for stroke, label in zip(drawn.strokes, labels):
        r, g, b = (int(v) for v in palette[label])
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in stroke)
        lines.append(f'<polyline points="{points}" fill="none" stroke="rgb({r},{g},{b})" stroke-width="{width}" '
                     f'stroke-linecap="round" stroke-linejoin="round"><title>{_part_name(sketch, label)}</title>'
                     "</polyline>")
    for row, name in enumerate(sketch.part_names):
        r, g, b = (int(v) for v in palette[row])
        lines.append(f'<text x="4" y="{12 + 12 * row}" font-size="10" fill="rgb({r},{g},{b})">{_escape(name)}</text>')
    return "\n".join([*lines, "</svg>\n"])


def _part_name(sketch: Sketch, label: int) -> str:
    return _escape(sketch.part_names[label]) if 0 <= label < len(sketch.part_names) else f"part {label}"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
