"""The matting data sets as they ship: which folders of a split hold the images, the alpha mattes and the ground-truth
trimaps, and which layout a folder is (from its folder names, or named by `trimap.format` / `--format`).

| layout | a split holds | where it ships |
|---|---|---|
| `folder` | `original/` (or `image/`, `images/`), `mask/` (or `alpha/`), optional `trimap/` | segwise's own layout |
| `composition1k` | `merged/`, `alpha_copy/`, optional `trimaps/` (not `fg/`, `bg/`) | `Composition-1k-testset/` |
| `p3m500` | `blurred_image/` or `original_image/`, `mask/`, optional `trimap/` | `P3M-10k/validation/P3M-500-{P,NP}/` |
| `aim500` | `original/`, `mask/`, optional `trimap/` (`usr/` is not read) | `AIM-500/` |
| `am200` | `original/`, `mask/`, optional `trimap/` | `AM-2k/validation/` (AM-2k's 200 validation images) |

AIM-500 and AM-200 ship in segwise's own folder names, so they are detected as `folder`; naming them only narrows
the accepted folder names. P3M-10k's training split (`train/blurred_image`, `train/mask`) reads as `p3m500`. AM-200
is AM-2k's validation split as the AM-2k (GFM) release lays it out (`validation/{original,mask,trimap}`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from segwise.data.folder import MATTING_ALPHA_DIR_NAMES, MATTING_IMAGE_DIR_NAMES
from segwise.errors import ConfigError

AUTO = "auto"


@dataclass(frozen=True)
class MattingLayout:
    """Folder names of one layout's split (first name preferred and named in messages); files match by stem."""

    name: str
    title: str
    images: tuple[str, ...]
    alphas: tuple[str, ...]
    trimaps: tuple[str, ...]

    def describe(self) -> str:
        """e.g. 'merged/ + alpha_copy/ (Composition-1K)'."""
        images, alphas = (" or ".join(f"{name}/" for name in names) for names in (self.images, self.alphas))
        return f"{images} + {alphas} ({self.title})"


LAYOUTS: dict[str, MattingLayout] = {layout.name: layout for layout in (
    MattingLayout("folder", "segwise matting folder", MATTING_IMAGE_DIR_NAMES, MATTING_ALPHA_DIR_NAMES, ("trimap",)),
    MattingLayout("composition1k", "Composition-1K", ("merged",), ("alpha_copy",), ("trimaps",)),
    MattingLayout("p3m500", "P3M-500", ("blurred_image", "original_image"), ("mask",), ("trimap",)),
    MattingLayout("aim500", "AIM-500", ("original",), ("mask",), ("trimap",)),
    MattingLayout("am200", "AM-200", ("original",), ("mask",), ("trimap",)),
)}
DETECTED = ("folder", "composition1k", "p3m500")  # the layouts folder names tell apart; folder first wins ties
LAYOUT_NAMES = (AUTO, *LAYOUTS)


def check_layout_name(name: str, key: str = "trimap.format") -> str:
    """`name` if it is a layout or 'auto'; otherwise a ConfigError naming the known ones."""
    if name not in LAYOUT_NAMES:
        close = difflib.get_close_matches(name, LAYOUT_NAMES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key}: unknown matting layout {name!r}.{hint} Known: {', '.join(LAYOUT_NAMES)}")
    return name


def detect_layout(split: Path) -> MattingLayout:
    """The layout whose image and alpha folders `split` has; failing that the one with most of them, so that the
    error names the folder still missing (the folder layout when none is there)."""
    def found(name: str) -> int:
        layout = LAYOUTS[name]
        return sum(any((split / folder).is_dir() for folder in names) for names in (layout.images, layout.alphas))

    return LAYOUTS[max(DETECTED, key=found)]


def matting_layout(split: Path, name: str = AUTO) -> MattingLayout:
    """The layout `name` ('auto': detected from the folder names of `split`)."""
    return detect_layout(split) if check_layout_name(name) == AUTO else LAYOUTS[name]


def layouts_text() -> str:
    """One line naming every layout's folders, for messages about a folder that matches none."""
    return "; ".join(LAYOUTS[name].describe() for name in DETECTED) + " (AIM-500 and AM-200 as the folder layout)"
