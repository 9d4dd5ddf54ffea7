"""Geodesic multi-modal mixup: m2-mix and the uni-/bi-modal m3-mix variants.

Oh et al. 2023, "Geodesic Multi-Modal Mixup for Robust Fine-Tuning"
(NeurIPS 2023); formulas checked against the authors' release (main.py /
loss.py of changdaeoh/multimodal-mixup).

Spherical interpolation with lambda on the first argument (the release's
"reversed" slerp), falling back to normalised lerp when sin(theta) is ~0
(identical or antipodal points, where slerp is 0/0):

    m_lam(a, b) = [a sin(lam th) + b sin((1 - lam) th)] / sin th,   th = arccos(a.b)

One lam ~ Beta(beta, beta) per batch (beta = 0.5), from a generator seeded by
``seed`` (the same stream on every rank; saved with the term). x, y: image /
text embeddings; flip = batch order reversed; J = flip(I).

``m2mix`` (hard negatives mixed across modalities):
    neg_j = m_lam(x_j, y_j);  Li_ij = s_ii if i = j else x_i.neg_j;  Lt_ij = s_ii if i = j else y_i.neg_j
    L_m2 = CE(t2 Li, I) + CE(t2 Lt, I)      t2 = 1/0.07 fixed (``temperature=0.07``)
``vmix``:  x~_i = m_lam(x_i, x_flip(i));  L = 1/2 [CE(t x~ Y^T, T) + CE(t Y x~^T, T)],  T = lam I + (1 - lam) J
``lmix``:  the same with mixed texts y~_i = m_lam(y_i, y_flip(i)).
``vlmix``: both mixed with the same lam;  L = 1/2 [CE(t x~ y~^T, I + J) + CE(t y~ x~^T, I + J)]
           (target I + J with row mass 2, as released).

Reductions: the paper and release *sum* m2mix's two CEs (``reduction="sum"``,
default); the README's OpenCLIP port averages them (``"mean"``). The m3-mix
variants average their two directions as released (``reduction="mean"``).
Gradient flows through the mixed points, as released (``detach_mix=False``);
``detach_mix=True`` treats them as constants.

Scales: ``temperature=None`` uses the model's logit scale (the release fixes
t = 100 for CLIP and the uni-modal mixes); m2mix defaults to its separate
fixed scale 1/0.07. Recipe: L = clip (t = 100 fixed) + mmmix/(epoch + 1) * m2mix,
mmmix 0.001-0.05 (the 1/(epoch+1) decay is a weight schedule for the engine);
m3-mix weights vmix = lmix = 0.05, vlmix 0.05-0.2, m2mix 0.01.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..encoded import Encoded
from ._rng import SeededRandomMixin, sample_beta
from .base import Term, register_term
from .functional import soft_cross_entropy

SLERP_EPS = 1e-3


def slerp(a: Tensor, b: Tensor, lam: float | Tensor, eps: float = SLERP_EPS) -> Tensor:
    """Row-wise m_lam(a, b) for unit vectors (lam on ``a``); nlerp where sin(theta) < eps."""
    cos = (a * b).sum(dim=-1, keepdim=True)
    with torch.no_grad():
        degenerate = (1.0 - cos.detach().clamp(-1.0, 1.0).pow(2)).clamp_min(0.0).sqrt() < eps
    # keep the unused branch finite (its gradient is multiplied by zero, and 0 * inf = nan)
    cos_safe = torch.where(degenerate, torch.zeros_like(cos), cos.clamp(-1.0, 1.0))
    theta = torch.acos(cos_safe)
    sin = torch.sin(theta)
    spherical = (a * torch.sin(lam * theta) + b * torch.sin((1 - lam) * theta)) / sin
    linear = F.normalize(lam * a + (1 - lam) * b, dim=-1)
    return torch.where(degenerate, linear, spherical)


def m2mix_loss(
    image: Tensor,
    text: Tensor,
    lam: float,
    logit_scale: Tensor | float,
    detach_mix: bool = False,
    reduction: str = "sum",
) -> Tensor:
    """CE(t Li, I) + CE(t Lt, I) (``sum``) or their mean, negatives neg_j = m_lam(x_j, y_j)."""
    neg = slerp(image, text, lam)
    if detach_mix:
        neg = neg.detach()
    b = image.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=image.device)
    pos = (image * text).sum(dim=-1)  # s_ii
    li = torch.where(eye, torch.diag_embed(pos), image @ neg.t())
    lt = torch.where(eye, torch.diag_embed(pos), text @ neg.t())
    labels = torch.arange(b, device=image.device)
    total = F.cross_entropy(logit_scale * li, labels) + F.cross_entropy(logit_scale * lt, labels)
    return total if reduction == "sum" else total / 2


def flip_mix(z: Tensor, lam: float, detach_mix: bool = False) -> Tensor:
    """z~_i = m_lam(z_i, z_flip(i))."""
    mixed = slerp(z, torch.flip(z, dims=[0]), lam)
    return mixed.detach() if detach_mix else mixed


def _two_way(logits: Tensor, target: Tensor, reduction: str) -> Tensor:
    total = soft_cross_entropy(logits, target) + soft_cross_entropy(logits.t(), target.t())
    return total if reduction == "sum" else total / 2


def mix_target(batch: int, lam: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """lam I + (1 - lam) J (J = flipped identity)."""
    eye = torch.eye(batch, device=device, dtype=dtype)
    return lam * eye + (1 - lam) * torch.flip(eye, dims=[0])


def vmix_loss(
    image: Tensor,
    text: Tensor,
    lam: float,
    logit_scale: Tensor | float,
    detach_mix: bool = False,
    reduction: str = "mean",
) -> Tensor:
    logits = logit_scale * flip_mix(image, lam, detach_mix) @ text.t()
    return _two_way(logits, mix_target(image.shape[0], lam, image.device, image.dtype), reduction)


def lmix_loss(
    image: Tensor,
    text: Tensor,
    lam: float,
    logit_scale: Tensor | float,
    detach_mix: bool = False,
    reduction: str = "mean",
) -> Tensor:
    logits = logit_scale * image @ flip_mix(text, lam, detach_mix).t()
    return _two_way(logits, mix_target(image.shape[0], lam, image.device, image.dtype), reduction)


def vlmix_loss(
    image: Tensor,
    text: Tensor,
    lam: float,
    logit_scale: Tensor | float,
    detach_mix: bool = False,
    reduction: str = "mean",
) -> Tensor:
    logits = logit_scale * flip_mix(image, lam, detach_mix) @ flip_mix(text, lam, detach_mix).t()
    eye = torch.eye(image.shape[0], device=image.device, dtype=image.dtype)
    return _two_way(logits, eye + torch.flip(eye, dims=[0]), reduction)


class _MixTerm(SeededRandomMixin, Term):
    """Shared hyperparameters of the geodesic-mixup terms; the defaults are the m3-mix variants' (V/L/VL-mix:
    the model's scale, directions averaged); ``m2mix`` states its own."""

    def __init__(
        self,
        beta: float = 0.5,
        temperature: float | None = None,
        detach_mix: bool = False,
        reduction: str = "mean",
        seed: int = 0,
    ) -> None:
        super().__init__()
        beta = float(beta)
        if not beta > 0.0 or not math.isfinite(beta):
            raise ValueError(f"{self.name}: beta must be positive (Beta(beta, beta); the paper uses 0.5), got {beta}")
        if temperature is not None:
            temperature = float(temperature)
            if not temperature > 0.0 or not math.isfinite(temperature):
                raise ValueError(
                    f"{self.name}: temperature must be positive or null (the model's logit scale), got {temperature}"
                )
        if reduction not in ("sum", "mean"):
            raise ValueError(f"{self.name}: reduction must be 'sum' or 'mean', got {reduction!r}")
        if not isinstance(detach_mix, bool):
            raise ValueError(f"{self.name}: detach_mix must be true or false, got {detach_mix!r}")
        self.beta, self.temperature, self.detach_mix, self.reduction = beta, temperature, detach_mix, reduction
        self._init_rng(seed)

    def draw_lambda(self) -> float:
        return sample_beta(self.beta, self.beta, self.generator)

    def scale(self, enc: Encoded) -> Tensor | float:
        return enc.logit_scale if self.temperature is None else 1.0 / self.temperature

    def mix_loss(self, image: Tensor, text: Tensor, lam: float, scale: Tensor | float) -> Tensor:
        raise NotImplementedError

    def loss(self, enc: Encoded) -> Tensor:
        return self.mix_loss(enc.image, enc.text, self.draw_lambda(), self.scale(enc))


