"""Config of trimap segmentation (`segwise trimap train`): the pixel sections with the trimap ViT's recipe as
defaults, and the `trimap:` section (matting targets and prompt-mask corruption)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from segwise.config import PixelConfig, StrictModel


class TrimapOptions(StrictModel):
    """Matting data (layout, training sets), targets and prompt-mask corruption probabilities."""

    format: str = Field("auto", description="matting layout of every split: auto (from the folder names), folder, "
                                            "composition1k, p3m500, aim500 or am200")
    train_sets: list[str] = Field(default_factory=list, description="training sets, concatenated (names under "
                                  "data.root or paths); empty: data.train_split")
    trimap_dir: str | None = Field(None, description="folder of GT trimaps beside the images and mattes (default: "
                                   "the layout's, trimap/ or Composition-1K's trimaps/, when present)")
    unknown_band: int = Field(0, ge=0, description="without GT trimaps: widen the 15<alpha<230 band by N px a side")
    prompt_threshold: int = Field(30, ge=1, le=255, description="prompt mask = alpha >= this (the trimap ViT: 30)")
    edge_noise: float = Field(0.2, ge=0, le=1, description="probability of erode/dilate/gradient prompt noise")
    contour_jitter: float = Field(0.5, ge=0, le=1, description="probability of a jittered polygon prompt")
    hole_drop: float = Field(0.2, ge=0, le=1, description="probability of a hole cut at the prompt's boundary")

    @field_validator("format")
    @classmethod
    def _known_layout(cls, value: str) -> str:
        from segwise.data.matting_layouts import check_layout_name

        return check_layout_name(value)


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
