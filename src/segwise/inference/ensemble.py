"""`Ensemble`: several trained models (runs or checkpoints) combined into one prediction.

Each member is a `Predictor` that preprocesses the image itself, so members may differ in architecture, input
size and normalisation; they must agree on the classes and on the input bands.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segwise.errors import CheckpointError, ConfigError
from segwise.inference.predictor import Predictor
from segwise.inference.raster import RasterResult, predict_raster
from segwise.inference.whole import InferenceMode

METHODS = ("mean", "weighted", "vote", "floor_mean")


def check_weights(weights: Sequence[float] | None, count: int, method: str) -> np.ndarray:
    """Normalised member weights (equal when none are given)."""
    if method not in METHODS:
        raise ConfigError(f"ensemble method {method!r} is not one of {', '.join(METHODS)}")
    if weights is None:
        if method == "weighted":
            raise ConfigError("ensemble method 'weighted' needs one weight per model (--ensemble-weights)")
        return np.full(count, 1.0 / count)
    if method == "mean":
        raise ConfigError("weights were given for ensemble method 'mean'; use method 'weighted' for a weighted mean")
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (count,):
        raise ConfigError(f"{weights.size} ensemble weight(s) for {count} models; give one weight per model, "
                          "the positional model first")
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ConfigError(f"ensemble weights {weights.tolist()} must be non-negative with a positive sum")
    return weights / weights.sum()


class Ensemble:
    """Combine members' outputs by `method`:

    - `mean` (default): average of the members' class probabilities;
    - `weighted`: weighted average of the probabilities (`weights`, normalised to sum 1);
    - `vote`: majority vote of the members' argmax labels (weighted if `weights` are given); a tie goes to the
      lowest class index. `predict_proba` returns each class's vote share;
    - `floor_mean`: the label average of pytorch-segmentation's vote.py cast down to an integer (for two
      classes: foreground only where every member says so), kept for compatibility. `predict_proba` returns
      the one-hot of that label.
    """

    def __init__(self, predictors: Sequence[Predictor], weights: Sequence[float] | None = None,
                 method: str = "mean", names: Sequence[str] | None = None) -> None:
        if not predictors:
            raise ConfigError("an ensemble needs at least one model")
        names = [str(n) for n in names] if names is not None else [f"model {i}" for i in range(len(predictors))]
        first, first_name = predictors[0], names[0]
        for member, name in zip(predictors[1:], names[1:]):
            a, b = first.spec, member.spec
            if (a.num_classes, list(a.class_names)) != (b.num_classes, list(b.class_names)):
                raise CheckpointError(f"ensemble members disagree on classes: {first_name} has {a.num_classes} "
                                      f"({', '.join(a.class_names)}) but {name} has {b.num_classes} "
                                      f"({', '.join(b.class_names)}); combine models trained on the same classes")
            if (a.in_channels, list(a.extra_channels)) != (b.in_channels, list(b.extra_channels)):
                raise CheckpointError(f"ensemble members take different inputs: {first_name} takes {a.in_channels} "
                                      f"channels (extra {a.extra_channels or 'none'}) but {name} takes "
                                      f"{b.in_channels} (extra {b.extra_channels or 'none'})")
        self.members = list(predictors)
        self.names = names
        self.method = method
        self.weights = check_weights(weights, len(self.members), method)
        self.spec = first.spec  # class names, palette and input contract shared by every member
        self.device = first.device

    @classmethod
    def from_paths(cls, paths: Sequence[Path], device: str | None = None, mode: InferenceMode | None = None,
                   weights: Sequence[float] | None = None, method: str = "mean") -> Ensemble:
        """Load every run directory / model file, all on one device with the same inference mode."""
        return cls([Predictor.from_path(Path(p), device, mode) for p in paths], weights, method, names=paths)

    @classmethod
    def extend(cls, predictor: Predictor, name: str | Path, paths: Sequence[Path],
               weights: Sequence[float] | None = None, method: str = "mean") -> Ensemble:
        """`predictor` (loaded from `name`) plus the models at `paths`, run on its device with its mode."""
        members = [predictor] + [Predictor.from_path(Path(p), predictor.device, predictor.mode, predictor.runtime)
                                 for p in paths]
        return cls(members, weights, method, names=[name, *paths])

    def combine(self, outputs: Iterable[torch.Tensor]) -> torch.Tensor:
        """The members' probabilities (K×H×W, or N×K×H×W for a batch: classes on the third axis from the end), in
        member order → the ensemble's output of the same shape (the class docstring).

        Taken one at a time, so besides the running total only one member's output is held; the same rule serves
        images, batches of images and streamed raster bands (`predict_raster`).
        """
        total: torch.Tensor | None = None
        for probs, weight in zip(outputs, self.weights):
            weight = float(weight)
            if self.method in ("mean", "weighted"):
                part = probs * weight
            elif self.method == "vote":
                part = torch.zeros_like(probs).scatter_(-3, probs.argmax(-3, keepdim=True), weight)
            else:
                part = probs.argmax(-3).double() * weight
            total = part if total is None else total.add_(part)
        if self.method != "floor_mean":
            return total
        label = torch.floor(total + 1e-6).long()  # the epsilon absorbs rounding in the weight sum
        return (torch.arange(self.spec.num_classes)[:, None, None] == label.unsqueeze(-3)).float()

    def predict_proba(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """H×W×C image → K×H×W float32: (weighted) mean probabilities, vote shares, or one-hot `floor_mean`."""
        return self.predict_proba_batch([image], source)[0]

    def predict_proba_batch(self, images: Sequence[np.ndarray], source: str = "image") -> np.ndarray:
        """N images of one size → N×K×H×W float32: one batched forward per member (`Predictor.predict_proba_batch`),
        combined as they come."""
        return self.combine(torch.from_numpy(m.predict_proba_batch(images, source)) for m in self.members).numpy()

    def predict_raster(self, src: Path | Sequence[Path], dst: Path, **options: Any) -> RasterResult:
        """Stream a raster of any size through every member (the first member's mode) and write the combined
        outputs; `src` and `options` as in `segwise.inference.predict_raster`."""
        return predict_raster([m.raster_model() for m in self.members], src, dst, mode=self.members[0].mode,
                              combine=self.combine, device=self.device, **options)

    def labels(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Argmax of the combined output (for `vote`: ties → lowest class), or `P(class 1) >= threshold`."""
        return self.members[0].labels(probs, threshold)

    def predict(self, image: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """H×W×C image → H×W class indices."""
        return self.labels(self.predict_proba(image), threshold)
