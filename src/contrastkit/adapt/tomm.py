"""A TOMM-style prompt learner: class-aware prompts plus text-guided tuning of the image feature.

TOMM (the paper's abstract; its mechanism is not verified against code, docs/methods.md C1) learns
prompts that are aware of the class and tunes the image features under the guidance of the text. This
learner does both in the smallest form that keeps zero-shot behaviour at the start:

- class-aware context: class c's prompt has context v + u_c, a shared context v plus a class offset
  u_c (zero at the start; a class never trained keeps u_c = 0, i.e. the shared context);
- text-guided image feature: the image attends over the class prompts' embeddings t_c,

      a = softmax_c(s · f tᵀ),   f' = normalize(f + γ · (a t) W),

  with W (D x D, identity at the start) and the gate γ (zero at the start) learned; then
  logits = s · f' tᵀ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .coop import CoOp
from .prompt_inputs import PromptInputs
from .prompt_tokens import PromptedText


class TommStyle(CoOp):
    def __init__(self, text: PromptedText, n_classes: int, *, ctx_init: str | None = None, seed: int = 0) -> None:
        super().__init__(text, n_classes, ctx_init=ctx_init, seed=seed)
        self.offsets = nn.Parameter(torch.zeros(n_classes, *self.ctx.shape))
        dim = text.model.embed_dim
        self.guide = nn.Parameter(torch.eye(dim))
        self.gate = nn.Parameter(torch.zeros(()))

    def context(self, classes: Tensor) -> Tensor:
        return self.ctx.unsqueeze(0) + self.offsets[classes]

    def logits(self, text: PromptedText, inputs: PromptInputs, classes: Tensor) -> Tensor:
        t = self.class_text(text, inputs, classes)  # C x D
        f = inputs.features
        attended = torch.softmax(self.scale * f @ t.T, dim=1) @ t
        guided = F.normalize(f + self.gate * attended @ self.guide, dim=-1)
        return self.scale * guided @ t.T
