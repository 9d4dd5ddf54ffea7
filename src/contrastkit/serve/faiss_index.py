"""Choose, build, tune and search a faiss index over L2-normalised embeddings (inner product = cosine).

The choice follows autofaiss's reasoning with fewer knobs:

- up to ``EXACT_MAX`` vectors: ``Flat`` (exact search; brute force is fast enough and needs no training);
- more, when the vectors fit the memory budget: ``IVF<k>,Flat`` with k ≈ 4·√n lists;
- more, when they do not: ``IVF<k>,PQ<m>`` (m byte-codes per vector, m dividing the dimension).

An approximate index is then tuned like autofaiss does: the smallest ``nprobe`` whose recall@10
against exact search, on held-out queries drawn from the collection, reaches ``target_recall``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

EXACT_MAX = 50_000


@dataclass
class IndexChoice:
    factory: str  # faiss.index_factory string
    nprobe: int = 1  # lists visited per query (IVF)
    recall_at_10: float = 1.0  # measured against exact search (1.0 for Flat)


def choose_factory(n: int, dim: int, memory_budget_bytes: int) -> str:
    """The index kind for ``n`` vectors of ``dim`` within ``memory_budget_bytes`` (see the module docstring)."""
    if n <= EXACT_MAX:
        return "Flat"
    lists = 2 ** round(math.log2(4 * math.sqrt(n)))
    if n * dim * 4 * 1.1 <= memory_budget_bytes:
        return f"IVF{lists},Flat"
    per_vector = max(8, memory_budget_bytes // max(n, 1))
    m = max(d for d in range(1, min(dim, per_vector, 64) + 1) if dim % d == 0)
    return f"IVF{lists},PQ{m}"


def recall_at_k(exact: np.ndarray, found: np.ndarray) -> float:
    """Mean over queries of |found ∩ exact| / k (rows of ids, -1 = none)."""
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(b[b >= 0])) / k for a, b in zip(exact, found)]))


def build(vectors: np.ndarray, memory_budget_bytes: int = 4 << 30, target_recall: float = 0.95, seed: int = 0):
    """(faiss index holding ``vectors`` in row order, the :class:`IndexChoice`)."""
    n, dim = vectors.shape
    factory = choose_factory(n, dim, memory_budget_bytes)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    if factory == "Flat":
        index.add(data)
        return index, IndexChoice(factory)
    rng = np.random.default_rng(seed)
    train_rows = rng.choice(n, size=min(n, 256 * faiss.extract_index_ivf(index).nlist), replace=False)
    index.train(data[np.sort(train_rows)])
    index.add(data)
    return index, tune_nprobe(index, data, factory, target_recall, rng)


def tune_nprobe(index, data: np.ndarray, factory: str, target: float, rng: np.random.Generator) -> IndexChoice:
    """The smallest power-of-two nprobe reaching ``target`` recall@10 on 200 perturbed collection vectors."""
    queries = data[rng.choice(len(data), size=min(200, len(data)), replace=False)]
    queries = queries + rng.normal(0, 0.05, queries.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = faiss.IndexFlatIP(data.shape[1])
    exact.add(data)
    _, truth = exact.search(queries, 10)
    ivf = faiss.extract_index_ivf(index)
    nprobe, recall = 1, 0.0
    while True:
        ivf.nprobe = nprobe
        recall = recall_at_k(truth, index.search(queries, 10)[1])
        if recall >= target or nprobe >= ivf.nlist:
            return IndexChoice(factory, nprobe, recall)
        nprobe *= 2


def save(index, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    faiss.write_index(index, str(tmp))
    tmp.replace(path)


def load(path: Path, nprobe: int):
    index = faiss.read_index(str(path))
    if nprobe > 1:
        faiss.extract_index_ivf(index).nprobe = nprobe
    return index
