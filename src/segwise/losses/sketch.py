"""ContextSeg losses: the stroke-embedding loss (reconstruction + γ·distance field) and the focal membership BCE.

Neither fits the pixel-loss signature (logits N×K×H×W, class-index target), so neither is in the pixel-loss registry
(`--loss` cannot name them): the sketch task builds them from its own config section.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from segwise.errors import ConfigError


class EmbeddingLoss(nn.Module):
    """L_em = BCE(recon logits, ink) + γ·MSE(σ(df logits), DF): the paper's recon + γ·distance-field terms."""

    def __init__(self, df_weight: float = 0.5) -> None:
        super().__init__()
        if df_weight < 0:
            raise ConfigError(f"embed.df_weight: got {df_weight}; use a weight >= 0 "
                              "(0.5 in the ContextSeg PyTorch port)")
        self.df_weight = df_weight
        self.last_values: dict[str, Tensor] = {}

    def forward(self, recon: Tensor, df: Tensor, image: Tensor, target_df: Tensor) -> Tensor:
        """All four are N×1×H×W; `image` is 0/1 ink, `target_df` the distance field in (0, 1]."""
        with torch.autocast(device_type=recon.device.type, enabled=False):
            recon_loss = F.binary_cross_entropy_with_logits(recon.float(), image.float())
            df_loss = F.mse_loss(df.float().sigmoid(), target_df.float())
        self.last_values = {"recon": recon_loss.detach(), "df": df_loss.detach()}
        return recon_loss + self.df_weight * df_loss


class FocalMembershipLoss(nn.Module):
    """Focal BCE over the valid entries of a group×stroke membership matrix (target −1 = padding, ignored).

    Σ_valid (1 − p_t)^γ·BCE / #valid (paper Eq. 6); 0 with zero gradient when nothing is valid.
    """

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"segment.focal_gamma: got {gamma}; use a value >= 0 (2 in the paper, 0 = plain BCE)")
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            valid = target >= 0
            terms = sigmoid_focal_loss(logits.float(), target.clamp_min(0).float(), alpha=-1, gamma=self.gamma,
                                       reduction="none")
            return (terms * valid).sum() / valid.sum().clamp_min(1)
