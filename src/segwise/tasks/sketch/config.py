"""Config of sketch segmentation (`segwise sketch train-embed/train`): the data, embedder and segmenter sections and
the task's own optimizer/trainer defaults.

Imports only pydantic and the shared config, so the CLI can check a config before loading the training stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from segwise.config import StrictModel, TaskConfig


class SketchDataConfig(StrictModel):
    """Where the sketches come from and how strokes are drawn (as in ContextSeg's data preparation)."""

    root: Path | None = Field(None, description="SPG folder (splits.json, or <category>.ndjson files), CreativeSketch "
                                                "raw_data, a `sketch prepare` folder or one file")
    categories: list[str] | None = Field(None, description="None = every category of the source")
    train_split: str = "train"
    val_split: str | None = "valid"
    split_scheme: str = Field("80/10/10", description="split of a folder of per-category files: train/valid/test "
                                                      "percentages, or 'official' (700 train / rest test)")
    split_seed: int = Field(0, ge=0, description="seed of that split (same seed, same split)")
    max_per_category: int | None = Field(None, ge=1, description="use only the first N training sketches of each")
    max_val_per_category: int | None = Field(None, ge=1)
    canvas: int = Field(256, ge=16, description="stage 1 image side; stage 2 takes the embedder's")
    line_width: int = Field(2, ge=1, description="pen width of stroke images (stage 1; stage 2 takes the embedder's)")
    df_k: float = Field(0.01, gt=0, description="distance field 1/(1 + k·e^d); 0.01 official, 0.001 paper")
    augment_p: float = Field(0.5, ge=0, le=1, description="probability of the shared affine / stroke dropping")
    batch_size: int = Field(8, ge=1)
    val_batch_size: int | None = Field(None, ge=1)
    num_workers: int = Field(2, ge=0)


class EmbedConfig(StrictModel):
    """Stage-1 stroke autoencoder: r = root_features, `depth` 2× poolings (canvas must be a multiple of 2^depth)."""

    root_features: int = Field(32, ge=1)
    depth: int = Field(5, ge=1)
    hidden: int = Field(4096, ge=1)
    code_size: int = Field(256, ge=2)
    df_weight: float = Field(0.5, ge=0, description="γ in L_recon + γ·L_df")


class TransformerConfig(StrictModel):
    d_model: int = Field(256, ge=2)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    d_ff: int = Field(2048, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerConfig:
        if self.d_model % self.num_heads or self.d_model % 2:
            raise ValueError(f"segment.transformer.d_model = {self.d_model} must be even and divisible by "
                             f"num_heads = {self.num_heads}")
        return self


class SegmentConfig(StrictModel):
    """Stage 2: the context transformer (or the no-context `stroke_classifier` baseline) and its schedule."""

    model: Literal["contextseg", "stroke_classifier"] = "contextseg"
    transformer: TransformerConfig = Field(default_factory=TransformerConfig)
    classifier_hidden: int = Field(256, ge=1)
    focal_gamma: float = Field(2.0, ge=0)
    teacher_forcing_start: float = Field(1.0, ge=0, le=1)
    teacher_forcing_end: float = Field(0.2, ge=0, le=1)
    teacher_forcing_steps: int = Field(50_000, ge=1, description="steps of the linear decay start → end")
    threshold: float = Field(0.5, gt=0, lt=1, description="membership probability that claims a stroke")


class SketchConfig(TaskConfig):
    """Both ContextSeg stages; `segwise sketch train-embed/train` read it from YAML, flags and `--set`.

    Defaults: ContextSeg's stage-2 recipe (Adam 1e-4, β 0.9/0.98, ε 1e-9; constant LR; monitor the C-metric), merged
    under whatever the YAML/flags give, so `--set trainer.max_steps=10` keeps the other defaults.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "optimizer": {"name": "Adam", "lr": 1e-4, "weight_decay": 0.0, "args": {"betas": [0.9, 0.98], "eps": 1e-9}},
        "scheduler": {"name": "constant"},
        "trainer": {"monitor": "val/C", "monitor_mode": "max", "max_epochs": 50},
    }

    data: SketchDataConfig = Field(default_factory=SketchDataConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
