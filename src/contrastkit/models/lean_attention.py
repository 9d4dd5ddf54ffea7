"""Self-attention for open_clip's transformer blocks without ``nn.MultiheadAttention``'s layout copies.

open_clip's ``ResidualAttentionBlock`` calls ``nn.MultiheadAttention(x, x, x, need_weights=False)``.
In training (grad enabled) torch's implementation transposes a batch-first input to sequence-first,
projects q, k and v as one packed matrix, splits it by ``unflatten -> transpose -> contiguous`` (whose
backward allocates and fills a 3 x L x N x E zero tensor per layer), makes each head contiguous,
runs ``scaled_dot_product_attention`` and transposes back. :class:`LeanSelfAttention` computes the
same function — the same packed projection ``x W_in^T + b_in``, the same SDPA kernel with the same
additive mask, the same output projection — on views of the batch-first projection::

    q, k, v = (x W_in^T + b_in).view(N, L, 3, H, E/H).permute(2, 0, 3, 1, 4)
    out = softmax(q k^T / sqrt(E/H) + mask) v  ->  (N, L, E) W_out^T + b_out

For the small ViT of ``benchmarks/train_throughput.py`` this removes about a tenth of the CPU time
of a training step (benchmarks/RESULTS.md). Parameters and state-dict keys are those of
``nn.MultiheadAttention`` (the class is swapped in place); anything the lean path does not cover —
cross-attention, key-padding or boolean masks, ``need_weights``, ``add_bias_kv``, ``add_zero_attn``,
separate q/k/v weights, inference without grad (where torch's fused fast path applies) — goes to
torch's own forward. Tested equal to ``nn.MultiheadAttention`` in values and gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LeanSelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with a copy-free self-attention path for training (see module docstring)."""

    def _lean(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None,
        need_weights: bool,
        attn_mask: Tensor | None,
        is_causal: bool,
    ) -> bool:
        return (
            torch.is_grad_enabled()
            and query is key
            and key is value
            and query.dim() == 3
            and key_padding_mask is None
            and not need_weights
            and not is_causal
            and (attn_mask is None or (attn_mask.is_floating_point() and attn_mask.dim() == 2))
            and self._qkv_same_embed_dim
            and self.bias_k is None
            and not self.add_zero_attn
        )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        if not self._lean(query, key, value, key_padding_mask, need_weights, attn_mask, is_causal):
            return super().forward(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                need_weights=need_weights,
                attn_mask=attn_mask,
                average_attn_weights=average_attn_weights,
                is_causal=is_causal,
            )
        x = query if self.batch_first else query.transpose(0, 1)
        batch, length, width = x.shape
        heads = self.num_heads
        packed = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = packed.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        out = F.linear(out.transpose(1, 2).reshape(batch, length, width), self.out_proj.weight, self.out_proj.bias)
        return (out if self.batch_first else out.transpose(0, 1)), None


def use_lean_attention(model: nn.Module) -> int:
    """Swap every plain ``nn.MultiheadAttention`` in ``model`` to :class:`LeanSelfAttention`; returns how many."""
    swapped = 0
    for module in model.modules():
        if type(module) is nn.MultiheadAttention:
            module.__class__ = LeanSelfAttention
            swapped += 1
    return swapped
