"""Config of trimap segmentation (`segwise trimap train`): the pixel sections with the trimap ViT's recipe as
defaults, and the `trimap:` section (matting targets and prompt-mask corruption)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from segwise.config import PixelConfig, StrictModel


class TrimapOptions(StrictModel):
    """Matting targets and prompt-mask corruption probabilities."""

    trimap_dir: str | None = Field(None, description="folder of GT trimaps beside original/ and mask/ (default trimap/)")
    unknown_band: int = Field(0, ge=0, description="without GT trimaps: widen the 15<alpha<230 band by N px a side")
    prompt_threshold: int = Field(30, ge=1, le=255, description="prompt mask = alpha >= this (the trimap ViT: 30)")
    edge_noise: float = Field(0.2, ge=0, le=1, description="probability of erode/dilate/gradient prompt noise")
    contour_jitter: float = Field(0.5, ge=0, le=1, description="probability of a jittered polygon prompt")
    hole_drop: float = Field(0.2, ge=0, le=1, description="probability of a hole cut at the prompt's boundary")


class TrimapConfig(PixelConfig):
    """The trimap ViT's recipe (Adam 1e-4, NFL + 0.1·DT, LR ÷10 at epoch 50 of 55) under every unset key."""

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "model": {"name": "trimap_vit"},
        "loss": {"name": "nfl + 0.1*dt"},
        "optimizer": {"name": "Adam", "lr": 1e-4, "weight_decay": 0.0},
        "scheduler": {"name": "step", "step_epochs": 50, "gamma": 0.1},
        "trainer": {"max_epochs": 55},
    }

    trimap: TrimapOptions = Field(default_factory=TrimapOptions)
