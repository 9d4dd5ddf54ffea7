"""The worked example of RAVE: a small image-to-image network trained with the guidance loss.

Φ(x) = x + g(x), g a three-layer per-pixel network (1x1 convolutions) whose last layer starts at zero (Φ
starts as the identity), on the frozen image encoder's normalised pixel tensors. Per pixel, g can change
colour and brightness but cannot draw: with 3x3 kernels and the same loss the network found adversarial
patterns (black images with red borders) that satisfy the guidance without looking like the target set.
Loss (RAVE):

    L = w_guid · mean_b (cos(E(Φ(x_b)), v_res) - thr)²  +  w_rec · mean ||Φ(x_b) - x_b||²,

the reconstruction term keeping the content while the guidance moves the images along v_res.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor
from tqdm.auto import tqdm

from ..models.dual_encoder import DualEncoder
from .residual import Direction, guidance_loss


class ResidualNet(nn.Module):
    """x -> x + g(x), g = conv1x1 -> GELU -> conv1x1 -> GELU -> conv1x1 (last layer zero at the start)."""

    def __init__(self, channels: int = 3, hidden: int = 16) -> None:
        super().__init__()
        last = nn.Conv2d(hidden, channels, 1)
        for parameter in last.parameters():  # weight and bias: g starts at zero
            nn.init.zeros_(parameter)
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, hidden, 1), nn.GELU(), last
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


@dataclass(frozen=True)
class GuideSettings:
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    guidance_weight: float = 1.0
    reconstruction_weight: float = 1.0
    seed: int = 0


def train_guided(
    model: DualEncoder, direction: Direction, pixels: Tensor, settings: GuideSettings, progress: bool = True
) -> tuple[ResidualNet, list[float]]:
    """Φ trained on ``pixels`` (N x C x H x W, the encoder's input space) with the guidance loss; its loss curve."""
    torch.manual_seed(settings.seed)
    net = ResidualNet(pixels.shape[1])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    losses = []
    for _ in tqdm(range(settings.steps), desc="guided network", disable=not progress):
        rows = torch.randint(len(pixels), (min(settings.batch_size, len(pixels)),), generator=generator)
        x = pixels[rows]
        out = net(x)
        loss = settings.guidance_weight * guidance_loss(model.encode_image(out), direction)
        loss = loss + settings.reconstruction_weight * (out - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return net, losses
