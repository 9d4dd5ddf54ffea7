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

Benchmark sets (SugarCrepe's JSON, ARO-style relation / attribute sets, read by
:mod:`~contrastkit.evaluate.benchmark_files`) are lists of
:class:`~contrastkit.evaluate.benchmark_files.ChoiceItem`: an image (optionally a crop
box), its true caption and one or more false captions. :func:`evaluate_choices`
counts an item correct iff the true caption beats *every* false one by more
than ``tol`` (SugarCrepe and ARO have one false caption per item; ties are
wrong, as in the SugarCrepe paper and ARO's argmax over [false, true]).
CLIP_benchmark's ``image_caption_selection`` takes an argmax with the true
caption first, so it counts exact ties as correct; with continuous embeddings
the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..data.records import Record
from ..models.embedder import Embedder
from .embedding import TextEmbeddingCache, TextFn, as_text_fn, embed_images


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
    image_emb: Tensor,
    records: Sequence[Record],
    text_fn: Embedder | TextFn,
    *,
    tol: float = 1e-6,
    batch_size: int = 256,
    progress: bool = False,
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
    loaders = [
        im if isinstance(im, Image.Image) else Record(image=im, captions=[], key=str(im)).load_image for im in images
    ]
    img_emb = embed_images(embedder, loaders, batch_size=batch_size, progress=progress)
    cache = TextEmbeddingCache(embedder, batch_size=batch_size, progress=progress)
    cache.prefetch(pos + neg)
    correct = pair_correct(img_emb[torch.as_tensor(idx)], cache(pos), cache(neg), tol=tol)
    return summarize(correct, cat)


ImageEmbedFn = Callable[[list[Any], list[Any]], Tensor]


def evaluate_choices(
    embedder: Embedder,
    items: Sequence[Any],
    *,
    tol: float = 1e-6,
    batch_size: int = 256,
    progress: bool = True,
    num_workers: int = 0,
    text_fn: TextFn | None = None,
    image_fn: ImageEmbedFn | None = None,
) -> dict[str, Any]:
    """Per-category accuracy of :class:`~contrastkit.evaluate.benchmark_files.ChoiceItem` s (see module docstring).

    Each distinct image (path + crop box, or PIL object) is embedded once,
    each distinct string once. ``text_fn`` (e.g. a store-backed
    :class:`TextEmbeddingCache`) and ``image_fn(loaders, identities) -> N x D``
    (e.g. a feature-cache lookup) replace the direct embedder calls.
    """
    from .benchmark_files import ImageRef
    from .cache import image_identity

    slots: dict[Any, int] = {}
    loaders: list[Any] = []
    idents: list[Any] = []
    image_idx: list[int] = []
    for item in items:
        if isinstance(item.image, Image.Image):
            key: Any = ("pil", id(item.image), item.box)
        else:
            key = (str(Path(item.image)), item.box)
        if key not in slots:
            slots[key] = len(loaders)
            loaders.append(ImageRef(item.image, item.box, item.key))
            idents.append(image_identity(item.image, item.box))
        image_idx.append(slots[key])
        if not item.negatives:
            raise ValueError(f"compositional item {item.key or len(image_idx) - 1}: no false caption")
    if not image_idx:
        return summarize([], [])
    if image_fn is not None:
        img_emb = image_fn(loaders, idents)
    else:
        img_emb = embed_images(
            embedder,
            loaders,
            batch_size=batch_size,
            progress=progress,
            num_workers=num_workers,
            desc="embed compositional images",
        )
    fn = text_fn if text_fn is not None else TextEmbeddingCache(embedder, batch_size=batch_size, progress=progress)
    if isinstance(fn, TextEmbeddingCache):
        fn.prefetch([t for item in items for t in [item.caption, *item.negatives]])
    # Flatten: one row per (item, negative); an item is correct iff all its rows are.
    owner = [i for i, item in enumerate(items) for _ in item.negatives]
    pos = [items[i].caption for i in owner]
    neg = [n for item in items for n in item.negatives]
    rows = pair_correct(img_emb[torch.as_tensor([image_idx[i] for i in owner])], fn(pos), fn(neg), tol=tol)
    wrong = torch.zeros(len(items), dtype=torch.long).index_add_(0, torch.as_tensor(owner), (~rows).long())
    correct = wrong == 0
    return summarize(correct, [item.category for item in items])
