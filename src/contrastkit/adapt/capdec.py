"""CapDec: a caption decoder trained on text embeddings only, run on image embeddings.

Nukrai, Mokady & Globerson, "Text-Only Training for Image Captioning using Noise-Injected CLIP" (2022):
a decoder learns to reproduce a caption from its own text embedding, with Gaussian noise injected into
the embedding, e' = normalize(e_t + ε), ε ~ N(0, w² I) (CapDec's variance 0.016, w ≈ 0.126), so that at
test time it can caption from the embedding of an image, which lies near but not on the text points
(the modality gap). Optionally the mean shift μ_img − μ_txt is added before the noise (CLOSE; see
:mod:`~contrastkit.adapt.text_only`).

The decoder here is small and trained from scratch (CapDec prefixes GPT-2): the embedding is mapped by a
linear layer to P prefix vectors, followed by the caption's word embeddings, through a causal transformer
whose outputs after the prefix predict the next word:

    L = − Σ_t log p(w_t | prefix(e'), w_<t),   greedy decoding at test time.

The vocabulary is the training captions' words (lower-cased, as the built-in tokenizer splits them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.tokenizer import HashedWordTokenizer
from .text_only import inject_noise

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class CaptionVocab:
    """Words of the training captions, with padding, start, end and unknown."""

    def __init__(self, captions: Sequence[str]) -> None:
        words = sorted({w for c in captions for w in HashedWordTokenizer.words(c)})
        self.words = [*SPECIALS, *words]
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, captions: Sequence[str], length: int) -> Tensor:
        """B x length ids: <bos> words <eos> <pad>... (cut to fit)."""
        out = torch.full((len(captions), length), PAD, dtype=torch.long)
        for row, caption in enumerate(captions):
            ids = [BOS, *(self.index.get(w, UNK) for w in HashedWordTokenizer.words(caption))][: length - 1] + [EOS]
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """The words up to the first <eos> (specials dropped)."""
        words = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                words.append(self.words[i])
        return " ".join(words)


class PrefixCaptioner(nn.Module):
    """Embedding -> P prefix vectors -> causal transformer over [prefix, words] -> next-word logits."""

    def __init__(
        self, embed_dim: int, vocab_size: int, width: int = 128, layers: int = 2, prefix: int = 4, length: int = 24
    ) -> None:
        super().__init__()
        self.prefix_len, self.width, self.length = prefix, width, length
        self.prefix = nn.Linear(embed_dim, prefix * width)
        self.embed = nn.Embedding(vocab_size, width, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(1, prefix + length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, max(1, width // 32), 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, embedding: Tensor, tokens: Tensor) -> Tensor:
        """B x T x V logits; position t predicts token t + 1."""
        n, t = tokens.shape
        h = torch.cat([self.prefix(embedding).view(n, self.prefix_len, self.width), self.embed(tokens)], dim=1)
        h = h + self.pos[:, : self.prefix_len + t]
        mask = nn.Transformer.generate_square_subsequent_mask(h.shape[1], device=h.device, dtype=h.dtype)
        return self.head(self.norm(self.body(h, mask=mask, is_causal=True))[:, self.prefix_len :])

    @torch.no_grad()
    def generate(self, embedding: Tensor) -> Tensor:
        """Greedy ids (B x ≤ length), starting from <bos>; rows stop growing at <eos>."""
        tokens = torch.full((len(embedding), 1), BOS, dtype=torch.long)
        done = torch.zeros(len(embedding), dtype=torch.bool)
        for _ in range(self.length - 1):
            step = self(embedding, tokens)[:, -1].argmax(-1)
            step = torch.where(done, torch.full_like(step, PAD), step)
            tokens = torch.cat([tokens, step[:, None]], dim=1)
            done |= step == EOS
            if bool(done.all()):
                break
        return tokens[:, 1:]


def caption_loss(model: PrefixCaptioner, embedding: Tensor, tokens: Tensor) -> Tensor:
    """Mean next-word cross-entropy over the non-padding targets."""
    logits = model(embedding, tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=PAD)


@dataclass(frozen=True)
class DecoderSettings:
    steps: int = 300
    lr: float = 1e-3
    batch_size: int = 64
    width: int = 128
    layers: int = 2


def train_captioner(
    text: Tensor,
    tokens: Tensor,
    vocab_size: int,
    *,
    w: float,
    shift: Tensor | None,
    settings: DecoderSettings,
    seed: int,
) -> PrefixCaptioner:
    """A decoder trained to reproduce ``tokens[i]`` from normalize(text[i] (+ shift) + noise of std w)."""
    torch.manual_seed(seed)
    model = PrefixCaptioner(text.shape[1], vocab_size, settings.width, settings.layers, length=tokens.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    base = text if shift is None else text + shift
    model.train()
    for _ in range(settings.steps):
        rows = torch.randint(len(text), (min(settings.batch_size, len(text)),), generator=generator)
        loss = caption_loss(model, inject_noise(base[rows], w, generator), tokens[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
