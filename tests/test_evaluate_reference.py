"""Our zero-shot and retrieval metrics against a direct re-implementation of CLIP_benchmark.

The reference below is written from CLIP_benchmark's published definitions
(clip_benchmark/metrics/zeroshot_classification.py and zeroshot_retrieval.py):

- class weights: normalise each template embedding, average, normalise;
- acc@k: top-k correct (``output.topk(k)``) summed over all samples / N; acc5 is
  NaN when there are fewer than 5 classes;
- mean_per_class_recall: ``sklearn.metrics.balanced_accuracy_score(target, argmax)``;
- recall@k: ``topk`` over the (texts x images) score matrix, a positive-pair
  mask, "any positive in the top k" per query, averaged over queries
  (text->image = ``image_retrieval_recall@k``, image->text on the transpose).

Random continuous embeddings have no ties, where our tie rule equals topk's.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score

from contrastkit.data.records import ZeroShotTask
from contrastkit.evaluate import class_embeddings, evaluate_zeroshot, retrieval_metrics

# ---------------------------------------------------------------- reference (CLIP_benchmark semantics)


def ref_classifier(embed, classnames, templates):
    weights = []
    for c in classnames:
        e = F.normalize(embed([t.format(c=c) for t in templates]), dim=-1).mean(dim=0)
        weights.append(e / e.norm())
    return torch.stack(weights, dim=1)  # D x C


def ref_accuracy(output, target, topk=(1,)):
    pred = output.float().topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    return [
        correct[:k].reshape(-1).float().sum().item() / n for k in topk
    ]  # .item(): numpy 2 has no float(1-elem array)


def ref_classification(logits, target, n_classes):
    pred = logits.argmax(axis=1)
    if n_classes >= 5:
        acc1, acc5 = ref_accuracy(logits, target, topk=(1, 5))
    else:
        (acc1,) = ref_accuracy(logits, target, topk=(1,))
        acc5 = float("nan")
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": balanced_accuracy_score(target, pred)}


def ref_recall_at_k(scores, positive_pairs, k):
    nb_texts, nb_images = scores.shape
    topk_indices = torch.topk(scores, k, dim=1)[1]
    nb_positive = positive_pairs.sum(dim=1)
    onehot = F.one_hot(topk_indices, num_classes=nb_images)
    nb_true_positive = (onehot * positive_pairs.view(nb_texts, 1, nb_images)).sum(dim=(1, 2))
    return nb_true_positive / nb_positive


def ref_retrieval(images_emb, texts_emb, texts_image_index, ks):
    scores = texts_emb @ images_emb.t()
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), texts_image_index] = True
    out = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = (ref_recall_at_k(scores, positive, k) > 0).float().mean().item()
        out[f"text_retrieval_recall@{k}"] = (ref_recall_at_k(scores.T, positive.T, k) > 0).float().mean().item()
    return out


# ---------------------------------------------------------------- comparisons


def _embed_table(strings, d, g):
    table = {s: torch.randn(d, generator=g) for s in strings}
    return lambda ts: torch.stack([table[t] for t in ts])


@pytest.mark.parametrize("n_classes", [3, 12])
def test_zeroshot_matches_clip_benchmark(n_classes):
    g = torch.Generator().manual_seed(n_classes)
    d, n = 24, 300
    classnames = [f"class{i}" for i in range(n_classes)]
    templates = ["a photo of a {c}.", "a drawing of a {c}.", "{c}, up close"]
    embed = _embed_table([t.format(c=c) for c in classnames for t in templates], d, g)
    weights = ref_classifier(embed, classnames, templates)
    assert torch.allclose(class_embeddings(classnames, templates, embed), weights.T, atol=1e-6)

    # Images near their class weight, noisy enough that acc1 is far from 0 and 1;
    # classes imbalanced so mean_per_class_recall != acc1.
    probs = torch.linspace(1.0, 4.0, n_classes)
    target = torch.multinomial(probs, n, replacement=True, generator=g)
    noise = (0.3 + 0.4 * target / n_classes).unsqueeze(1)  # frequent classes are also the noisier ones
    images = F.normalize(weights.T[target] + noise * torch.randn(n, d, generator=g), dim=-1)
    ref = ref_classification(100.0 * images @ weights, target, n_classes)
    task = ZeroShotTask("t", classnames, templates, list(range(n)), target.tolist())
    got = evaluate_zeroshot(images, task, embed)
    assert 0.1 < ref["acc1"] < 0.95
    assert abs(ref["mean_per_class_recall"] - ref["acc1"]) > 1e-3
    for key in ("acc1", "acc5", "mean_per_class_recall"):
        if math.isnan(ref[key]):
            assert math.isnan(got[key])
        else:
            assert got[key] == pytest.approx(ref[key], abs=1e-12), key


def test_retrieval_matches_clip_benchmark_with_uneven_captions_and_chunks():
    g = torch.Generator().manual_seed(7)
    n_img, d = 60, 20
    images = F.normalize(torch.randn(n_img, d, generator=g), dim=-1)
    per_image = torch.randint(1, 4, (n_img,), generator=g)  # 1 to 3 captions each
    t2i = torch.repeat_interleave(torch.arange(n_img), per_image)
    t2i = t2i[torch.randperm(len(t2i), generator=g)]  # captions not grouped by image
    texts = F.normalize(images[t2i] + 0.08 * d**0.5 * torch.randn(len(t2i), d, generator=g), dim=-1)
    ks = (1, 5, 10)
    ref = ref_retrieval(images, texts, t2i, ks)
    got = retrieval_metrics(images, texts, t2i, ks=ks, chunk_size=13)
    assert 0.05 < ref["image_retrieval_recall@1"] < 0.95
    assert 0.05 < ref["text_retrieval_recall@1"] < 0.95
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
