"""MoCHi: hard negative mixing, in-batch version for image-text pairs.

Kalantidis et al. 2020, "Hard Negative Mixing for Contrastive Learning"
(NeurIPS 2020). No official code; defaults follow a public re-implementation
(N = 32, s = s' = 16; the paper used (N, s, s') like (1024, 1024, 128) over a
16k queue). This term has no queue: the negatives of an anchor are the other
rows of the global batch.

For an anchor q (an image; then, symmetrically, a caption) with positive k+
and in-batch negatives n (the other modality's other rows):

1. keep the N hardest negatives (largest q.n; the positive excluded);
2. s synthetic negatives h = normalize(a n_i + (1 - a) n_j), n_i, n_j drawn
   from those N, a ~ U(0, 1);
3. s' harder ones h' = normalize(b q + (1 - b) n_j), b ~ U(0, 0.5);
4. append t q.h and t q.h' as extra logit columns; CE on the positive.

Mixes are per anchor and detached (the copy of q inside h' too): only q in
q.h carries gradient. No B x (s + s') x D tensor is formed: with n detached,

    q.h  = (a q.n_i + (1 - a) q.n_j) / r,   r^2 = a^2 + (1 - a)^2 + 2 a (1 - a) n_i.n_j
    q.h' = (b q.sg(q) + (1 - b) q.n_j) / r', r'^2 = b^2 + (1 - b)^2 + 2 b (1 - b) sg(q).n_j

(unit vectors), with n_i.n_j read from the detached B x B Gram matrix.
L_mochi = 1/2 (L_image-anchors + L_text-anchors), at the CLIP logit scale t.
With s = s' = 0 (or fewer than two rows) it is exactly ``clip``.

Randomness comes from a generator seeded by ``seed`` (the same stream on every
rank; saved with the term). Mixing starts after ``start_step`` optimizer steps
(the re-implementation waits 5000-10000 steps; default 0); before that the
term equals ``clip``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..encoded import Encoded
from ._rng import SeededRandomMixin
from .base import Term, register_term


class MochiDraws(NamedTuple):
    """Random draws for one direction; positions index the anchor's N hardest negatives (0 = hardest)."""

    pair_pos: Tensor  # B x s x 2 long, positions of n_i and n_j
    alpha: Tensor  # B x s, a ~ U(0, 1)
    self_pos: Tensor  # B x s' long, position of n_j
    beta: Tensor  # B x s', b ~ U(0, beta_max)


def draw_mochi(
    batch: int, n_hard: int, n_mix: int, n_self_mix: int, beta_max: float, generator: torch.Generator
) -> MochiDraws:
    """Draw on the CPU (float64); ``n_hard`` is the effective N (<= batch - 1)."""
    hi = max(n_hard, 1)
    pair_pos = torch.randint(hi, (batch, n_mix, 2), generator=generator)
    alpha = torch.rand(batch, n_mix, generator=generator, dtype=torch.float64)
    self_pos = torch.randint(hi, (batch, n_self_mix), generator=generator)
    beta = torch.rand(batch, n_self_mix, generator=generator, dtype=torch.float64) * beta_max
    return MochiDraws(pair_pos, alpha, self_pos, beta)


def hardest_negatives(similarity: Tensor, n_hard: int) -> Tensor:
    """B x N indices of the N largest off-diagonal entries of each row (hardest first)."""
    sim = similarity.detach().clone()
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(n_hard, dim=1).indices


