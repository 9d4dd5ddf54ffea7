"""Geometry of a joint embedding space (METHODS.md section D).

All functions take torch tensors of N x D embeddings, L2-normalise the rows
first (so they measure the unit sphere even if handed raw features) and work
in float64. ``x`` is the image side, ``y`` the text side; where a function
needs pairs, row i of ``x`` and row i of ``y`` are a matched pair.

Definitions (u_i = x_i / ||x_i||, v_i = y_i / ||y_i||, N pairs):

- ``modality_gap``: || mean_i u_i - mean_i v_i ||_2 (Liang et al. 2022).
- ``centroid_cosine``: cosine between the two centroids.
- ``centroid_mse``: gap^2 / D (what CLIP-Refine logs).
- ``mean_positive_cosine``: mean_i u_i . v_i.
- ``mean_negative_cosine``: mean_{i != j} u_i . v_j.
- ``uniformity``: log mean_{i<j} exp(-t ||u_i - u_j||^2), t = 2 (Wang & Isola
  2020), computed from the Gram matrix (||u-v||^2 = ||u||^2 + ||v||^2 - 2 u.v)
  in row chunks with log-sum-exp. Lower is more uniform; the minimum for
  points spread over S^{D-1} approaches -2t = -4 as D grows.
- ``alignment``: mean_i ||u_i - v_i||^2 (= 2 - 2 mean positive cosine).
- ``linear_separability``: test accuracy of a logistic regression telling
  {u_i: 0} from {v_i: 1}, trained on 80% of the pairs and tested on the other
  20% (split by pair, so u_i and v_i fall on the same side). Chance is 0.5.
- ``effective_rank``: exp(H(p)) with p_k = sigma_k / sum sigma the normalised
  singular values of the (uncentred) N x D matrix (Roy & Vetterli 2007): 1 for
  points on one line, D for an isotropic cloud.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _unit(x: Tensor) -> Tensor:
    if x.ndim != 2:
        raise ValueError(f"expected an N x D tensor, got shape {tuple(x.shape)}")
    return F.normalize(x.detach().to(device="cpu", dtype=torch.float64), dim=-1)


def _pairs(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.shape != y.shape:
        raise ValueError(f"paired metrics need equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    return _unit(x), _unit(y)


def modality_gap(x: Tensor, y: Tensor) -> float:
    """L2 distance between the centroids of the normalised ``x`` and ``y`` rows."""
    return (_unit(x).mean(0) - _unit(y).mean(0)).norm().item()


def centroid_cosine(x: Tensor, y: Tensor) -> float:
    """Cosine similarity of the centroids of the normalised ``x`` and ``y`` rows."""
    return F.cosine_similarity(_unit(x).mean(0), _unit(y).mean(0), dim=0).item()


def mean_positive_cosine(x: Tensor, y: Tensor) -> float:
    """Mean cosine of matched pairs (x_i, y_i)."""
    u, v = _pairs(x, y)
    return (u * v).sum(-1).mean().item()


def mean_negative_cosine(x: Tensor, y: Tensor) -> float:
    """Mean cosine of unmatched pairs (x_i, y_j), i != j, without forming the N x N matrix."""
    u, v = _pairs(x, y)
    n = u.shape[0]
    if n < 2:
        raise ValueError("mean_negative_cosine needs at least 2 pairs")
    total = u.sum(0) @ v.sum(0) - (u * v).sum()
    return (total / (n * (n - 1))).item()


def uniformity(x: Tensor, t: float = 2.0, *, chunk_size: int | None = None) -> float:
    """log mean_{i<j} exp(-t ||u_i - u_j||^2) over normalised rows (Wang & Isola 2020).

    Rows are processed ``chunk_size`` at a time (default: about 4M Gram entries per chunk).
    """
    u = _unit(x)
    n = u.shape[0]
    if n < 2:
        raise ValueError("uniformity needs at least 2 points")
    if chunk_size is None:
        chunk_size = max(1, 4_000_000 // n)
    sq = (u * u).sum(-1)
    parts = []
    for start in range(0, n - 1, chunk_size):
        end = min(start + chunk_size, n - 1)
        rows = u[start:end]
        d2 = (sq[start:end, None] + sq[None, :] - 2.0 * rows @ u.T).clamp_min(0.0)
        lower = torch.arange(n)[None, :] <= torch.arange(start, end)[:, None]  # keep only j > i
        parts.append(torch.logsumexp((-t * d2).masked_fill_(lower, float("-inf")).view(-1), dim=0))
    n_pairs = n * (n - 1) / 2
    return (torch.logsumexp(torch.stack(parts), dim=0) - math.log(n_pairs)).item()


def alignment(x: Tensor, y: Tensor) -> float:
    """Mean squared distance of matched pairs, mean_i ||u_i - v_i||^2 (Wang & Isola, alpha = 2)."""
    u, v = _pairs(x, y)
    return (u - v).pow(2).sum(-1).mean().item()


def linear_separability(
    x: Tensor, y: Tensor, *, train_fraction: float = 0.8, seed: int = 0, max_pairs: int | None = 10000,
) -> float:
    """Held-out accuracy of logistic regression separating x (label 0) from y (label 1).

    Pairs are shuffled with ``seed`` and split ``train_fraction`` / rest, so a
    pair's x and y land on the same side. At most ``max_pairs`` pairs are used
    (a random subset) to bound the cost. Needs at least 2 pairs.
    """
    from sklearn.linear_model import LogisticRegression

    u, v = _pairs(x, y)
    n = u.shape[0]
    if n < 2:
        raise ValueError("linear_separability needs at least 2 pairs")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if max_pairs is not None and n > max_pairs:
        perm = perm[:max_pairs]
    n_used = len(perm)
    n_train = min(max(1, int(round(train_fraction * n_used))), n_used - 1)
    train, test = perm[:n_train], perm[n_train:]
    un, vn = u.numpy(), v.numpy()

    def stack(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feats = np.concatenate([un[idx], vn[idx]])
        labels = np.concatenate([np.zeros(len(idx)), np.ones(len(idx))])
        return feats, labels

    clf = LogisticRegression(max_iter=2000)
    clf.fit(*stack(train))
    feats, labels = stack(test)
    return float((clf.predict(feats) == labels).mean())


def effective_rank(x: Tensor, *, eps: float = 1e-12) -> float:
    """exp of the Shannon entropy of the normalised singular values of the normalised rows."""
    s = torch.linalg.svdvals(_unit(x))
    if s.sum() <= eps:
        return 0.0
    p = s / s.sum()
    p = p[p > eps]
    return math.exp(-(p * p.log()).sum().item())


def geometry_metrics(
    image_emb: Tensor, text_emb: Tensor, *, seed: int = 0, uniformity_t: float = 2.0,
) -> dict[str, Any]:
    """Every metric of this module on matched image/text rows, by name.

    Keys: ``modality_gap``, ``centroid_cosine``, ``centroid_mse``,
    ``mean_positive_cosine``, ``mean_negative_cosine``, ``alignment``,
    ``uniformity_image``, ``uniformity_text``, ``linear_separability``,
    ``effective_rank_image``, ``effective_rank_text``, ``n_pairs``, ``dim``.
    Metrics that need 2 or more pairs are NaN with a single pair.
    """
    u, v = _pairs(image_emb, text_emb)
    n, d = u.shape
    gap = modality_gap(u, v)
    many = n >= 2
    return {
        "modality_gap": gap,
        "centroid_cosine": centroid_cosine(u, v),
        "centroid_mse": gap * gap / d,
        "mean_positive_cosine": mean_positive_cosine(u, v),
        "mean_negative_cosine": mean_negative_cosine(u, v) if many else math.nan,
        "alignment": alignment(u, v),
        "uniformity_image": uniformity(u, uniformity_t) if many else math.nan,
        "uniformity_text": uniformity(v, uniformity_t) if many else math.nan,
        "linear_separability": linear_separability(u, v, seed=seed) if many else math.nan,
        "effective_rank_image": effective_rank(u),
        "effective_rank_text": effective_rank(v),
        "n_pairs": n,
        "dim": d,
    }
