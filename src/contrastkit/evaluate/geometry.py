"""Geometry of a joint embedding space (docs/methods.md D).

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

Temperature diagnostics (Wang & Liu 2021, "Understanding the behaviour of
contrastive loss"), for anchor i with matched partner i and negatives j != i,
s_ij = u_i . v_j and temperature tau:

- the penalty on negative j is r_i(j) = exp(s_ij/tau) / sum_{k != i} exp(s_ik/tau):
  the share of the anchor's negative gradient that j receives (dL/ds_ij =
  P_ij / tau for j != i, so r_i is P_i restricted to the negatives and renormalised);
- ``hardness_top{k}``: mean over anchors of the summed r_i of the k hardest
  negatives: k/(N-1) when all negatives are equally similar, -> 1 as tau -> 0
  when one negative is closest;
- ``effective_negatives``: mean over anchors of exp(H(r_i)), the effective
  number of negatives: N-1 for uniform r_i, 1 when one negative takes all;
  ``effective_negatives_fraction`` divides it by N-1.
  Both are averaged over the two directions (image anchors against text
  negatives and text anchors against image negatives); ``temperature`` is tau.
- ``tolerance``: mean cosine u_a . u_b over pairs a != b of the same class
  (needs labels; computed per modality from class sums without an N x N
  matrix): 1 when each class collapses to one point, ~0 for random directions.
  ``tolerance_image`` / ``tolerance_text`` in :func:`geometry_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    x: Tensor,
    y: Tensor,
    *,
    train_fraction: float = 0.8,
    seed: int = 0,
    max_pairs: int | None = 10000,
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
    n_train = min(max(1, round(train_fraction * n_used)), n_used - 1)
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


def _negative_weight_stats(
    a: Tensor, c: Tensor, tau: float, ks: Sequence[int], chunk_size: int
) -> tuple[dict[int, float], float]:
    """Sums over anchors a_i of the top-k penalty shares and of exp(H(r_i)), negatives c_j (j != i)."""
    n = a.shape[0]
    top = {k: 0.0 for k in ks}
    eff = 0.0
    for start in range(0, n, chunk_size):
        end = min(start + chunk_size, n)
        logits = (a[start:end] @ c.T) / tau
        rows = torch.arange(end - start)
        logits[rows, rows + start] = float("-inf")  # the positive is not a negative
        log_r = torch.log_softmax(logits, dim=1)
        r = log_r.exp()
        entropy = -torch.where(r > 0, r * log_r, torch.zeros_like(r)).sum(dim=1)
        eff += entropy.exp().sum().item()
        for k in ks:
            top[k] += r.topk(min(k, n - 1), dim=1).values.sum(dim=1).sum().item()
    return top, eff


def temperature_diagnostics(
    x: Tensor,
    y: Tensor,
    tau: float = 0.07,
    *,
    ks: Sequence[int] = (1, 10),
    direction: str = "both",
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Hardness (top-k share of the negative gradient) and effective number of negatives at ``tau``.

    ``direction``: ``"image"`` (image anchors, text negatives), ``"text"``, or
    ``"both"`` (the mean of the two). Needs at least 2 pairs. Keys:
    ``temperature``, ``hardness_top{k}`` for k in ``ks``, ``effective_negatives``,
    ``effective_negatives_fraction``. Anchors are processed ``chunk_size`` rows
    at a time (default: about 4M similarities per chunk).
    """
    if tau <= 0:
        raise ValueError(f"temperature must be positive, got {tau}")
    if direction not in ("image", "text", "both"):
        raise ValueError(f"direction must be image, text or both, got {direction!r}")
    for k in ks:
        if k < 1:
            raise ValueError(f"hardness k must be >= 1, got {k}")
    u, v = _pairs(x, y)
    n = u.shape[0]
    if n < 2:
        raise ValueError("temperature diagnostics need at least 2 pairs")
    chunk = chunk_size or max(1, 4_000_000 // n)
    sides = {"image": [(u, v)], "text": [(v, u)], "both": [(u, v), (v, u)]}[direction]
    top = {k: 0.0 for k in ks}
    eff = 0.0
    for a, c in sides:
        t, e = _negative_weight_stats(a, c, tau, ks, chunk)
        eff += e
        for k in ks:
            top[k] += t[k]
    count = n * len(sides)
    out = {"temperature": float(tau)}
    for k in ks:
        out[f"hardness_top{k}"] = top[k] / count
    out["effective_negatives"] = eff / count
    out["effective_negatives_fraction"] = eff / count / (n - 1)
    return out


def tolerance(x: Tensor, labels: Sequence[int] | Tensor) -> float:
    """Mean cosine of same-class pairs (a != b) of the normalised rows; labels < 0 are unlabelled.

    NaN when no class has two members.
    """
    u = _unit(x)
    lab = torch.as_tensor(labels, dtype=torch.long).view(-1)
    if lab.numel() != u.shape[0]:
        raise ValueError(f"tolerance: {u.shape[0]} embeddings but {lab.numel()} labels")
    keep = lab >= 0
    u, lab = u[keep], lab[keep]
    if lab.numel() == 0:
        return math.nan
    _, inverse = torch.unique(lab, return_inverse=True)
    n_classes = int(inverse.max()) + 1
    sums = torch.zeros(n_classes, u.shape[1], dtype=u.dtype).index_add_(0, inverse, u)
    counts = torch.bincount(inverse, minlength=n_classes).to(u.dtype)
    self_sim = torch.zeros(n_classes, dtype=u.dtype).index_add_(0, inverse, (u * u).sum(-1))
    pair_sum = ((sums * sums).sum(-1) - self_sim).sum() / 2  # sum over a < b of u_a . u_b
    n_pairs = (counts * (counts - 1) / 2).sum()
    return (pair_sum / n_pairs).item() if n_pairs > 0 else math.nan


def geometry_metrics(
    image_emb: Tensor,
    text_emb: Tensor,
    *,
    seed: int = 0,
    uniformity_t: float = 2.0,
    temperature: float | None = None,
    hardness_ks: Sequence[int] = (1, 10),
    labels: Sequence[int] | Tensor | None = None,
) -> dict[str, Any]:
    """Every metric of this module on matched image/text rows, by name.

    Keys: ``modality_gap``, ``centroid_cosine``, ``centroid_mse``,
    ``mean_positive_cosine``, ``mean_negative_cosine``, ``alignment``,
    ``uniformity_image``, ``uniformity_text``, ``linear_separability``,
    ``effective_rank_image``, ``effective_rank_text``, ``n_pairs``, ``dim``;
    the temperature diagnostics at ``temperature`` (the model's own tau when the
    caller knows it, else CLIP's initial 0.07): ``temperature``,
    ``hardness_top{k}`` for k in ``hardness_ks``, ``effective_negatives``,
    ``effective_negatives_fraction``; with ``labels`` (one class id per pair,
    < 0 for unlabelled): ``tolerance_image``, ``tolerance_text`` and ``n_labelled``.
    Metrics that need 2 or more pairs are NaN with a single pair.
    """
    u, v = _pairs(image_emb, text_emb)
    n, d = u.shape
    gap = modality_gap(u, v)
    many = n >= 2
    out: dict[str, Any] = {
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
    tau = 0.07 if temperature is None else float(temperature)
    if many:
        out.update(temperature_diagnostics(u, v, tau, ks=hardness_ks))
    else:
        out.update(
            {
                "temperature": tau,
                **{f"hardness_top{k}": math.nan for k in hardness_ks},
                "effective_negatives": math.nan,
                "effective_negatives_fraction": math.nan,
            }
        )
    if labels is not None:
        lab = torch.as_tensor(labels, dtype=torch.long).view(-1)
        if lab.numel() != n:
            raise ValueError(f"geometry: {n} pairs but {lab.numel()} labels")
        out["tolerance_image"] = tolerance(u, lab)
        out["tolerance_text"] = tolerance(v, lab)
        out["n_labelled"] = int((lab >= 0).sum())
    return out
