"""GOPro: prompts generated from the image's content and style, consistent across augmented views.

Singha, Jha & Banerjee, "GOPro: Generate and Optimize Prompts in CLIP using Self-Supervised Learning"
(BMVC 2023). The context of image x's prompts is v_m + ρ(c(x)), where c(x) holds the image's content and
style primitives (the mean and the standard deviation of the image tower's tokens,
:mod:`~contrastkit.adapt.prompt_inputs`) and ρ is a learned linear map. With x₁, x₂ two augmented views
of x and t_c(·) the class prompts' embeddings built from an image,

    L = CE(s · f(x) t(x)ᵀ, y)                                     classification
      + ‖t(x) − t(x₁)‖² + ‖t(x) − t(x₂)‖²  (mean squared error)    prompt consistency across views
      + 0.1 · SimCLR(P f(x), P f(x₁); τ = 0.1)                    visual contrastive term

with P a linear projector followed by batch normalisation. With the image tower frozen (as in the paper's
code) the SimCLR term trains only P, which does not feed the classifier; it is kept for fidelity and
costs one small matrix product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .coop import CoCoOp, scores
from .prompt_inputs import PromptInputs
from .prompt_tokens import PromptedText

SIMCLR_WEIGHT = 0.1
SIMCLR_TAU = 0.1


def nt_xent(z_a: Tensor, z_b: Tensor, tau: float = SIMCLR_TAU) -> Tensor:
    """SimCLR's loss on two views: row i of z_a must pick row i of z_b among z_b and the other rows of z_a."""
    z_a, z_b = F.normalize(z_a, dim=-1), F.normalize(z_b, dim=-1)
    eye = torch.eye(len(z_a), dtype=torch.bool, device=z_a.device)
    target = torch.arange(len(z_a), device=z_a.device)

    def side(x: Tensor, y: Tensor) -> Tensor:
        within = (x @ x.T / tau).masked_fill(eye, float("-inf"))
        return F.cross_entropy(torch.cat([x @ y.T / tau, within], dim=1), target)

    return (side(z_a, z_b) + side(z_b, z_a)) / 2


class GOPro(CoCoOp):
    def __init__(
        self, text: PromptedText, n_classes: int, stats_dim: int, *, ctx_init: str | None = None, seed: int = 0
    ) -> None:
        rho = nn.Linear(stats_dim, text.width)  # zero at the start: the first prompts are CoOp's
        nn.init.zeros_(rho.weight)
        nn.init.zeros_(rho.bias)
        super().__init__(text, n_classes, ctx_init=ctx_init, seed=seed, meta_net=rho)
        dim = text.model.embed_dim
        self.projector = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim))

    def condition(self, inputs: PromptInputs) -> Tensor:
        """The content and style statistics of the image's tokens."""
        return inputs.stats

    def loss(
        self,
        text: PromptedText,
        inputs: PromptInputs,
        labels: Tensor,
        classes: Tensor,
        views: tuple[PromptInputs, PromptInputs] | None = None,
    ) -> Tensor:
        if views is None:
            raise ValueError("GOPro needs two augmented views of every training image")
        t = self.class_text(text, inputs, classes)
        ce = F.cross_entropy(scores(self.scale, inputs.features, t), labels)
        consistency = sum(F.mse_loss(t, self.class_text(text, v, classes)) for v in views)
        contrast = nt_xent(self.projector(inputs.features), self.projector(views[0].features))
        return ce + consistency + SIMCLR_WEIGHT * contrast
