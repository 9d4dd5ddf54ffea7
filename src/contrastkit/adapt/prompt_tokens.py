"""Learnable prompt context inside any text tower: the prompt assembly of CoOp and the embedding swap.

Zhou et al., "Learning to Prompt for Vision-Language Models" (CoOp, IJCV 2022): the prompt of class c is
[v_1 ... v_M, CLASS_c] with M learnable context vectors v_m in the text tower's token-embedding space,
and the class name's own token embeddings kept. CoOp also tries the class token in the middle of the
context ([v_1 ... v_M/2, CLASS_c, v_M/2+1 ... v_M]) and at the front.

Here the prompt is assembled as text with a placeholder word (``X``) for each context slot, e.g.
``"X X X X circle."``, tokenised once by the tower's own tokenizer; while the tower runs, a forward hook
on its token-embedding module (the largest ``nn.Embedding`` it owns: ``embed`` of the built-in tower,
``token_embedding`` of open_clip, ``word_embeddings`` of BERT-like Hugging Face models) replaces the
outputs at the placeholder positions, in order, with the context vectors. So the same code prompts the
built-in, open_clip and Hugging Face towers, and positions, padding and pooling stay the tower's own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.dual_encoder import DualEncoder

PLACEHOLDER = "X"
POSITIONS = ("end", "middle", "front")


def assemble_prompts(classnames: Sequence[str], n_ctx: int, position: str = "end") -> list[str]:
    """One prompt string per class: ``n_ctx`` placeholders around the class name at ``position``."""
    if n_ctx < 1:
        raise ValueError(f"--n-ctx: at least one context vector, got {n_ctx}")
    if position not in POSITIONS:
        raise ValueError(f"--class-position {position!r}: choose one of {', '.join(POSITIONS)}")
    slots = [PLACEHOLDER] * n_ctx
    half = n_ctx // 2
    prompts = []
    for name in classnames:
        if position == "end":
            words = [*slots, name]
        elif position == "front":
            words = [name, *slots]
        else:
            words = [*slots[:half], name, *slots[half:]]
        prompts.append(" ".join(words) + ".")
    return prompts


def token_embedding(text_tower: nn.Module) -> nn.Embedding:
    """The tower's token-embedding table: its largest ``nn.Embedding`` (by rows)."""
    tables = [m for m in text_tower.modules() if isinstance(m, nn.Embedding)]
    if not tables:
        raise ValueError(f"prompt learning: the text tower {type(text_tower).__name__} has no token embedding")
    return max(tables, key=lambda m: m.num_embeddings)


class PromptedText(nn.Module):
    """Encodes class prompts whose placeholder slots are filled with given context vectors.

    ``encode(ctx, rows)``: ``ctx`` is P x M x W (one set of M context vectors per prompt), ``rows`` the P
    class indices the prompts are for; returns P x D normalised text embeddings. The model's weights are
    frozen by the caller; gradients flow to ``ctx``.
    """

    tokens: Tensor  # P x L prompt token ids
    slots: Tensor  # P x L, True at the placeholder positions

    def __init__(self, model: DualEncoder, classnames: Sequence[str], n_ctx: int, position: str = "end") -> None:
        super().__init__()
        self.model = model
        self.n_ctx = n_ctx
        self.prompts = assemble_prompts(classnames, n_ctx, position)
        self.table = token_embedding(model.text_tower)
        ids = self._word_ids(PLACEHOLDER)
        if len(ids) != 1:
            raise ValueError(f"prompt learning: the tokenizer splits the placeholder {PLACEHOLDER!r} into {len(ids)}")
        tokens = model.tokenize(self.prompts)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("slots", tokens == ids[0], persistent=False)
        counts = self.slots.sum(dim=1)
        bad = [classnames[i] for i in range(len(classnames)) if int(counts[i]) != n_ctx]
        if bad:
            raise ValueError(
                f"prompt learning: the prompts of {', '.join(map(repr, bad))} do not keep {n_ctx} context slots "
                f"(a class name containing the word {PLACEHOLDER!r}, or a prompt longer than the tower's context)"
            )
        self.width = self.table.embedding_dim

    def _word_ids(self, text: str) -> list[int]:
        """The ids the tokenizer gives ``text`` beyond those of an empty text (start, end, padding)."""
        frame = set(self.model.tokenize([""])[0].tolist())
        return [int(t) for t in self.model.tokenize([text])[0] if int(t) not in frame]

    def initial_context(self, words: str | None, generator: torch.Generator) -> Tensor:
        """M x W start: the embeddings of ``words`` (CoCoOp's "a photo of a") or N(0, 0.02²) (CoOp)."""
        if words:
            ids = self._word_ids(words)
            if len(ids) != self.n_ctx:
                raise ValueError(f"--ctx-init {words!r} gives {len(ids)} tokens; --n-ctx is {self.n_ctx}")
            return self.table.weight[torch.tensor(ids)].detach().clone()
        return torch.randn(self.n_ctx, self.width, generator=generator) * 0.02

    def encode(self, ctx: Tensor, rows: Tensor) -> Tensor:
        tokens, slots = self.tokens[rows], self.slots[rows]

        def swap(_module: nn.Module, _inputs: object, output: Tensor) -> Tensor:
            # a tower may embed only the columns its batch uses (the open_clip tower trims padding)
            mask = slots[:, : output.shape[1]].unsqueeze(-1)
            return output.masked_scatter(mask, ctx.to(output.dtype).reshape(-1, output.shape[-1]))

        handle = self.table.register_forward_hook(swap)
        try:
            return F.normalize(self.model.encode_text(tokens), dim=-1)
        finally:
            handle.remove()
