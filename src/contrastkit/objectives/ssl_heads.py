"""Non-contrastive SSL heads across modalities: BarLIP, SiamLIP, BYOLIP.

Fini et al. 2023, "Improved baselines for vision-language pre-training"
(code: facebookresearch/clip-rocket, ``BarLIPLoss`` / ``SiamLIPLoss``), built on
Barlow Twins (Zbontar et al. 2021), SimSiam (Chen & He 2021) and BYOL (Grill et
al. 2020). Each term owns its projector heads and reads raw pooled tower
features (``image_features`` / ``text_features``, B x F).

Pairs: the global (image, text) pair, plus every (image view a, text view b)
pair when both ``image_view_features`` and ``text_view_features`` (V x B x F)
are present; the loss is the mean over the 1 + V V' pairs. Each tensor goes
through the projector on its own, so BatchNorm statistics are per view and span
the global batch (the engine hands global tensors).

BarLIP (``barlip``): v = g(f), g ending in BatchNorm (3000 hidden, 8192 out).

    C = v_img^T v_txt / N   (N = global batch)
    L = s [ sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2 ],   s = 0.025, lambda = 5e-3

(Barlow Twins / lightly's ``BarlowTwinsLoss`` is s = 1 with v the batch-standardised outputs.)

SiamLIP (``siamlip``): projector v = g(f) (2 layers, 2048 hidden, 128 out, plain BN at
the end), cross-modal predictors p_img = q_img(v_img), p_txt = q_txt(v_txt):

    L = (2 - 2 cos(p_img, sg v_txt)) + (2 - 2 cos(p_txt, sg v_img))     (cos averaged over rows)

``reduction="mean"`` halves it (the release averages the two directions; docs/methods.md A7 sums them).

BYOLIP (``byolip``): as SiamLIP, but the targets v come from EMA copies of the projectors
(applied to the detached features), updated in :meth:`ByolipTerm.on_step_end`:
xi <- m xi + (1 - m) theta, m = 0.99. The release keeps an EMA of the whole model
(towers too); here only the projector is averaged.

All projectors are lazy: see :mod:`contrastkit.objectives._heads` for the dry-forward contract.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoded import Encoded
from ._heads import (
    check_bn_batch,
    check_features,
    ema_update_,
    freeze,
    mlp,
    momentum_in_unit_interval,
    positive_int,
    start_as_copy,
)
from .base import Term, register_term

# ---------------------------------------------------------------------------- math


def barlow_twins_loss(z_a: Tensor, z_b: Tensor, off_diagonal_weight: float = 5e-3, loss_scale: float = 0.025) -> Tensor:
    """s [sum_i (1 - C_ii)^2 + lambda sum_{i!=j} C_ij^2] with C = z_a^T z_b / N (N rows, no re-normalisation)."""
    n = z_a.shape[0]
    c = z_a.t() @ z_b / n
    diag = torch.diagonal(c)
    on_diag = (1 - diag).square().sum()
    off_diag = c.square().sum() - diag.square().sum()
    return loss_scale * (on_diag + off_diagonal_weight * off_diag)


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """2 - 2 mean_i cos(p_i, sg z_i) (SimSiam's D with stop-gradient on the target)."""
    return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean()


def siamese_pair_loss(
    p_img: Tensor, target_txt: Tensor, p_txt: Tensor, target_img: Tensor, reduction: str = "sum"
) -> Tensor:
    """(2 - 2cos(p_img, sg t_txt)) + (2 - 2cos(p_txt, sg t_img)); ``mean`` halves it."""
    total = negative_cosine(p_img, target_txt) + negative_cosine(p_txt, target_img)
    return total if reduction == "sum" else total / 2


# ---------------------------------------------------------------------------- shared plumbing


class _CrossModalHeadTerm(Term):
    """Collects the global and view features of both modalities, validated."""

    requires: tuple[str, ...] = ("image_features", "text_features")

    def __init__(self, use_views: bool = True) -> None:
        super().__init__()
        if not isinstance(use_views, bool):
            raise ValueError(f"{self.name}: use_views must be true or false, got {use_views!r}")
        self.use_views = use_views

    def inputs(self, enc: Encoded) -> tuple[list[Tensor], list[Tensor]]:
        """[global, view 1, ...] for images and for texts (views only when both modalities carry them)."""
        assert enc.image_features is not None and enc.text_features is not None
        check_features(self.name, "image_features", enc.image_features, 2)
        check_features(self.name, "text_features", enc.text_features, 2)
        rows = enc.image_features.shape[0]
        if enc.text_features.shape[0] != rows:
            raise ValueError(
                f"objective term {self.name!r}: image_features has {rows} rows but text_features "
                f"has {enc.text_features.shape[0]}"
            )
        images, texts = [enc.image_features], [enc.text_features]
        if self.use_views and enc.image_view_features is not None and enc.text_view_features is not None:
            for field, glob, dest in (
                ("image_view_features", enc.image_features, images),
                ("text_view_features", enc.text_features, texts),
            ):
                views = getattr(enc, field)
                check_features(self.name, field, views, 3)
                if views.shape[1:] != glob.shape:
                    raise ValueError(
                        f"objective term {self.name!r}: {field} must be V x {rows} x "
                        f"{glob.shape[1]} to match the global features, got {tuple(views.shape)}"
                    )
                dest.extend(views.unbind(0))
        check_bn_batch(self.name, self, rows)
        return images, texts


# ---------------------------------------------------------------------------- BarLIP


@register_term
class BarlipTerm(_CrossModalHeadTerm):
    name = "barlip"
    description = "BarLIP: Barlow Twins cross-correlation between image and text projections (own BN-ended heads)"

    def __init__(
        self,
        hidden_dim: int = 3000,
        out_dim: int = 8192,
        num_layers: int = 3,
        off_diagonal_weight: float = 5e-3,
        loss_scale: float = 0.025,
        use_views: bool = True,
    ) -> None:
        super().__init__(use_views)
        hidden_dim = positive_int(self.name, "hidden_dim", hidden_dim)
        out_dim = positive_int(self.name, "out_dim", out_dim)
        num_layers = positive_int(self.name, "num_layers", num_layers)
        if not off_diagonal_weight >= 0:
            raise ValueError(f"barlip: off_diagonal_weight must be >= 0, got {off_diagonal_weight}")
        if not loss_scale > 0:
            raise ValueError(f"barlip: loss_scale must be > 0, got {loss_scale}")
        self.off_diagonal_weight = float(off_diagonal_weight)
        self.loss_scale = float(loss_scale)
        self.image_projector = mlp(hidden_dim, out_dim, num_layers, last_bn="affine")
        self.text_projector = mlp(hidden_dim, out_dim, num_layers, last_bn="affine")

    def loss(self, enc: Encoded) -> Tensor:
        images, texts = self.inputs(enc)
        v_img = [self.image_projector(x) for x in images]
        v_txt = [self.text_projector(y) for y in texts]
        pairs = [(v_img[0], v_txt[0])] + [(a, b) for a in v_img[1:] for b in v_txt[1:]]
        losses = [barlow_twins_loss(a, b, self.off_diagonal_weight, self.loss_scale) for a, b in pairs]
        return torch.stack(losses).mean()


# ---------------------------------------------------------------------------- SiamLIP / BYOLIP


@register_term
class SiamlipTerm(_CrossModalHeadTerm):
    name = "siamlip"
    description = "SiamLIP: cross-modal SimSiam (predictor over projector, 2 - 2cos with stop-gradient targets)"

    def __init__(
        self,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        last_bn: bool = True,
        reduction: str = "sum",
        use_views: bool = True,
    ) -> None:
        super().__init__(use_views)
        hidden_dim = positive_int(self.name, "hidden_dim", hidden_dim)
        out_dim = positive_int(self.name, "out_dim", out_dim)
        num_layers = positive_int(self.name, "num_layers", num_layers)
        if not isinstance(last_bn, bool):
            raise ValueError(f"{self.name}: last_bn must be true or false, got {last_bn!r}")
        if reduction not in ("sum", "mean"):
            raise ValueError(
                f"{self.name}: reduction must be 'sum' (docs/methods.md A7) or 'mean' (release), got {reduction!r}"
            )
        self.reduction = reduction

        self._head = (hidden_dim, out_dim, num_layers, "plain" if last_bn else "none")

        def predictor() -> nn.Sequential:
            return mlp(hidden_dim, out_dim, 2, in_dim=out_dim, bias=False, last_bias=True)

        self.image_projector, self.text_projector = self.projector(), self.projector()
        self.image_predictor, self.text_predictor = predictor(), predictor()  # image->text, text->image

    def projector(self) -> nn.Sequential:
        """A (lazy) projector head of this term's shape."""
        hidden_dim, out_dim, num_layers, last_bn = self._head
        return mlp(hidden_dim, out_dim, num_layers, bias=False, last_bn=last_bn)

    def targets(
        self, images: list[Tensor], texts: list[Tensor], v_img: list[Tensor], v_txt: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """SimSiam: the targets are the online projections themselves (detached in the loss)."""
        return v_img, v_txt

    def loss(self, enc: Encoded) -> Tensor:
        images, texts = self.inputs(enc)
        v_img = [self.image_projector(x) for x in images]
        v_txt = [self.text_projector(y) for y in texts]
        p_img = [self.image_predictor(v) for v in v_img]
        p_txt = [self.text_predictor(v) for v in v_txt]
        t_img, t_txt = self.targets(images, texts, v_img, v_txt)
        index_pairs = [(0, 0)] + [(a, b) for a in range(1, len(images)) for b in range(1, len(texts))]
        losses = [siamese_pair_loss(p_img[a], t_txt[b], p_txt[b], t_img[a], self.reduction) for a, b in index_pairs]
        return torch.stack(losses).mean()


@register_term
class ByolipTerm(SiamlipTerm):
    name = "byolip"
    description = "BYOLIP: SiamLIP with EMA target projectors (momentum 0.99, updated after each optimizer step)"

    def __init__(self, momentum: float = 0.99, **siamlip: Any) -> None:
        """``momentum`` of the EMA targets; the other hyperparameters are SiamLIP's (same defaults)."""
        super().__init__(**siamlip)
        self.momentum = momentum_in_unit_interval(self.name, "momentum", momentum)
        # Same (lazy) structure as the online projectors; weights are copied from them on the
        # first forward, and from then on change only in on_step_end. Never optimised.
        self.target_image_projector, self.target_text_projector = self.projector(), self.projector()
        freeze(self.target_image_projector)
        freeze(self.target_text_projector)

    def _pairs(self) -> tuple[tuple[nn.Module, nn.Module], ...]:
        return ((self.image_projector, self.target_image_projector), (self.text_projector, self.target_text_projector))

    def targets(
        self, images: list[Tensor], texts: list[Tensor], v_img: list[Tensor], v_txt: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        start_as_copy(self.target_image_projector, self.image_projector, images[0].detach())
        start_as_copy(self.target_text_projector, self.text_projector, texts[0].detach())
        with torch.no_grad():
            t_img = [self.target_image_projector(x.detach()) for x in images]
            t_txt = [self.target_text_projector(y.detach()) for y in texts]
        return t_img, t_txt

    @torch.no_grad()
    def on_step_end(self) -> None:
        """xi <- m xi + (1 - m) theta for parameters; BN statistics are copied from the online heads."""
        for online, target in self._pairs():
            ema_update_(target, online, self.momentum)
