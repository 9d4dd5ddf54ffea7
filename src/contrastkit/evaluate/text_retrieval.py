"""Text retrieval metrics with sentence-transformers' names (InformationRetrievalEvaluator).

For query q with relevant set R_q and the corpus ranked by score (ties: lower corpus index first), with
rel_r = 1 when the r-th hit (from 1) is relevant:

    accuracy@k  = 1[any of the top k is relevant]          precision@k = |top k ∩ R_q| / k
    recall@k    = |top k ∩ R_q| / |R_q|                    mrr@k       = 1 / (rank of the first relevant hit <= k)
    ndcg@k      = sum_{r<=k} rel_r / log2(r + 1)  /  sum_{r<=min(k,|R_q|)} 1 / log2(r + 1)
    map@k       = sum_{r<=k} rel_r * precision@r / min(k, |R_q|)

each averaged over the queries, prefixed ``cosine_`` as the peer names its cosine-score results.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

ACCURACY_AT = (1, 3, 5, 10)
PRECISION_RECALL_AT = (1, 3, 5, 10)
MRR_AT, NDCG_AT, MAP_AT = (10,), (10,), (100,)


def retrieval_metrics(scores: Tensor, relevant: Sequence[set[int]], prefix: str = "cosine_") -> dict[str, float]:
    """Metrics of a Q x N score matrix against each query's relevant corpus indices."""
    q, n = scores.shape
    if len(relevant) != q:
        raise ValueError(f"{q} queries but {len(relevant)} relevant sets")
    if any(not r for r in relevant):
        raise ValueError("every query needs at least one relevant document")
    depth = min(n, max(*ACCURACY_AT, *PRECISION_RECALL_AT, *MRR_AT, *NDCG_AT, *MAP_AT))
    # a stable sort of the negated scores ranks ties by corpus index, as the peer does
    order = torch.sort(-scores.to(torch.float64), dim=1, stable=True).indices[:, :depth]
    rows = order.tolist()
    hits = torch.tensor([[j in relevant[i] for j in row] for i, row in enumerate(rows)], dtype=torch.float64)
    n_rel = torch.tensor([len(r) for r in relevant], dtype=torch.float64)
    ranks = torch.arange(1, depth + 1, dtype=torch.float64)
    discount = 1.0 / torch.log2(ranks + 1)
    out: dict[str, float] = {}
    for k in ACCURACY_AT:
        out[f"accuracy@{k}"] = float((hits[:, :k].sum(1) > 0).double().mean())
    for k in PRECISION_RECALL_AT:
        found = hits[:, :k].sum(1)
        out[f"precision@{k}"] = float((found / k).mean())
        out[f"recall@{k}"] = float((found / n_rel).mean())
    for k in MRR_AT:
        first = torch.where(hits[:, :k] > 0, ranks[:k], torch.inf).min(1).values
        out[f"mrr@{k}"] = float((1.0 / first).mean())
    for k in NDCG_AT:
        dcg = (hits[:, :k] * discount[:k]).sum(1)
        ideal = torch.stack([discount[: min(k, int(m))].sum() for m in n_rel])
        out[f"ndcg@{k}"] = float((dcg / ideal).mean())
    for k in MAP_AT:
        precision_at_r = hits[:, :k].cumsum(1) / ranks[: hits[:, :k].shape[1]]
        out[f"map@{k}"] = float(((hits[:, :k] * precision_at_r).sum(1) / n_rel.clamp(max=k)).mean())
    return {prefix + name: value for name, value in out.items()}