def mochi_direction(
    anchor: Tensor,
    keys: Tensor,
    logit_scale: Tensor,
    n_hard: int,
    draws: MochiDraws | None,
    anchor_sg: Tensor | None = None,
    keys_sg: Tensor | None = None,
) -> Tensor:
    """CE of anchors against [keys (positive on the diagonal), s mixes, s' self-mixes].

    ``anchor_sg`` / ``keys_sg`` are the stop-gradient copies the mixes are built from (default
    ``anchor.detach()`` / ``keys.detach()``); passing constants instead lets a finite-difference
    check (gradcheck) see the same function that autograd differentiates.
    """
    b = anchor.shape[0]
    labels = torch.arange(b, device=anchor.device)
    logits = anchor @ keys.t()
    n_mix = 0 if draws is None else draws.alpha.shape[1] + draws.beta.shape[1]
    n_hard = min(n_hard, b - 1)
    if draws is None or n_hard < 1 or n_mix == 0:
        return F.cross_entropy(logit_scale * logits, labels)
    dev, dt = anchor.device, anchor.dtype
    hard = hardest_negatives(logits, n_hard)  # B x N
    keys_d = keys.detach() if keys_sg is None else keys_sg
    anchor_d = anchor.detach() if anchor_sg is None else anchor_sg
    q_n = anchor @ keys_d.t()  # B x B: q . sg(n), gradient to the anchor only
    gram = keys_d @ keys_d.t()  # B x B: n_i . n_j, no gradient
    # s mixes of two hard negatives
    pos = draws.pair_pos.to(dev)
    idx_i = hard.gather(1, pos[..., 0])
    idx_j = hard.gather(1, pos[..., 1])
    a = draws.alpha.to(device=dev, dtype=dt)
    r = (a.pow(2) + (1 - a).pow(2) + 2 * a * (1 - a) * gram[idx_i, idx_j]).clamp_min(1e-12).sqrt()
    mix = (a * q_n.gather(1, idx_i) + (1 - a) * q_n.gather(1, idx_j)) / r
    # s' mixes of the (detached) anchor with a hard negative
    idx_k = hard.gather(1, draws.self_pos.to(dev))
    bb = draws.beta.to(device=dev, dtype=dt)
    q_k = q_n.gather(1, idx_k)
    q_q = (anchor * anchor_d).sum(dim=-1, keepdim=True)  # q . sg(q): value 1, gradient sg(q)
    sgq_k = (anchor_d @ keys_d.t()).gather(1, idx_k)  # sg(q) . sg(n_j)
    r2 = (bb.pow(2) + (1 - bb).pow(2) + 2 * bb * (1 - bb) * sgq_k).clamp_min(1e-12).sqrt()
    self_mix = (bb * q_q + (1 - bb) * q_k) / r2
    return F.cross_entropy(logit_scale * torch.cat([logits, mix, self_mix], dim=1), labels)


def mochi_loss(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor,
    n_hard: int,
    draws_image: MochiDraws | None,
    draws_text: MochiDraws | None,
) -> Tensor:
    """1/2 (image anchors vs text negatives + text anchors vs image negatives)."""
    return (
        mochi_direction(image, text, logit_scale, n_hard, draws_image)
        + mochi_direction(text, image, logit_scale, n_hard, draws_text)
    ) / 2


def _check_count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"mochi: {name} must be an integer >= {minimum}, got {value!r}")
    return value


@register_term
class MochiTerm(SeededRandomMixin, Term):
    steps: Tensor  # optimizer steps seen so far (buffer)
    name = "mochi"
    description = "MoCHi: CLIP InfoNCE plus synthetic hard negatives mixed from the N hardest in-batch negatives"

    def __init__(
        self,
        num_hard: int = 32,
        num_mix: int = 16,
        num_self_mix: int = 16,
        self_mix_max: float = 0.5,
        start_step: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_hard = _check_count("num_hard", num_hard, 1)
        self.num_mix = _check_count("num_mix", num_mix, 0)
        self.num_self_mix = _check_count("num_self_mix", num_self_mix, 0)
        self.start_step = _check_count("start_step", start_step, 0)
        self_mix_max = float(self_mix_max)
        if not 0.0 < self_mix_max <= 1.0:
            raise ValueError(f"mochi: self_mix_max must be in (0, 1] (the paper uses 0.5), got {self_mix_max}")
        self.self_mix_max = self_mix_max
        self._init_rng(seed)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def on_step_end(self) -> None:
        self.steps += 1

    def loss(self, enc: Encoded) -> Tensor:
        b = enc.batch_size
        n_hard = min(self.num_hard, b - 1)
        mixing = int(self.steps) >= self.start_step and n_hard >= 1 and self.num_mix + self.num_self_mix > 0
        if not mixing:
            return mochi_loss(enc.image, enc.text, enc.logit_scale, n_hard, None, None)
        draws_i = draw_mochi(b, n_hard, self.num_mix, self.num_self_mix, self.self_mix_max, self.generator)
        draws_t = draw_mochi(b, n_hard, self.num_mix, self.num_self_mix, self.self_mix_max, self.generator)
        return mochi_loss(enc.image, enc.text, enc.logit_scale, n_hard, draws_i, draws_t)
