"""Tip-Adapter: a training-free few-shot cache model on top of the zero-shot head.

Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification", ECCV 2022.
The k-shot training images' L2-normalised embeddings are the cache keys F (N x D), their one-hot labels
the values L (N x C). For a query embedding f (1 x D) and the zero-shot class weights W (C x D):

    A      = exp(-β · (1 − f Fᵀ))                 affinity of the query to every cached shot
    logits = s · f Wᵀ + α · A L                   zero-shot logits plus the cache's votes

with s the model's logit scale (the paper uses CLIP's 100), α the weight of the cache and β its
sharpness. α and β are chosen on a validation split (the paper searches a grid too).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHAS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
BETAS: tuple[float, ...] = (1.0, 2.5, 5.5, 8.0, 12.0)


def affinity(query: Tensor, keys: Tensor, beta: float) -> Tensor:
    """A = exp(−β (1 − q Kᵀ)) for L2-normalised rows: Q x N."""
    return torch.exp(-beta * (1.0 - query @ keys.T))


def tip_adapter_logits(
    query: Tensor,
    class_weights: Tensor,
    keys: Tensor,
    key_labels: Tensor,
    *,
    alpha: float,
    beta: float,
    scale: float,
) -> Tensor:
    """Q x C logits: s · q Wᵀ + α · A L (see the module docstring)."""
    values = F.one_hot(key_labels.long(), class_weights.shape[0]).to(query.dtype)
    return scale * query @ class_weights.T + alpha * affinity(query, keys, beta) @ values


def choose_alpha_beta(
    val_query: Tensor,
    val_labels: Tensor,
    class_weights: Tensor,
    keys: Tensor,
    key_labels: Tensor,
    *,
    scale: float,
    alphas: Sequence[float] = ALPHAS,
    betas: Sequence[float] = BETAS,
) -> tuple[float, float, float]:
    """(α, β, validation accuracy) maximising validation top-1; the first of the grid on ties."""
    best = (alphas[0], betas[0], -1.0)
    for alpha in alphas:
        for beta in betas:
            logits = tip_adapter_logits(val_query, class_weights, keys, key_labels, alpha=alpha, beta=beta, scale=scale)
            accuracy = float((logits.argmax(dim=1) == val_labels).float().mean())
            if accuracy > best[2]:
                best = (alpha, beta, accuracy)
    return best
