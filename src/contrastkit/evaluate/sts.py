"""Semantic textual similarity: how well cosine similarities rank sentence pairs against gold scores.

For pairs (a_i, b_i) with gold scores g_i and unit embeddings u(a_i), u(b_i), s_i = u(a_i) . u(b_i) and

    pearson_cosine  = Pearson r(s, g),      spearman_cosine = Spearman rho(s, g)

(scipy.stats; the names are sentence-transformers' EmbeddingSimilarityEvaluator's, and as SentEval and
the STS papers the headline number is Spearman's rho, x 100 in papers). Beside them, SimCSE's alignment and
uniformity measured on the same set (see :func:`evaluate_sts`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from scipy import stats
from torch import Tensor

from ..data.text_pairs import ScoredPair
from .geometry import alignment, uniformity

EmbedTexts = Callable[[Sequence[str]], Tensor]


def sts_correlations(scores: Sequence[float] | Tensor, gold: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation of predicted ``scores`` with ``gold`` (at least 2 pairs, gold not constant)."""
    s = torch.as_tensor(scores, dtype=torch.float64).tolist()
    g = [float(v) for v in gold]
    if len(s) != len(g):
        raise ValueError(f"{len(s)} scores for {len(g)} gold values")
    if len(s) < 2 or len(set(g)) < 2:
        raise ValueError("STS needs at least 2 pairs with different gold scores")
    return {
        "pearson_cosine": float(stats.pearsonr(s, g).statistic),
        "spearman_cosine": float(stats.spearmanr(s, g).statistic),
    }


def pair_embeddings(embed: EmbedTexts, pairs: Sequence[ScoredPair]) -> tuple[Tensor, Tensor, Tensor]:
    """Unit float64 embeddings of every pair's first and second text, and of every distinct text (embedded once)."""
    texts = list(dict.fromkeys([p.text_a for p in pairs] + [p.text_b for p in pairs]))
    at = {t: i for i, t in enumerate(texts)}
    emb = torch.nn.functional.normalize(embed(texts).to(torch.float64), dim=-1)
    return emb[[at[p.text_a] for p in pairs]], emb[[at[p.text_b] for p in pairs]], emb


def pair_cosines(embed: EmbedTexts, pairs: Sequence[ScoredPair]) -> Tensor:
    """Cosine of each pair's two texts."""
    a, b, _ = pair_embeddings(embed, pairs)
    return (a * b).sum(-1)


def evaluate_sts(embed: EmbedTexts, pairs: Sequence[ScoredPair]) -> dict[str, float]:
    """pearson_cosine, spearman_cosine, the number of pairs, and SimCSE's geometry on the set (Gao et al. 2021
    §5): ``alignment`` over the pairs scored at least 0.8 x the top gold score (STS-B: > 4 of 5) and
    ``uniformity`` over every sentence of the set (Wang & Isola 2020)."""
    a, b, every = pair_embeddings(embed, pairs)
    gold = [p.score for p in pairs]
    metrics = {**sts_correlations((a * b).sum(-1), gold), "pairs": float(len(pairs))}
    close = [i for i, g in enumerate(gold) if g >= 0.8 * max(gold)]
    metrics["alignment"] = alignment(a[close], b[close])
    metrics["uniformity"] = uniformity(every)
    return metrics
