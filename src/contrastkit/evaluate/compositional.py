"""Compositional accuracy: does the image prefer its caption to a minimal edit of it?

A pair is (image, caption, negative) where the negative is a minimal edit of
the caption (swapped attribute, replaced relation, ...), false for the image.
The pair is *correct* iff cos(image, caption) > cos(image, negative) + ``tol``:
strictly, so a tie (a text tower blind to the edit) counts as wrong; ``tol``
(default 1e-6) keeps float rounding from turning exact-in-theory ties into
coin flips. Set ``tol=0`` for bare strict comparison.

Results: ``accuracy`` (category -> fraction correct), ``n_pairs`` (category ->
number of pairs), ``macro_accuracy`` (unweighted mean over categories),
``micro_accuracy`` (over all pairs) and ``n_pairs_total``.

Records carry negatives as ``neg_captions: {category: [negative, ...]}``, each
a minimal edit of ``captions[0]``; SugarCrepe-style data is a list of
(image, caption, negative) triples per category (:func:`evaluate_triples`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..data.records import Record
from .embedder import Embedder, TextEmbeddingCache, TextFn, as_text_fn, embed_images


def pair_correct(image_emb: Tensor, pos_emb: Tensor, neg_emb: Tensor, *, tol: float = 1e-6) -> Tensor:
    """P booleans: cos(image_p, pos_p) > cos(image_p, neg_p) + tol, for P x D rows."""
    img = F.normalize(image_emb.float(), dim=-1)
    pos = (img * F.normalize(pos_emb.float(), dim=-1)).sum(dim=-1)
    neg = (img * F.normalize(neg_emb.float(), dim=-1)).sum(dim=-1)
    return pos - neg > tol


def summarize(correct: Tensor | Sequence[bool], categories: Sequence[str]) -> dict[str, Any]:
    """Per-category accuracy and counts, macro and micro means (see module docstring)."""
    correct = torch.as_tensor(correct, dtype=torch.bool).view(-1)
    if correct.numel() != len(categories):
        raise ValueError(f"compositional: {correct.numel()} results but {len(categories)} categories")
    hits: dict[str, int] = {}
    counts: dict[str, int] = {}
    for ok, cat in zip(correct.tolist(), categories):
        counts[cat] = counts.get(cat, 0) + 1
        hits[cat] = hits.get(cat, 0) + int(ok)
    acc = {cat: hits[cat] / counts[cat] for cat in sorted(counts)}
    total = sum(counts.values())
    return {
        "accuracy": acc,
        "n_pairs": {cat: counts[cat] for cat in sorted(counts)},
        "macro_accuracy": sum(acc.values()) / len(acc) if acc else math.nan,
        "micro_accuracy": sum(hits.values()) / total if total else math.nan,
        "n_pairs_total": total,
    }


def record_pairs(records: Sequence[Record]) -> tuple[list[int], list[str], list[str], list[str]]:
    """Flatten records' negatives into (record index, caption, negative, category) lists."""
    idx: list[int] = []
    pos: list[str] = []
    neg: list[str] = []
    cat: list[str] = []
    for i, rec in enumerate(records):
        if not rec.neg_captions:
            continue
        if not rec.captions:
            raise ValueError(f"record {rec.key or i}: has negative captions but no caption")
        for category, negatives in rec.neg_captions.items():
            for negative in negatives:
                idx.append(i)
                pos.append(rec.captions[0])
                neg.append(negative)
                cat.append(category)
    return idx, pos, neg, cat


def evaluate_compositional(
    image_emb: Tensor, records: Sequence[Record], text_fn: Embedder | TextFn, *, tol: float = 1e-6,
    batch_size: int = 256, progress: bool = False,
) -> dict[str, Any]:
    """Compositional accuracy over records' ``neg_captions`` (row i of ``image_emb`` = record i).

    Records without negatives are skipped; with none at all the result has
    empty dicts, ``n_pairs_total`` 0 and NaN means.
    """
    idx, pos, neg, cat = record_pairs(records)
    if not idx:
        return summarize([], [])
    fn = as_text_fn(text_fn, batch_size=batch_size, progress=progress)
    if isinstance(fn, TextEmbeddingCache):
        fn.prefetch(pos + neg)
    correct = pair_correct(image_emb[torch.as_tensor(idx)], fn(pos), fn(neg), tol=tol)
    return summarize(correct, cat)


def evaluate_triples(
    embedder: Embedder,
    triples: Sequence[tuple[Image.Image | str | Path, str, str]]
    | Mapping[str, Sequence[tuple[Image.Image | str | Path, str, str]]],
    *,
    category: str = "all",
    tol: float = 1e-6,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, Any]:
    """SugarCrepe-style evaluation of (image, caption, negative_caption) triples.

    ``triples`` is a list (all in ``category``) or a mapping category -> list.
    Images are PIL images or paths; each distinct path (or PIL object) and
    each distinct string is embedded once.
    """
    groups = dict(triples) if isinstance(triples, Mapping) else {category: triples}
    images: list[Image.Image | str | Path] = []
    image_slot: dict[Any, int] = {}
    idx: list[int] = []
    pos: list[str] = []
    neg: list[str] = []
    cat: list[str] = []
    for name, items in groups.items():
        for image, caption, negative in items:
            key = str(Path(image)) if isinstance(image, (str, Path)) else id(image)
            if key not in image_slot:
                image_slot[key] = len(images)
                images.append(image)
            idx.append(image_slot[key])
            pos.append(caption)
            neg.append(negative)
            cat.append(name)
    if not idx:
        return summarize([], [])
    loaders = [im if isinstance(im, Image.Image) else Record(image=im, captions=[], key=str(im)).load_image
               for im in images]
    img_emb = embed_images(embedder, loaders, batch_size=batch_size, progress=progress)
    cache = TextEmbeddingCache(embedder, batch_size=batch_size, progress=progress)
    cache.prefetch(pos + neg)
    correct = pair_correct(img_emb[torch.as_tensor(idx)], cache(pos), cache(neg), tol=tol)
    return summarize(correct, cat)
