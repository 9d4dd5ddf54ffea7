"""CoOp and CoCoOp: learned prompt context for a frozen dual encoder.

CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022): class c's prompt is
t_c = g([v_1 ... v_M, CLASS_c]) with M learnable context vectors (one set for every class, "unified", or
one per class, "class-specific"), and

    p(y = c | x) = exp(s · cos(f(x), t_c)) / Σ_c' exp(s · cos(f(x), t_c')),   L = cross-entropy,

with f the frozen image tower, g the frozen text tower and s the model's logit scale.

CoCoOp (Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022): a meta-network
h (Linear D -> D/16, ReLU, Linear D/16 -> W) turns the image feature into a token added to every context
vector, v_m(x) = v_m + h(f(x)), so each image has its own prompts (one text pass per image x class) and
the context generalises better to classes not seen in training.

Learners hold only their own parameters; the frozen model is reached through the
:class:`~contrastkit.adapt.prompt_tokens.PromptedText` passed to every call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .prompt_inputs import PromptInputs
from .prompt_tokens import PromptedText


class CoOp(nn.Module):
    """M context vectors, unified (M x W) or class-specific (C x M x W)."""

    def __init__(
        self,
        text: PromptedText,
        n_classes: int,
        *,
        class_specific: bool = False,
        ctx_init: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        if class_specific:
            ctx = torch.stack([text.initial_context(ctx_init, generator) for _ in range(n_classes)])
        else:
            ctx = text.initial_context(ctx_init, generator)
        self.ctx = nn.Parameter(ctx)
        self.scale = float(text.model.logit_scale.detach())

    def context(self, classes: Tensor) -> Tensor:
        """C x M x W: the context of each class's prompt."""
        return self.ctx[classes] if self.ctx.dim() == 3 else self.ctx.expand(len(classes), -1, -1)

    def class_text(self, text: PromptedText, inputs: PromptInputs, classes: Tensor) -> Tensor:
        """The class prompts' embeddings: C x D (the same for every image)."""
        return text.encode(self.context(classes), classes)

    def logits(self, text: PromptedText, inputs: PromptInputs, classes: Tensor) -> Tensor:
        """B x C: s · cos(f(x), t_c) over the given classes."""
        return scores(self.scale, inputs.features, self.class_text(text, inputs, classes))

    def loss(
        self,
        text: PromptedText,
        inputs: PromptInputs,
        labels: Tensor,
        classes: Tensor,
        views: tuple[PromptInputs, PromptInputs] | None = None,
    ) -> Tensor:
        """Cross-entropy of the prompts' logits (``labels`` index ``classes``)."""
        return F.cross_entropy(self.logits(text, inputs, classes), labels)


class CoCoOp(CoOp):
    """CoOp's unified context plus a meta-network token from each image: v_m(x) = v_m + h(f(x))."""

    def __init__(
        self,
        text: PromptedText,
        n_classes: int,
        *,
        ctx_init: str | None = None,
        seed: int = 0,
        meta_net: nn.Module | None = None,
    ) -> None:
        super().__init__(text, n_classes, ctx_init=ctx_init, seed=seed)
        torch.manual_seed(seed)
        hidden = max(1, text.model.embed_dim // 16)
        self.meta_net = meta_net or nn.Sequential(
            nn.Linear(text.model.embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, text.width)
        )

    def condition(self, inputs: PromptInputs) -> Tensor:
        """What the meta-network reads of each image: its feature f(x)."""
        return inputs.features

    def shift(self, inputs: PromptInputs) -> Tensor:
        """B x W: the token added to every context vector of an image's prompts."""
        return self.meta_net(self.condition(inputs))

    def class_text(self, text: PromptedText, inputs: PromptInputs, classes: Tensor) -> Tensor:
        """B x C x D: image b's prompt for class c, with context v + shift_b."""
        ctx = self.ctx.unsqueeze(0) + self.shift(inputs).unsqueeze(1)  # B x M x W
        n, c = ctx.shape[0], len(classes)
        per_prompt = ctx.unsqueeze(1).expand(-1, c, -1, -1).reshape(n * c, *ctx.shape[1:])
        return text.encode(per_prompt, classes.repeat(n)).view(n, c, -1)


def scores(scale: float, features: Tensor, class_text: Tensor) -> Tensor:
    """s · f tᵀ: B x C from class embeddings shared by the images (C x D) or per image (B x C x D)."""
    if class_text.dim() == 2:
        return scale * features @ class_text.T
    return scale * torch.einsum("bd,bcd->bc", features, class_text)
