"""What several test modules share: the path of the real data sets, a quick CPU config, fake-data writers and a
tiny network with known geometry. Fixtures live in conftest.py; everything importable lives here."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from torch import nn

from segwise.config import Config, load_config

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
"""Real data sets (with a SOURCE.md each); absent in a user's clone, so tests that need them skip."""


def quick_config(root: Path, log_dir: Path, name: str, *overrides: str) -> Config:
    """A CPU config small enough for tests; extra `key=value` overrides win."""
    base = [f"data.root={root}", f"run.log_dir={log_dir}", f"run.name={name}", "trainer.accelerator=cpu",
            "trainer.progress_bar=false", "data.num_workers=0", "data.batch_size=4", "model.encoder=resnet18",
            "trainer.log_every_steps=1"]
    return load_config(None, [*base, *overrides])


class ConvNet(nn.Module):
    """Translation-equivariant (stride 1, zero padding): two 3×3 convs, so each output sees a 5×5 neighbourhood."""

    input_stride = 1
    radius = 2

    def __init__(self, in_channels: int = 3, classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, classes, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4 * self.body(x)  # sharper softmax so differences are not hidden by flat probabilities


def write_geotiff(path: Path, pixels: np.ndarray, nodata: float | None = 0, block: int = 64) -> Path:
    bands, height, width = pixels.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=bands, dtype=pixels.dtype,
                       crs="EPSG:32633", transform=Affine(0.5, 0, 500000, 0, -0.5, 4100000), nodata=nodata,
                       tiled=True, blockxsize=block, blockysize=block) as dst:
        dst.write(pixels)
    return path


def save_untrained_trimap_run(directory: Path) -> Path:
    """An untrained one-block trimap ViT (32-px input, patch 4) saved as a run directory: enough to exercise what
    `segwise trimap predict/eval` read and write."""
    from segwise.models.spec import ModelSpec, save_model

    args = {"size": "tiny", "patch_size": 4, "img_size": 32, "depth": 1, "head_channels": 16, "upsample": "x1"}
    spec = ModelSpec("trimap_vit", None, args, 4, 3, ["background", "unknown", "foreground"],
                     [[0, 0, 0], [128, 128, 128], [255, 255, 255]])
    save_model(spec.build(), spec, directory)
    return directory


def rule_tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The parity fixtures' deterministic weight rule (../shared/reference/factseg_parity/README § 3; the ContextSeg
    and trimap fixtures use it too): a generator seeded by the parameter's name, float32 as it was applied."""
    g = torch.Generator().manual_seed(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    shape = tuple(shape)
    if name.endswith("num_batches_tracked"):
        return torch.zeros((), dtype=torch.int64)
    if name.endswith("running_mean"):
        return 0.1 * torch.randn(shape, generator=g)
    if name.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=g)
    if len(shape) >= 2:
        return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    if name.endswith("weight"):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    return 0.1 * torch.randn(shape, generator=g)


def save_untrained_unet_run(directory: Path, class_names: tuple[str, ...] = ("bg", "a", "b", "c"),
                            seed: int | None = None) -> Path:
    """An untrained 4-class RGB U-Net (timm's test ResNet, BatchNorm, stride 32) saved as a run directory: enough for
    what predict, eval and serve read and write. `seed` fixes its random weights."""
    from segwise.models.spec import ModelSpec, save_model

    spec = ModelSpec(name="unet", encoder="tu-test_resnet", args={"decoder_channels": [8, 8, 8, 8, 8]},
                     in_channels=3, num_classes=4, class_names=list(class_names),
                     palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], mean=[128.0] * 3, std=[64.0] * 3)
    if seed is not None:
        torch.manual_seed(seed)
    save_model(spec.build().eval(), spec, directory)
    return Path(directory)
