"""CoCa captioning loss with a small text decoder owned by the term.

Yu et al. 2022, "CoCa: Contrastive Captioners are Image-Text Foundation Models"
(reference implementation: open_clip ``CoCa`` / ``CoCaLoss``). Use with ``clip``:
L = 1.0 L_con + 2.0 L_cap (docs/methods.md A14).

The decoder reads the caption tokens y (``enc.caption_tokens``, B x L, right-padded
with ``enc.pad_token_id``) and cross-attends to the image tokens
(``enc.image_tokens``, B x N x F, projected lazily to the decoder width and
layer-normed). Teacher forcing: position t sees y_<=t and predicts y_{t+1}:

    L_cap = -(1 / #{(i,t): y_i,t+1 != pad}) sum_{i,t: y_i,t+1 != pad} log P(y_i,t+1 | y_i,<=t, image_i)

i.e. the mean over non-pad target tokens (open_clip: ``CrossEntropyLoss(ignore_index=pad)``).
The paper sums over tokens; the mean keeps the weight independent of caption length.

Decoder: token + learned positional embeddings, ``layers`` pre-norm blocks of
causal self-attention, cross-attention to the image tokens and a GELU MLP
(``nn.TransformerDecoderLayer``), a final LayerNorm and a bias-free vocabulary
projection. :meth:`CocaCaptionTerm.generate` decodes greedily for demos.

docs/methods.md notes that the caption loss is local (no gather): the term averages over
whatever rows it is handed, so an engine may hand it the local rows only.
The image projection is lazy: see :mod:`contrastkit.objectives._heads` for the
dry-forward contract.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoded import Encoded
from ._heads import positive_int
from .base import Term, register_term


def caption_loss(logits: Tensor, targets: Tensor, pad_token_id: int) -> Tensor:
    """Mean token cross-entropy over the non-pad targets (``logits``: B x T x V, ``targets``: B x T)."""
    keep = targets != pad_token_id
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], targets[keep])


def _causal_mask(length: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.triu(torch.full((length, length), float("-inf"), device=device, dtype=dtype), diagonal=1)


@register_term
class CocaCaptionTerm(Term):
    name = "coca_caption"
    description = "CoCa captioning: teacher-forced token CE of a small decoder cross-attending to image tokens"
    requires: tuple[str, ...] = ("image_tokens", "caption_tokens")

    def __init__(
        self,
        vocab_size: int,
        width: int = 256,
        layers: int = 2,
        heads: int = 4,
        context_length: int = 77,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        for key, value in (
            ("vocab_size", vocab_size),
            ("width", width),
            ("layers", layers),
            ("heads", heads),
            ("context_length", context_length),
        ):
            positive_int(self.name, key, value)
        if context_length < 2:
            raise ValueError(
                f"coca_caption: context_length must be >= 2 (a start token and one target), got {context_length}"
            )
        if width % heads:
            raise ValueError(f"coca_caption: width {width} must be divisible by heads {heads}")
        if not mlp_ratio > 0:
            raise ValueError(f"coca_caption: mlp_ratio must be > 0, got {mlp_ratio}")
        self.vocab_size, self.width, self.context_length = vocab_size, width, context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.image_proj = nn.LazyLinear(width)
        self.image_ln = nn.LayerNorm(width)
        block = nn.TransformerDecoderLayer(
            width,
            heads,
            dim_feedforward=round(width * mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(block, layers)
        self.ln_final = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab_size, bias=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def encode_image(self, image_tokens: Tensor) -> Tensor:
        """B x N x F image tokens -> B x N x width decoder memory."""
        return self.image_ln(self.image_proj(image_tokens))

    def decode(self, tokens: Tensor, memory: Tensor) -> Tensor:
        """Next-token logits B x T x vocab for the input tokens B x T (T <= context_length)."""
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        mask = _causal_mask(length, x.device, x.dtype)
        x = self.decoder(x, memory, tgt_mask=mask)
        return self.lm_head(self.ln_final(x))

    def loss(self, enc: Encoded) -> Tensor:
        tokens, image_tokens = enc.caption_tokens, enc.image_tokens
        assert tokens is not None and image_tokens is not None
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"objective term {self.name!r}: caption_tokens must be a B x L integer tensor, "
                f"got {tuple(tokens.shape)} {tokens.dtype}"
            )
        if image_tokens.ndim != 3 or image_tokens.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"objective term {self.name!r}: image_tokens must be B x N x F with B = "
                f"{tokens.shape[0]} (as caption_tokens), got {tuple(image_tokens.shape)}"
            )
        if not 2 <= tokens.shape[1] <= self.context_length:
            raise ValueError(
                f"objective term {self.name!r}: caption_tokens length {tokens.shape[1]} must be in "
                f"[2, context_length={self.context_length}]"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(
                f"objective term {self.name!r}: caption token ids must be in [0, vocab_size="
                f"{self.vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        tokens = tokens.long()
        logits = self.decode(tokens[:, :-1], self.encode_image(image_tokens))
        return caption_loss(logits, tokens[:, 1:], enc.pad_token_id)

    @torch.no_grad()
    def generate(
        self, image_tokens: Tensor, bos_id: int, eos_id: int, max_len: int | None = None, pad_id: int = 0
    ) -> Tensor:
        """Greedy captions: B x T ids (T <= max_len) starting with ``bos_id``; after a row's
        ``eos_id`` the row is filled with ``pad_id``. Stops when every row has ended."""
        max_len = self.context_length if max_len is None else max_len
        if not 2 <= max_len <= self.context_length:
            raise ValueError(f"coca_caption.generate: max_len must be in [2, {self.context_length}], got {max_len}")
        memory = self.encode_image(image_tokens)
        rows = image_tokens.shape[0]
        seq = torch.full((rows, 1), bos_id, dtype=torch.long, device=image_tokens.device)
        done = torch.zeros(rows, dtype=torch.bool, device=image_tokens.device)
        for _ in range(max_len - 1):
            nxt = self.decode(seq, memory)[:, -1].argmax(dim=-1)
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            done |= nxt == eos_id
            if bool(done.all()):
                break
        return seq
