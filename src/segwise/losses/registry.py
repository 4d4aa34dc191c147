"""The loss registry: losses selectable by name and combinable with a spec such as ``"ce + 0.5*dice"``."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from segwise.errors import ConfigError

LossFactory = Callable[..., nn.Module]

LOSSES: dict[str, LossFactory] = {}
"""Loss name → factory called with keyword options (``num_classes``, ``ignore_index``, ``class_weights``, ...)."""

_NAME = r"[a-z_][a-z0-9_]*"
_TERM = re.compile(
    rf"\s*(?:(?P<weight>(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*\*\s*)?(?P<name>{_NAME})\s*", re.IGNORECASE
)
_TERM_SPLIT = re.compile(r"(?<![0-9][eE])\+")


def register_loss(name: str) -> Callable[[LossFactory], LossFactory]:
    """Add a loss factory to ``LOSSES`` under ``name`` so that loss specs can select it."""
    if not re.fullmatch(_NAME, name):
        raise ValueError(f"loss name {name!r} must be lower-case letters, digits and '_' (not starting with a digit)")

    def decorator(factory: LossFactory) -> LossFactory:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered by {LOSSES[name]!r}")
        LOSSES[name] = factory
        return factory

    return decorator


def _spec_error(spec: str, problem: str) -> ConfigError:
    return ConfigError(
        f"loss.name: {problem} in {spec!r}; write terms as 'weight*name' joined by '+', e.g. 'ce + 0.5*dice'"
    )


def parse_loss_spec(spec: str) -> list[tuple[float, str]]:
    """Parse ``"ce + 0.5*dice"`` into ``[(1.0, "ce"), (0.5, "dice")]``, naming the bad term on error."""
    known = ", ".join(sorted(LOSSES))
    terms: list[tuple[float, str]] = []
    for raw in _TERM_SPLIT.split(spec):
        if not raw.strip():
            raise _spec_error(spec, "empty term")
        match = _TERM.fullmatch(raw)
        if match is None:
            raise _spec_error(spec, f"cannot parse term {raw.strip()!r}")
        name = match["name"].lower()
        weight = float(match["weight"]) if match["weight"] else 1.0
        if name not in LOSSES:
            close = difflib.get_close_matches(name, LOSSES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            raise ConfigError(f"loss.name: unknown loss {name!r} in {spec!r}{hint} Known: {known}")
        if weight <= 0:
            raise ConfigError(
                f"loss.name: weight of {name!r} in {spec!r} is {weight:g}; use a weight > 0 or drop the term"
            )
        if any(name == seen for _, seen in terms):
            raise ConfigError(f"loss.name: {name!r} appears twice in {spec!r}; write it once with the summed weight")
        terms.append((weight, name))
    return terms


def loss_options() -> set[str]:
    """Every keyword option some registered loss factory takes (besides num_classes and ignore_index)."""
    return {name for factory in LOSSES.values() for name, p in inspect.signature(factory).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY} - {"num_classes", "ignore_index"}


def check_loss_options(options: dict[str, object]) -> None:
    """Refuse `loss.*` keys that no registered loss takes, suggesting the closest known option."""
    known = loss_options()
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean 'loss.{close[0]}'?" if close else ""
            raise ConfigError(f"unknown key 'loss.{key}': no registered loss takes it.{hint} "
                              f"Loss options: {', '.join(sorted(known))}")


class WeightedLoss(nn.Module):
    """Weighted sum of named losses, computed in float32 outside autocast; keeps detached per-term values."""

    def __init__(self, terms: Sequence[tuple[float, str, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("WeightedLoss needs at least one (weight, name, loss) term")
        self.terms: list[tuple[float, str]] = [(weight, name) for weight, name, _ in terms]
        self.losses = nn.ModuleDict({name: loss for _, name, loss in terms})
        self.last_values: dict[str, Tensor] = {}

    @property
    def spec(self) -> str:
        """Canonical spec string, e.g. ``"1*ce + 0.5*dice"``."""
        return " + ".join(f"{weight:g}*{name}" for weight, name in self.terms)

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return ``Σ weight·loss`` and store each unweighted term (detached, on device) in ``last_values``."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            values = {name: self.losses[name](logits, target) for _, name in self.terms}
            total = sum(weight * values[name] for weight, name in self.terms)
        self.last_values = {name: value.detach() for name, value in values.items()}
        return total


def build_loss(spec: str, num_classes: int, ignore_index: int = 255, **options) -> WeightedLoss:
    """Build the loss described by ``spec`` (e.g. ``"ce + 0.5*dice"``); ``options`` go to every term's factory."""
    if num_classes < 2:
        raise ConfigError(
            f"num_classes: got {num_classes}; losses need K >= 2 softmax classes (a binary problem uses K = 2)"
        )
    terms = parse_loss_spec(spec)
    return WeightedLoss(
        [
            (weight, name, LOSSES[name](num_classes=num_classes, ignore_index=ignore_index, **options))
            for weight, name in terms
        ]
    )