@register_term
class M2MixTerm(_MixTerm):
    name = "m2mix"
    description = "m2-mix: CE against geodesic image-text mixtures as hard negatives (Oh et al.)"

    def __init__(
        self,
        beta: float = 0.5,
        temperature: float | None = 0.07,
        detach_mix: bool = False,
        reduction: str = "sum",
        seed: int = 0,
    ) -> None:
        super().__init__(beta, temperature, detach_mix, reduction, seed)

    def mix_loss(self, image: Tensor, text: Tensor, lam: float, scale: Tensor | float) -> Tensor:
        return m2mix_loss(image, text, lam, scale, self.detach_mix, self.reduction)


@register_term
class VMixTerm(_MixTerm):
    name = "vmix"
    description = "V-mix: geodesic mixup of images x_i with x_flip(i), target lam*I + (1-lam)*flip(I)"

    def mix_loss(self, image: Tensor, text: Tensor, lam: float, scale: Tensor | float) -> Tensor:
        return vmix_loss(image, text, lam, scale, self.detach_mix, self.reduction)


@register_term
class LMixTerm(_MixTerm):
    name = "lmix"
    description = "L-mix: geodesic mixup of captions y_i with y_flip(i), target lam*I + (1-lam)*flip(I)"

    def mix_loss(self, image: Tensor, text: Tensor, lam: float, scale: Tensor | float) -> Tensor:
        return lmix_loss(image, text, lam, scale, self.detach_mix, self.reduction)


@register_term
class VLMixTerm(_MixTerm):
    name = "vlmix"
    description = "VL-mix: images and captions both mixed with their flipped rows, target I + flip(I)"

    def mix_loss(self, image: Tensor, text: Tensor, lam: float, scale: Tensor | float) -> Tensor:
        return vlmix_loss(image, text, lam, scale, self.detach_mix, self.reduction)
