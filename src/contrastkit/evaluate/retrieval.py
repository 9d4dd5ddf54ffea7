"""Image-text retrieval recall@k, with CLIP_benchmark's metric names and definitions.

Inputs: M image embeddings, T text embeddings and ``text_to_image[j]``, the
image that caption j belongs to (an image may own several captions). Scores
are cosine similarities.

- ``image_retrieval_recall@k`` (text -> image): the fraction of captions whose
  own image is among the k images most similar to the caption.
- ``text_retrieval_recall@k`` (image -> text): the fraction of images (that own
  at least one caption) with at least one of their captions among the k texts
  most similar to the image.

Ties. Let s* be the best score of a query's positives, g the number of
negatives scoring above s*, t the number of negatives and m the number of
positives scoring equal to s* (within ``tie_tol``). The top-k list then holds
the g negatives, then k - g items drawn from the tied block of t + m. A hit is
certain when k - g > t, impossible when k <= g, and otherwise has probability
1 - C(t, k-g) / C(t+m, k-g): the expected value of CLIP_benchmark's
``torch.topk`` answer under a random order of tied items. Without ties this is
exactly "g < k", i.e. CLIP_benchmark's definition; with exact ties (repeated
captions embed identically) it is deterministic and independent of chunking.

Memory: queries are processed ``chunk_size`` at a time, so at most
``chunk_size x max(M, T)`` scores exist at once (never the full T x M matrix
unless it is small); the default chunk holds about 16M scores (64 MB, plus two
boolean masks of the same shape). Float32 unit-norm inputs are used in place,
not copied. For M = 100k images, T = 500k captions and D = 768 the embeddings
take 1.8 GB, a chunk (33 queries x 500k) about 100 MB and the per-query counts
a few MB: well under 3 GB in all (:func:`peak_bytes`).

``recall_curve`` (when ``curve_ks`` is given): ``{"k": [...],
"image_retrieval": [...], "text_retrieval": [...]}``, the two recalls at every k
of ``curve_ks`` (for the recall@k plot), from the same ranks as the headline keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
CURVE_KS: tuple[int, ...] = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100)
SCORE_BUDGET = 1 << 24  # scores per query chunk (64 MB of float32)
MAX_CHUNK = 4096


def default_chunk_size(n_images: int, n_texts: int, budget: int | None = None) -> int:
    """Queries per chunk so that a chunk's score block stays within ``budget`` (:data:`SCORE_BUDGET`) entries."""
    budget = SCORE_BUDGET if budget is None else budget
    return max(1, min(MAX_CHUNK, budget // max(n_images, n_texts, 1)))


def peak_bytes(
    n_images: int, n_texts: int, dim: int, *, chunk_size: int | None = None, captions_per_image: int = 5
) -> int:
    """Upper estimate of the memory :func:`retrieval_metrics` holds at once (float32 inputs)."""
    chunk = chunk_size or default_chunk_size(n_images, n_texts)
    gallery = max(n_images, n_texts)
    embeddings = 4 * dim * (n_images + n_texts)
    scores = chunk * gallery * (4 + 1 + 1)  # float scores + two boolean masks
    positives = 8 * n_images * captions_per_image + 8 * n_texts * 3  # padded positives, index sorts
    counts = 8 * 4 * (n_images + n_texts)
    return embeddings + scores + positives + counts


def _unit32(x: Tensor) -> Tensor:
    """Rows as float32 unit vectors; a float32 input already normalised is returned as is (no copy)."""
    if x.dtype == torch.float32 and x.numel() and ((x.norm(dim=-1) - 1).abs().max() <= 1e-5):
        return x
    return F.normalize(x.float(), dim=-1)


def _hit_probability(greater: Tensor, tied_neg: Tensor, tied_pos: Tensor, k: int) -> Tensor:
    """P(at least one positive in the top k) for each query, given counts (see module docstring)."""
    g = greater.double()
    t = tied_neg.double()
    m = tied_pos.double()
    r = k - g  # slots left for the tied block
    miss = torch.ones_like(g)
    for i in range(k):
        active = (r > i) & (t > i)  # factor i of C(t, r)/C(t+m, r) = prod_{i<r} (t-i)/(t+m-i)
        factor = torch.where(active, (t - i) / (t + m - i), torch.ones_like(g))
        miss = miss * factor
    miss = torch.where(r > t, torch.zeros_like(g), miss)  # more slots than tied negatives: certain hit
    return torch.where(r <= 0, torch.zeros_like(g), 1.0 - miss)


def _query_ranks(
    queries: Tensor,
    gallery: Tensor,
    positives: Tensor,
    *,
    chunk_size: int,
    tie_tol: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For each query: (greater, tied negatives, tied positives, has a positive), chunked over queries.

    ``positives`` is Q x P: the gallery indices of each query's positives, padded with -1.
    """
    greater, tied_neg, tied_pos, valid = [], [], [], []
    for start in range(0, queries.shape[0], chunk_size):
        end = min(start + chunk_size, queries.shape[0])
        scores = queries[start:end] @ gallery.T  # chunk x gallery
        pos = positives[start:end]
        has = pos >= 0
        pos_scores = scores.gather(1, pos.clamp_min(0)).masked_fill(~has, float("-inf"))
        best = pos_scores.max(dim=1, keepdim=True).values
        n_above = (scores > best + tie_tol).sum(dim=1)  # no positive exceeds the best positive
        n_within = (scores >= best - tie_tol).sum(dim=1) - n_above
        n_pos_tied = ((pos_scores >= best - tie_tol) & has).sum(dim=1)
        greater.append(n_above)
        tied_neg.append(n_within - n_pos_tied)
        tied_pos.append(n_pos_tied)
        valid.append(has.any(dim=1))
    return torch.cat(greater), torch.cat(tied_neg), torch.cat(tied_pos), torch.cat(valid)


def _padded_positives(t2i: Tensor, n_img: int) -> Tensor:
    """M x P matrix of each image's caption indices, padded with -1 (P = most captions of one image)."""
    counts = torch.bincount(t2i, minlength=n_img)
    width = max(int(counts.max()), 1)
    order = torch.argsort(t2i, stable=True)  # caption indices grouped by image
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(t2i)) - starts[t2i[order]]  # position of each caption within its image
    out = torch.full((n_img, width), -1, dtype=torch.long)
    out[t2i[order], slot] = order
    return out


def retrieval_metrics(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Sequence[int] | Tensor,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int | None = None,
    tie_tol: float = 1e-6,
    curve_ks: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Recall@k both ways (see module docstring for definitions and ties).

    Returns ``image_retrieval_recall@{k}`` and ``text_retrieval_recall@{k}`` for
    each k in ``ks``, plus ``n_images`` (M), ``n_texts`` (T) and
    ``n_images_with_text`` (images the text-retrieval mean is taken over).
    ``chunk_size`` queries are scored at a time (default: :func:`default_chunk_size`,
    about 16M scores per chunk). ``curve_ks`` adds ``recall_curve`` (module docstring).
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    t2i = torch.as_tensor(text_to_image, dtype=torch.long).view(-1)
    images = _unit32(image_emb)
    texts = _unit32(text_emb)
    n_img, n_txt = images.shape[0], texts.shape[0]
    if t2i.numel() != n_txt:
        raise ValueError(f"retrieval: {n_txt} texts but {t2i.numel()} entries in text_to_image")
    if n_img == 0 or n_txt == 0:
        raise ValueError("retrieval: need at least one image and one text")
    if t2i.min() < 0 or t2i.max() >= n_img:
        raise ValueError(f"retrieval: text_to_image must lie in [0, {n_img})")
    if chunk_size is None:
        chunk_size = default_chunk_size(n_img, n_txt)
    t_counts = _query_ranks(texts, images, t2i.unsqueeze(1), chunk_size=chunk_size, tie_tol=tie_tol)
    i_counts = _query_ranks(images, texts, _padded_positives(t2i, n_img), chunk_size=chunk_size, tie_tol=tie_tol)
    i_valid = i_counts[3]
    out: dict[str, Any] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"retrieval: k must be >= 1, got {k}")
        out[f"image_retrieval_recall@{k}"] = _hit_probability(*t_counts[:3], k).mean().item()
        out[f"text_retrieval_recall@{k}"] = _hit_probability(*i_counts[:3], k)[i_valid].mean().item()
    if curve_ks:
        curve_ks = sorted({int(k) for k in curve_ks})
        if curve_ks[0] < 1:
            raise ValueError(f"retrieval: curve k must be >= 1, got {curve_ks[0]}")
        curve_ks = [k for k in curve_ks if k <= max(n_img, n_txt)] or [1]  # beyond both galleries: all 1
        out["recall_curve"] = {
            "k": curve_ks,
            "image_retrieval": [_hit_probability(*t_counts[:3], k).mean().item() for k in curve_ks],
            "text_retrieval": [_hit_probability(*i_counts[:3], k)[i_valid].mean().item() for k in curve_ks],
        }
    out["n_images"] = n_img
    out["n_texts"] = n_txt
    out["n_images_with_text"] = int(i_valid.sum())
    return out
