"""`segwise plan`: a fingerprint of the training split and the machine → a commented training config.

nnU-Net's idea for any image segmentation data: every choice is a small rule of the fingerprint (crop, loss, class
weights, sampling, augmentation), and the rules that depend on the hardware (batch size, encoder, epochs) use a
measured forward/backward step of the chosen model on the chosen device, not a guess.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from segwise.config import Config, DataConfig
from segwise.data.readers import find_split, split_path
from segwise.data.validate import validate_samples
from segwise.errors import ConfigError, TrainingError
from segwise.tasks.semantic.data import build_class_map, with_dataset_defaults

RARE_SHARE = 0.05
"""A class under this share of the labelled pixels is rare: Dice, class weights and rare-class crops."""
SMALL_OBJECT = 32 * 32
"""Objects under this many pixels are small (COCO's rule)."""
MANY_SMALL = 0.5
"""Many small objects: at least this share of the objects (the dominant class left out) is small."""
CONTEXT = 4
"""A crop side holds a typical object this many times over: the object and its surroundings."""
MIN_CROP, MAX_CROP = 256, 512
BATCH_FLOOR = 4
"""Fewer samples per optimiser step make the gradient (and BatchNorm) noisy: gradients are accumulated up to it."""
MAX_BATCH = 16
HEADROOM = 1.5
"""Measured activation bytes × this = the memory a sample is given (allocator slack, the backward pass's buffers)."""
MODEL = "unet"
ENCODERS = ("resnet50", "resnet34", "resnet18")
"""Candidates, largest first: the largest one that trains MIN_EPOCHS within the budget is chosen."""
MIN_EPOCHS = 30
MIN_STEPS = 400
"""Optimiser steps a run needs to get anywhere from random init: a short budget trades crop and batch for steps."""
STEP_OVERHEAD = 1.5
"""A real training step costs this much more than the measured forward/backward/update of random tensors:
decoding, augmentation, the loss's extra terms, validation and logging (0.27-0.30 s vs 0.19 s per 256² sample of
U-Net resnet18 on 2 CPU cores, benchmarks/plan_compare.py)."""
TIMED_STEPS = 3
"""Steps timed per measurement; their median is the step time (a single step on a CPU can be off by half)."""
TRAIN_SHARE = 0.8
"""Share of the budget spent on training steps; the rest goes to validation and start-up."""
RARE_CROPS = 1 / 3
"""Share of crops placed around rare-class pixels (nnU-Net oversamples foreground in a third of its patches)."""
VERTICAL = 0.5
"""Classes this far from an even split between the upper and lower image halves mean upright scenes (streets)."""


@dataclass
class Fingerprint:
    """What the rules read from a training split: sizes, bands, class shares, object sizes and the label layout."""

    sizes: Counter
    channels: int
    dtypes: set[str]
    class_names: list[str]
    class_pixels: np.ndarray
    images_per_class: np.ndarray
    object_areas: dict[int, list[int]] = field(default_factory=dict)
    ignore_pixels: int = 0
    ignore_border_pixels: int = 0
    upper_half_pixels: np.ndarray | None = None

    @classmethod
    def of(cls, data: DataConfig) -> Fingerprint:
        """Read the training split of `data` once (the data check, plus object sizes and layout)."""
        data = with_dataset_defaults(data)
        samples = find_split(data.format, split_path(data.format, data.root, data.train_split), data.extra_channels)
        class_map = build_class_map(data, samples)
        report = validate_samples(samples, class_map, shapes=True)
        shapes = report.shapes
        return cls(report.sizes, report.channels, report.dtypes, data.class_names or class_map.default_names(),
                   report.class_pixel_counts, report.images_per_class, shapes.object_areas, report.ignore_pixels,
                   shapes.ignore_border_pixels, shapes.upper_half_pixels)

    @property
    def num_images(self) -> int:
        return sum(self.sizes.values())

    @property
    def num_classes(self) -> int:
        return len(self.class_pixels)

    @property
    def shares(self) -> np.ndarray:
        total = self.class_pixels.sum()
        return self.class_pixels / total if total else np.zeros(self.num_classes)

    @property
    def rare_classes(self) -> list[int]:
        return [int(c) for c in np.flatnonzero((self.shares > 0) & (self.shares < RARE_SHARE))]

    @property
    def image_side(self) -> int:
        """The shorter side of the smaller images (10th percentile): what a crop can hold without padding."""
        sides = np.repeat([min(size) for size in self.sizes], list(self.sizes.values()))
        return int(np.percentile(sides, 10)) if len(sides) else 0

    def _object_list(self) -> np.ndarray:
        """Areas of every object of every class but the dominant one (usually background, one big region)."""
        dominant = int(np.argmax(self.class_pixels)) if self.num_classes else -1
        areas = [a for c, found in self.object_areas.items() if c != dominant for a in found]
        return np.asarray(areas, np.int64)

    @property
    def object_side(self) -> float:
        """Side of the median object (square root of its area), 0 without objects."""
        areas = self._object_list()
        return float(math.sqrt(np.median(areas))) if len(areas) else 0.0

    @property
    def small_object_share(self) -> float:
        areas = self._object_list()
        return float((areas < SMALL_OBJECT).mean()) if len(areas) else 0.0

    @property
    def rgb(self) -> bool:
        return self.channels == 3 and self.dtypes <= {"uint8"}

    @property
    def vertical_layout(self) -> float:
        """0 = classes spread evenly over the upper and lower halves (aerial tiles), 1 = each class on one side."""
        if self.upper_half_pixels is None:
            return 0.0
        common = self.shares >= 0.01
        upper = self.upper_half_pixels[common] / np.maximum(self.class_pixels[common], 1)
        return float(np.abs(2 * upper - 1).max()) if common.any() else 0.0

    @property
    def border_ignore_share(self) -> float:
        """Share of the ignore pixels that touch labelled ones (thin unlabelled borders: uncertain boundaries)."""
        return self.ignore_border_pixels / self.ignore_pixels if self.ignore_pixels else 0.0

    def summary(self) -> list[str]:
        """The fingerprint in a few lines (the plan's header)."""
        sides = [min(s) for s in self.sizes]
        shares = ", ".join(f"{name} {share:.1%}" for name, share in zip(self.class_names, self.shares))
        seen = ", ".join(f"{name} {n}" for name, n in zip(self.class_names, self.images_per_class))
        return [f"{self.num_images} training images, {self.channels} channels ({', '.join(sorted(self.dtypes))}), "
                f"shorter side {min(sides, default=0)}..{max(sides, default=0)} px",
                f"class pixel shares: {shares}", f"images holding each class: {seen}",
                f"objects: median {self.object_side ** 2:.0f} px, {self.small_object_share:.0%} under 32x32 px "
                "(dominant class left out)",
                f"ignore pixels: {self.ignore_pixels:,}, {self.border_ignore_share:.0%} of them on label borders"]


@dataclass
class Choice:
    """One config key the plan sets, and why."""

    key: str
    value: Any
    why: str


# ---- the rules: pure functions of the fingerprint (and of measured costs) ------------------------------------------
def crop_rule(fp: Fingerprint, max_side: int = MAX_CROP) -> Choice:
    """A multiple of 32 that holds a typical object CONTEXT times over; with many small objects, the largest crop,
    so that each step sees many of them; never beyond the images' shorter side."""
    limit = max(32, min(max_side, fp.image_side // 32 * 32))
    if fp.small_object_share >= MANY_SMALL:
        return Choice("data.crop_size", limit, f"{fp.small_object_share:.0%} of the objects are under 32x32 px: the "
                      f"largest crop ({limit}, bounded by the images and {max_side}) so each step sees many of them "
                      "at full resolution")
    want = max(MIN_CROP, -(-int(CONTEXT * fp.object_side) // 32) * 32)
    crop = min(want, limit)
    return Choice("data.crop_size", crop, f"the median object is {fp.object_side:.0f} px across: {CONTEXT}x that "
                  f"(at least {MIN_CROP}), a multiple of 32, at most the images' shorter side ({fp.image_side})")


def smallest_crop(fp: Fingerprint) -> int:
    """The least a short budget may shrink the crop to: twice the median object, at least 64 px, a multiple of 32."""
    return max(64, -(-int(2 * fp.object_side) // 32) * 32)


def samples_in_budget(seconds_per_sample: float, budget: float) -> int:
    """Training samples TRAIN_SHARE of the budget holds at a measured step time (with STEP_OVERHEAD)."""
    return int(TRAIN_SHARE * budget // max(seconds_per_sample * STEP_OVERHEAD, 1e-9))


def budget_crop_rule(side: int, seconds_per_sample: float, budget: float, floor: int) -> Choice | None:
    """When the budget holds fewer than MIN_STEPS steps of BATCH_FLOOR samples at this crop, the next smaller crop
    to try (half, a multiple of 32, not under `floor`); None when the crop fits the budget or is at the floor."""
    samples = samples_in_budget(seconds_per_sample, budget)
    smaller = max(floor, side // 64 * 32)
    if samples >= MIN_STEPS * BATCH_FLOOR or smaller >= side:
        return None
    return Choice("data.crop_size", smaller, f"{budget / 60:.1f} min hold {samples} samples of {side}x{side} "
                  f"({seconds_per_sample * STEP_OVERHEAD:.2f} s each), fewer than {MIN_STEPS} steps of {BATCH_FLOOR}: "
                  "halved, for more steps")


def augment_rule(fp: Fingerprint) -> list[Choice]:
    """Orientation-free data (aerial tiles, multispectral rasters) get every rotation and flip; upright scenes get
    horizontal flips and rescaling; non-RGB data gets no colour op."""
    if not fp.rgb:
        why = (f"{fp.channels} channels of {', '.join(sorted(fp.dtypes))}: geometric ops only (rot90 + transpose), "
               "no colour op on non-RGB bands")
        return [Choice("data.augment", "safe", why), Choice("data.hflip", True, "with rot90: every orientation"),
                Choice("data.vflip", True, "with rot90: every orientation"),
                Choice("data.scale_range", None, "rasters have one ground resolution: no rescaling")]
    if fp.vertical_layout >= VERTICAL:
        why = (f"classes keep to the upper or lower half ({fp.vertical_layout:.2f} >= {VERTICAL}): an upright "
               "scene, so no rotation")
        return [Choice("data.augment", "none", why), Choice("data.hflip", True, "left and right look alike"),
                Choice("data.vflip", False, "upright scene: up is up"),
                Choice("data.scale_range", [0.5, 2.0], "objects appear at every distance (street-scene recipe)")]
    why = f"no up or down in the labels (layout {fp.vertical_layout:.2f} < {VERTICAL}): aerial-like, rot90 + transpose"
    return [Choice("data.augment", "safe", why), Choice("data.hflip", True, "with rot90: every orientation"),
            Choice("data.vflip", True, "with rot90: every orientation"),
            Choice("data.scale_range", None, "one ground resolution: no rescaling")]


def class_weights(shares: np.ndarray) -> list[float]:
    """sqrt(median share / share), in [0.25, 10]; classes never seen keep 1."""
    present = shares[shares > 0]
    median = float(np.median(present)) if len(present) else 1.0
    return [round(float(np.clip(math.sqrt(median / s), 0.25, 10.0)), 3) if s > 0 else 1.0 for s in shares]


def loss_rule(fp: Fingerprint) -> list[Choice]:
    """CE; + Dice when a class is rare (under RARE_SHARE of the pixels); + small-object mining (som) when most
    objects are small; class weights from the pixel shares when a class is rare."""
    terms, why = ["ce"], ["cross-entropy"]
    rare = fp.rare_classes
    if rare:
        rarest = min(rare, key=lambda c: fp.shares[c])
        terms.append("0.5*dice")
        why.append(f"Dice: {fp.class_names[rarest]} is {fp.shares[rarest]:.1%} of the pixels (< {RARE_SHARE:.0%})")
    if fp.small_object_share >= MANY_SMALL:
        terms.append("som")
        why.append(f"som: {fp.small_object_share:.0%} of the objects are under 32x32 px (>= {MANY_SMALL:.0%})")
    if not rare:
        weights = Choice("loss.class_weights", None, f"every class is at least {RARE_SHARE:.0%} of the pixels")
    else:
        weights = Choice("loss.class_weights", class_weights(fp.shares), "sqrt(median share / class share), in "
                         f"[0.25, 10]: rare classes ({', '.join(fp.class_names[c] for c in rare)}) weigh more")
    return [Choice("loss.name", " + ".join(terms), "; ".join(why)), weights]


def sampler_rule(fp: Fingerprint, crop: int) -> list[Choice]:
    """A third of the crops around rare-class pixels, when there are rare classes and crops smaller than images."""
    rare = fp.rare_classes
    if not rare:
        return [Choice("data.rare_class_crops", 0.0, "no rare class: plain random crops")]
    if crop >= max(max(s) for s in fp.sizes):
        return [Choice("data.rare_class_crops", 0.0, "crops hold whole images: nothing to steer")]
    names = ", ".join(fp.class_names[c] for c in rare)
    return [Choice("data.rare_class_crops", round(RARE_CROPS, 3), f"a third of the crops around a pixel of {names} "
                   "(rare): seen more often than their pixel share"),
            Choice("data.rare_classes", rare, f"classes under {RARE_SHARE:.0%} of the pixels")]


def batch_rule(fixed_bytes: int, bytes_per_sample: int, memory: int, num_images: int,
               cap: int = MAX_BATCH, samples: int | None = None) -> list[Choice]:
    """As many samples as the memory holds (measured bytes × HEADROOM), at most `cap`, the image count and what
    leaves MIN_STEPS steps in the budget's `samples` (never under 2, for BatchNorm); gradients accumulated up to
    BATCH_FLOOR samples per step only when the memory is what holds the batch back."""
    fits = int((memory - fixed_bytes) // max(1, int(bytes_per_sample * HEADROOM)))
    for_steps = max(2, samples // MIN_STEPS) if samples is not None else MAX_BATCH
    batch = max(1, min(fits, cap, max(1, num_images), for_steps))
    why = (f"{bytes_per_sample / 2**20:.0f} MiB per sample measured (x{HEADROOM}) + {fixed_bytes / 2**20:.0f} MiB of "
           f"weights and optimiser state in {memory / 2**30:.1f} GiB: {fits} fit, at most {cap} and the "
           "number of images")
    if samples is not None:
        why += f"; the budget holds {samples} samples: at most {for_steps} per step for {MIN_STEPS} steps"
    memory_bound = fits < min(cap, num_images, for_steps)
    accumulate = -(-BATCH_FLOOR // batch) if batch < BATCH_FLOOR and memory_bound else 1
    more = (f"batch {batch} < {BATCH_FLOOR}: gradients of {accumulate} batches per step" if accumulate > 1
            else f"batch {batch} >= {BATCH_FLOOR}: one batch per step" if batch >= BATCH_FLOOR
            else "one batch per step: the budget needs steps more than large batches")
    return [Choice("data.batch_size", batch, why), Choice("trainer.accumulate", accumulate, more)]


def model_rule(seconds_per_sample: dict[str, float], num_images: int, budget: float) -> list[Choice]:
    """The largest encoder whose measured step time trains MIN_EPOCHS epochs within TRAIN_SHARE of the budget; the
    smallest when none does."""
    needed = MIN_EPOCHS * num_images
    fits = [e for e in ENCODERS if samples_in_budget(seconds_per_sample[e], budget) >= needed]
    encoder = fits[0] if fits else ENCODERS[-1]
    times = ", ".join(f"{e} {seconds_per_sample[e] * 1000:.0f} ms" for e in ENCODERS)
    why = (f"per sample {times}: {encoder} is the largest to train {MIN_EPOCHS} epochs of {num_images} images in "
           f"{TRAIN_SHARE:.0%} of {budget / 60:.0f} min" if fits else
           f"per sample {times}: none trains {MIN_EPOCHS} epochs in {budget / 60:.0f} min, so the smallest")
    return [Choice("model.name", MODEL, "U-Net: a strong default at every object size"),
            Choice("model.encoder", encoder, why)]


def length_rule(seconds_per_sample: float, num_images: int, budget: float) -> list[Choice]:
    """Epochs = what TRAIN_SHARE of the budget holds at the measured step time (1 to 1000), so the LR schedule
    runs its course; the budget itself stops training should the machine turn out slower than measured."""
    epochs = int(np.clip(samples_in_budget(seconds_per_sample, budget) // max(num_images, 1), 1, 1000))
    return [Choice("trainer.max_epochs", epochs, f"{TRAIN_SHARE:.0%} of {budget / 60:.1f} min at "
                   f"{seconds_per_sample * STEP_OVERHEAD * num_images:.1f} s per epoch"),
            Choice("trainer.max_time", budget, "the budget (seconds): training stops there, validated and "
                   "checkpointed, if the epochs take longer than measured")]


def eval_hint(fp: Fingerprint, crop: int) -> str:
    """Sliding windows of the training crop for images larger than it (eval settings are flags, not config)."""
    if max(max(s) for s in fp.sizes) <= crop:
        return "eval: whole images (they are no larger than the crop): segwise eval RUN DATA/val"
    return (f"eval: windows of the training crop: segwise eval RUN DATA/val --mode slide --window {crop} "
            "--overlap 0.25 --blend gaussian")


# ---- measurement ------------------------------------------------------------------------------------------------
@dataclass
class StepCost:
    """One measured training step: time per sample, bytes of weights + gradients + AdamW state, and the bytes of
    activations autograd saved for the backward pass, per sample."""

    seconds_per_sample: float
    fixed_bytes: int
    bytes_per_sample: int

    def one_sample_bytes(self) -> float:
        """Memory a step of one sample takes: the fixed bytes and its activations with HEADROOM."""
        return self.fixed_bytes + self.bytes_per_sample * HEADROOM


def measure_step(encoder: str, in_channels: int, num_classes: int, crop: int, device: str,
                 batch: int = 2) -> StepCost:
    """Real forward/backward/AdamW steps of `MODEL` + `encoder` at `crop`: a warm-up, one with autograd's saved
    tensors counted, then TIMED_STEPS timed, of which the median counts (one timed step on a CPU was off by 1.6x in
    the plan comparison: the plan then trained 9 of 20 minutes)."""
    import torch
    import torch.nn.functional as F

    from segwise.models import create_model

    torch.manual_seed(0)
    model = create_model(MODEL, encoder=encoder, in_channels=in_channels, classes=num_classes).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters())
    images = torch.randn(batch, in_channels, crop, crop, device=device)
    target = torch.randint(num_classes, (batch, crop, crop), device=device)
    saved = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    def step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(model(images), target).backward()
        optimizer.step()

    step()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    times = []
    for _ in range(TIMED_STEPS):
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return StepCost(seconds / batch, 4 * weights, saved[0] // batch)


def confirmed_step(encoder: str, in_channels: int, num_classes: int, crop: int, device: str,
                   batch: int) -> tuple[int, StepCost | None]:
    """On CUDA, the planned batch tried for real: when it runs out of memory, a binary search between the largest
    batch that ran and the smallest that did not finds the largest that runs; that batch and its cost (a GPU's time
    per sample falls with the batch). On a CPU the measured estimate stands: (batch, None)."""
    if not device.startswith("cuda"):
        return batch, None
    import torch

    runs, fails, trial, costs = 0, batch + 1, batch, {}
    while fails - runs > 1:
        try:
            costs[trial] = measure_step(encoder, in_channels, num_classes, crop, device, trial)
            runs = trial
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            fails = trial
        trial = (runs + fails) // 2
    if not runs:
        raise TrainingError(f"one training sample of {crop}x{crop} px does not fit on {device} with a U-Net on "
                            f"{encoder}; plan for less memory (--memory) or free the device")
    return runs, costs[runs]


def machine_memory(device: str) -> int:
    """What training may use: 90 % of the GPU's memory, or half the free RAM on a CPU."""
    if device.startswith("cuda"):
        import torch

        return int(0.9 * torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return int(0.5 * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def default_device(accelerator: str = "auto") -> str:
    """The device a plan measures on: the trainer's accelerator, CUDA when `auto` finds one."""
    import torch

    if accelerator in ("gpu", "cuda") or accelerator == "auto" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


# ---- the plan ---------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """The chosen keys with their reasons, and header notes (fingerprint, measurements, eval settings)."""

    choices: list[Choice]
    notes: list[str]

    def config(self) -> dict[str, Any]:
        """The nested config dict (what `load_config(base=...)` takes)."""
        raw: dict[str, Any] = {}
        for choice in self.choices:
            section, key = choice.key.split(".")
            raw.setdefault(section, {})[key] = choice.value
        return raw

    def to_yaml(self) -> str:
        """A segwise config file with the reason of every key beside it."""
        lines = [f"# {note}" for note in self.notes]
        section = None
        for choice in self.choices:
            head, key = choice.key.split(".")
            if head != section:
                lines.append(f"{head}:")
                section = head
            value = yaml.safe_dump(choice.value, default_flow_style=True, width=10**6).strip()
            lines.append(f"  {key}: {value.removesuffix('...').strip()}  # {choice.why}")
        return "\n".join(lines) + "\n"

    def table(self) -> str:
        """key | value | why, one row per choice (what `train --auto` prints)."""
        rows = [(c.key, str(c.value), c.why) for c in self.choices]
        key_width = max(len(r[0]) for r in rows)
        value_width = min(30, max(len(r[1]) for r in rows))
        return "\n".join(f"{k:<{key_width}}  {v:<{value_width}}  {w}" for k, v, w in rows)


def grouped(choices: Sequence[Choice]) -> list[Choice]:
    """Choices ordered by section (as a config file lists them), keeping their order within a section."""
    order = {section: i for i, section in enumerate(dict.fromkeys(c.key.split(".")[0] for c in choices))}
    return sorted(choices, key=lambda c: order[c.key.split(".")[0]])


def make_plan(config: Config, budget: float, device: str | None = None, memory: int | None = None) -> Plan:
    """Fingerprint the training split of `config.data`, measure the candidates on `device` and apply every rule."""
    device = device or default_device(config.trainer.accelerator)
    memory = memory or machine_memory(device)
    fp = Fingerprint.of(config.data)
    crop = crop_rule(fp)
    side = crop.value
    costs = {e: measure_step(e, fp.channels, fp.num_classes, side, device) for e in ENCODERS}
    model = model_rule({e: c.seconds_per_sample for e, c in costs.items()}, fp.num_images, budget)
    cost = costs[model[1].value]
    while smaller := budget_crop_rule(side, cost.seconds_per_sample, budget, smallest_crop(fp)):
        crop, side = smaller, smaller.value
        cost = measure_step(model[1].value, fp.channels, fp.num_classes, side, device)
    while side > 64 and cost.one_sample_bytes() > memory:  # not even one sample fits
        side = side // 64 * 32
        cost = measure_step(model[1].value, fp.channels, fp.num_classes, side, device)
        crop = Choice("data.crop_size", side, f"halved until one sample fits in {memory / 2**30:.1f} GiB")
    if cost.one_sample_bytes() > memory:
        raise ConfigError(f"{memory / 2**20:.0f} MiB of memory (--memory) do not hold a U-Net on {model[1].value} "
                          f"training one {side}x{side} sample ({cost.one_sample_bytes() / 2**20:.0f} MiB measured: "
                          "weights, optimiser state and activations); give more memory, or leave --memory out to use "
                          "half the free RAM (90 % of a GPU's)")
    samples = samples_in_budget(cost.seconds_per_sample, budget)
    batch = batch_rule(cost.fixed_bytes, cost.bytes_per_sample, memory, fp.num_images, samples=samples)
    ran, at_batch = confirmed_step(model[1].value, fp.channels, fp.num_classes, side, device, batch[0].value)
    if ran < batch[0].value:
        batch = batch_rule(cost.fixed_bytes, cost.bytes_per_sample, memory, fp.num_images, cap=ran, samples=samples)
    cost = at_batch or cost
    choices = [Choice("data.root", str(Path(config.data.root).resolve()), "the data set planned for"), crop,
               Choice("data.image_size", None, "no resizing: objects keep their pixel size"),
               *augment_rule(fp), *sampler_rule(fp, side),
               *batch, *model,
               Choice("model.encoder_weights", None, "random init: no download; give 'imagenet' if this machine "
                      "has the weights"),
               *loss_rule(fp), *length_rule(cost.seconds_per_sample, fp.num_images, budget),
               Choice("trainer.accelerator", "gpu" if device.startswith("cuda") else "cpu",
                      f"measured on {device}")]
    notes = ["segwise plan: every value below was chosen by a rule; edit freely, then `segwise train --config` it",
             *fp.summary(), f"budget {budget / 60:.1f} min on {device}, {memory / 2**30:.1f} GiB",
             eval_hint(fp, side)]
    return Plan(grouped(choices), notes)
