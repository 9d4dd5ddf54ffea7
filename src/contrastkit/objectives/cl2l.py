"""CL2L local-view contrastive term (the "improved recipe" of CLIP-rocket).

Fini et al. 2023, "Improved baselines for vision-language pre-training"
(TMLR; code: facebookresearch/clip-rocket, ``CL2LLoss`` with ``--separate-proj``).

Views: the global (weak) pair goes through the model's own projection and the
plain ``clip`` term; the V strong image views and V' strong caption views go
through *separate* MLP projectors owned by this term (``[Linear -> BN -> ReLU]
x 2 -> Linear``, 4096 hidden, BN statistics per view) and are L2-normalised:
h^img_a, h^txt_b (B x D). With the term's own learnable scale t_l (init 10,
clamped to [1, 100] after each step like the model's):

    L_ab = 1/2 [CE(t_l H_a G_b^T, P) + CE(t_l G_b H_a^T, P)],   P = (1 - eps) I + eps / B
    L_local = 1/(V V') sum_a sum_b L_ab            (eps = 0.1 by default)

Recipe (docs/methods.md A7): ``clip`` weight 1/(1+n), ``cl2l_local`` weight n/(1+n),
both doubled in the release's ``sum`` mode.

Inputs: ``image_view_features`` (V x B x F_img) and ``text_view_features``
(V' x B x F_txt), raw pooled tower outputs. The projectors are lazy: see
:mod:`contrastkit.objectives._heads` for the dry-forward contract.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoded import Encoded
from ._heads import check_bn_batch, check_features, mlp, positive_int
from .base import Term, register_term
from .functional import info_nce


def cl2l_local_loss(
    image_views: Tensor, text_views: Tensor, logit_scale: Tensor, label_smoothing: float = 0.1
) -> Tensor:
    """Mean over all (image view a, text view b) pairs of the symmetric smoothed InfoNCE.

    ``image_views``: V x B x D and ``text_views``: V' x B x D, already L2-normalised.
    """
    losses = []
    for a in range(image_views.shape[0]):
        for b in range(text_views.shape[0]):
            logits = logit_scale * image_views[a] @ text_views[b].t()
            losses.append((info_nce(logits, label_smoothing) + info_nce(logits.t(), label_smoothing)) / 2)
    return torch.stack(losses).mean()


@register_term
class Cl2lLocalTerm(Term):
    name = "cl2l_local"
    description = "CL2L: smoothed InfoNCE over every strong (image view, text view) pair via own MLP heads and scale"
    requires: tuple[str, ...] = ("image_view_features", "text_view_features")

    def __init__(
        self,
        hidden_dim: int = 4096,
        out_dim: int = 256,
        num_layers: int = 3,
        label_smoothing: float = 0.1,
        logit_scale_init: float = 10.0,
        logit_scale_max: float = 100.0,
    ) -> None:
        super().__init__()
        for key, value in (("hidden_dim", hidden_dim), ("out_dim", out_dim), ("num_layers", num_layers)):
            positive_int(self.name, key, value)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"cl2l_local: label_smoothing must be in [0, 1), got {label_smoothing}")
        if not logit_scale_max >= 1.0:
            raise ValueError(f"cl2l_local: logit_scale_max must be >= 1, got {logit_scale_max}")
        if not 1.0 <= logit_scale_init <= logit_scale_max:
            raise ValueError(
                f"cl2l_local: logit_scale_init must be in [1, logit_scale_max={logit_scale_max}], "
                f"got {logit_scale_init}"
            )
        self.label_smoothing = float(label_smoothing)
        self.logit_scale_max = float(logit_scale_max)
        self.image_projector = mlp(hidden_dim, out_dim, num_layers)
        self.text_projector = mlp(hidden_dim, out_dim, num_layers)
        # Stored as log t, like the model's scale; t = exp(log_logit_scale).
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))

    @property
    def logit_scale(self) -> Tensor:
        return self.log_logit_scale.exp()

    def project(self, projector: nn.Module, views: Tensor) -> Tensor:
        """Project each view separately (BatchNorm statistics per view) and L2-normalise: V x B x D."""
        return torch.stack([F.normalize(projector(v), dim=-1) for v in views.unbind(0)])

    def loss(self, enc: Encoded) -> Tensor:
        assert enc.image_view_features is not None and enc.text_view_features is not None
        check_features(self.name, "image_view_features", enc.image_view_features, 3)
        check_features(self.name, "text_view_features", enc.text_view_features, 3)
        rows = enc.image_view_features.shape[1]
        if enc.text_view_features.shape[1] != rows:
            raise ValueError(
                f"objective term {self.name!r}: image_view_features has {rows} rows per view but "
                f"text_view_features has {enc.text_view_features.shape[1]}"
            )
        check_bn_batch(self.name, self, rows)
        h_img = self.project(self.image_projector, enc.image_view_features)
        h_txt = self.project(self.text_projector, enc.text_view_features)
        return cl2l_local_loss(h_img, h_txt, self.logit_scale, self.label_smoothing)

    @torch.no_grad()
    def on_step_end(self) -> None:
        # The release clamps log t to [0, ln 100] after each step (main.py); t >= 1 keeps it a sharpening scale.
        self.log_logit_scale.clamp_(0.0, math.log(self.logit_scale_max))
