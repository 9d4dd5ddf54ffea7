"""Text-only transfer: train a classifier on text embeddings, use it on image embeddings.

CLOSE (Gu et al. 2022, "I Can't Believe There's No Images! Learning Visual Tasks Using only Language
Supervision") and CapDec (Nukrai et al. 2022) train on the text side of a contrastive model and run on
its image side. The two sides sit apart (the modality gap), so a classifier fitted to text embeddings
meets image embeddings off its training distribution. Two corrections:

- **noise injection**: each training vector is e' = normalize(e_t + ε), ε ~ N(0, w² I), drawn anew at
  every step, so the classifier learns a margin of about w around each text point. CLOSE uses w ≈ 0.1
  for captioning and 0.04-0.08 for other tasks; CapDec a variance of 0.016 (w ≈ 0.126).
- **mean shift**: e' = e_t + (μ_img - μ_txt) before the noise, the difference of the two modalities'
  mean embeddings estimated on paired data that is disjoint from the test images.

Noise is added during training only; images are classified as they are (unit norm).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def inject_noise(text: Tensor, w: float, generator: torch.Generator) -> Tensor:
    """normalize(e + ε), ε ~ N(0, w² I) (CLOSE): one fresh draw per row."""
    if w < 0:
        raise ValueError(f"noise w must be >= 0, got {w}")
    noise = torch.randn(text.shape, generator=generator, dtype=text.dtype) * w
    return F.normalize(text + noise, dim=-1)


def modality_shift(image: Tensor, text: Tensor) -> Tensor:
    """μ_img - μ_txt over paired unit embeddings (the rows of ``image`` and ``text`` are pairs)."""
    if image.shape != text.shape:
        raise ValueError(f"mean shift needs paired embeddings, got {tuple(image.shape)} and {tuple(text.shape)}")
    return F.normalize(image, dim=-1).mean(0) - F.normalize(text, dim=-1).mean(0)


@dataclass
class LinearHead:
    """logits = x Wᵀ + b on unit-norm inputs."""

    weight: Tensor
    bias: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        return F.normalize(x.to(self.weight.dtype), dim=-1) @ self.weight.T + self.bias

    def accuracy(self, x: Tensor, labels: Tensor) -> float:
        return float((self(x).argmax(1) == labels).float().mean())


def train_text_head(
    text: Tensor,
    labels: Tensor,
    n_classes: int,
    *,
    w: float,
    shift: Tensor | None = None,
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
) -> LinearHead:
    """A linear softmax classifier fitted to (shifted, noise-injected) unit text embeddings with Adam.

    Every step draws a batch of text rows and fresh noise for them, so no two steps see the same vectors.
    """
    if len(text) != len(labels) or len(text) == 0:
        raise ValueError(f"need one label per text embedding, got {len(text)} embeddings and {len(labels)} labels")
    generator = torch.Generator().manual_seed(seed)
    base = F.normalize(text.double(), dim=-1)
    if shift is not None:
        base = base + shift.double()
    weight = torch.zeros(n_classes, text.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        rows = torch.randint(len(base), (min(batch_size, len(base)),), generator=generator)
        x = inject_noise(base[rows], w, generator)
        loss = F.cross_entropy(x @ weight.T + bias, labels[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return LinearHead(weight.detach().float(), bias.detach().float())
