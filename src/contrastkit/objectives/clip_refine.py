"""CLIP-Refine: random feature alignment (RaFA) and hybrid contrastive distillation (HyCD).

Yamaguchi et al. 2025, "Post-pre-training for Modality Alignment in
Vision-Language Foundation Models" (CLIP-Refine); checked against the
authors' release (``RandRegUpdater`` and ``distill`` in their updater code).

``rafa``: a random target z_i is drawn for every pair i, shared by its image
and its caption, and redrawn every step:

    z_i ~ N(0, I/D)  (``normalize_before_rafa=True``, default)   or   N(0, I)
    L_rafa = MSE(X, Z) + MSE(Y, Z)        (MSE = mean over the B*D elements)

The release applies N(0, I) to unnormalised features. The embeddings in
``Encoded`` are unit vectors, for which N(0, I) is off-scale by sqrt(D);
N(0, I/D) has E||z||^2 = 1. ``normalize_before_rafa=False`` keeps the
release's N(0, I) target (on the same unit embeddings). The draw comes from a
generator seeded by ``seed`` (same stream on every rank; saved with the term).

``hycd``: distillation towards the frozen initial model ("reference"):

    q = alpha I + (1 - alpha) softmax(l_ref / T)
    L_hycd = 1/2 [ T^2 KL(q || softmax(l / T)) + (the same with l^T, l_ref^T) ]   (row-wise, batchmean)

with l = t X Y^T (student) and l_ref = t_ref X_ref Y_ref^T (reference, no
gradient); defaults alpha = 0.5, T = 1. The release uses raw feature dot
products without a logit scale; with unit embeddings that makes T = 1 targets
almost uniform, so by default both logits carry their model's logit scale
(``use_logit_scale=False`` gives the release's unscaled cosine logits).
alpha = 1 reduces hycd to T^2 CE(l / T, I) averaged over both directions.
Released recipe: 0 clip + 1 rafa + 1 hycd, 1 epoch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..encoded import Encoded
from ._rng import SeededRandomMixin
from .base import Term, register_term


def rafa_targets(batch: int, dim: int, generator: torch.Generator, normalize_before_rafa: bool = True) -> Tensor:
    """B x D Gaussian targets on the CPU: N(0, I/D) if ``normalize_before_rafa`` else N(0, I)."""
    z = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    if normalize_before_rafa:
        z = z / math.sqrt(dim)
    return z


def rafa_loss(image: Tensor, text: Tensor, targets: Tensor) -> Tensor:
    """MSE(X, Z) + MSE(Y, Z), each a mean over all B*D elements; Z is shared by a pair."""
    targets = targets.to(device=image.device, dtype=image.dtype)
    return F.mse_loss(image, targets) + F.mse_loss(text, targets)


def hycd_targets(reference_logits: Tensor, alpha: float, temperature: float) -> Tensor:
    """q = alpha I + (1 - alpha) softmax(l_ref / T) (rows), computed without gradient."""
    ref = reference_logits.detach()
    eye = torch.eye(ref.shape[0], ref.shape[1], dtype=ref.dtype, device=ref.device)
    return alpha * eye + (1.0 - alpha) * F.softmax(ref / temperature, dim=-1)


def hycd_direction(logits: Tensor, reference_logits: Tensor, alpha: float, temperature: float) -> Tensor:
    """T^2 KL(q || softmax(l / T)) with batchmean reduction."""
    q = hycd_targets(reference_logits, alpha, temperature)
    log_p = F.log_softmax(logits / temperature, dim=-1)
    return F.kl_div(log_p, q, reduction="batchmean") * temperature**2


def hycd_loss(
    image: Tensor,
    text: Tensor,
    reference_image: Tensor,
    reference_text: Tensor,
    logit_scale: Tensor | float = 1.0,
    reference_logit_scale: Tensor | float = 1.0,
    alpha: float = 0.5,
    temperature: float = 1.0,
) -> Tensor:
    """HyCD averaged over the image->text and text->image directions."""
    logits = logit_scale * image @ text.t()
    with torch.no_grad():
        ref = reference_logit_scale * reference_image @ reference_text.t()
    return (
        hycd_direction(logits, ref, alpha, temperature) + hycd_direction(logits.t(), ref.t(), alpha, temperature)
    ) / 2


@register_term
class RafaTerm(SeededRandomMixin, Term):
    name = "rafa"
    description = "CLIP-Refine RaFA: MSE of image and text embeddings to a shared random Gaussian target"

    def __init__(self, normalize_before_rafa: bool = True, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(normalize_before_rafa, bool):
            raise ValueError(f"rafa: normalize_before_rafa must be true or false, got {normalize_before_rafa!r}")
        self.normalize_before_rafa = normalize_before_rafa
        self._init_rng(seed)

    def loss(self, enc: Encoded) -> Tensor:
        b, d = enc.image.shape
        z = rafa_targets(b, d, self.generator, self.normalize_before_rafa)
        return rafa_loss(enc.image, enc.text, z)


@register_term
class HycdTerm(Term):
    name = "hycd"
    description = "CLIP-Refine HyCD: KL to alpha*I + (1-alpha)*softmax(reference logits / T), both directions"
    requires: tuple[str, ...] = ("reference_image", "reference_text", "reference_logit_scale")

    def __init__(self, alpha: float = 0.5, temperature: float = 1.0, use_logit_scale: bool = True) -> None:
        super().__init__()
        alpha, temperature = float(alpha), float(temperature)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"hycd: alpha must be in [0, 1] (the paper uses 0.5), got {alpha}")
        if not temperature > 0.0 or not math.isfinite(temperature):
            raise ValueError(f"hycd: temperature must be positive (the paper uses 1), got {temperature}")
        if not isinstance(use_logit_scale, bool):
            raise ValueError(f"hycd: use_logit_scale must be true or false, got {use_logit_scale!r}")
        self.alpha, self.temperature, self.use_logit_scale = alpha, temperature, use_logit_scale
        if not use_logit_scale:
            self.requires = ("reference_image", "reference_text")

    def loss(self, enc: Encoded) -> Tensor:
        assert enc.reference_image is not None and enc.reference_text is not None
        scale: Tensor | float
        ref_scale: Tensor | float
        if self.use_logit_scale:
            assert enc.reference_logit_scale is not None
            scale, ref_scale = enc.logit_scale, enc.reference_logit_scale.detach()
        else:
            scale, ref_scale = 1.0, 1.0
        return hycd_loss(
            enc.image, enc.text, enc.reference_image, enc.reference_text, scale, ref_scale, self.alpha, self.temperature
        )
