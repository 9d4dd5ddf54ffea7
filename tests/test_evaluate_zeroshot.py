"""Zero-shot classification on hand-built embeddings with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.data.records import ZeroShotTask
from contrastkit.evaluate import class_embeddings, evaluate_zeroshot, format_template, zeroshot_metrics

E = torch.eye(4)


def test_format_template_accepts_both_placeholders_and_rejects_none():
    assert format_template("a photo of a {}.", "cat") == "a photo of a cat."
    assert format_template("a {c}, a kind of pet", "dog") == "a dog, a kind of pet"
    with pytest.raises(ValueError, match="placeholder"):
        format_template("a photo", "cat")


def test_class_embedding_is_normalised_mean_of_normalised_template_embeddings():
    # Template 1 gives the class direction (scaled by 3: must be normalised first);
    # template 2 mixes in dimension 3. Hand result: normalize(e_c + normalize(e_c + e_3)) ...
    table = {}
    for c, name in enumerate(["cat", "dog"]):
        table[f"a {name}"] = 3.0 * E[c]
        table[f"the {name} here"] = E[c] + E[3]
    got = class_embeddings(["cat", "dog"], ["a {}", "the {c} here"], lambda ts: torch.stack([table[t] for t in ts]))
    for c in range(2):
        mean = (E[c] + (E[c] + E[3]) / math.sqrt(2)) / 2
        assert torch.allclose(got[c], mean / mean.norm(), atol=1e-6)
    # Not the plain mean of raw embeddings (that would weight template 1 by 3).
    raw = F.normalize(3.0 * E[0] + E[0] + E[3], dim=0)
    assert not torch.allclose(got[0], raw, atol=1e-3)


def _text_fn(ts):
    """Prompts 'a photo of a k' -> e_k for class names '0'..'3'."""
    return torch.stack([E[int(t.rsplit(" ", 1)[1])] for t in ts])


def test_acc1_and_mean_per_class_recall_on_imbalanced_hand_case():
    # 10 images, 3 classes (class 3 exists as a prompt but has no image).
    # class 0: 6 images, 5 predicted 0 and 1 predicted 1 -> recall 5/6
    # class 1: 2 images, 1 predicted 1, 1 predicted 2 -> recall 1/2
    # class 2: 2 images, both predicted 0              -> recall 0
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
    preds = [0, 0, 0, 0, 0, 1, 1, 2, 0, 0]
    image = torch.stack([E[p] for p in preds])  # image i points exactly at its predicted class
    task = ZeroShotTask("toy", ["0", "1", "2", "3"], ["a photo of a {}"], list(range(10)), labels)
    m = evaluate_zeroshot(image, task, _text_fn)
    assert m["acc1"] == pytest.approx(6 / 10)
    assert m["mean_per_class_recall"] == pytest.approx((5 / 6 + 1 / 2 + 0) / 3)
    assert m["mean_per_class_recall"] != pytest.approx(m["acc1"])
    assert m["per_class_recall"]["0"] == pytest.approx(5 / 6)
    assert m["per_class_recall"]["2"] == 0.0
    assert math.isnan(m["per_class_recall"]["3"])  # no image of class 3: excluded from the mean
    assert m["confusion_matrix"] == [[5, 1, 0, 0], [0, 1, 1, 0], [2, 0, 0, 0], [0, 0, 0, 0]]
    assert m["n_samples"] == 10 and m["n_classes"] == 4
    assert math.isnan(m["acc5"])  # fewer than 5 classes: CLIP_benchmark reports NaN
    chunked = evaluate_zeroshot(image, task, _text_fn, chunk_size=3)  # logits 3 images at a time
    assert chunked["confusion_matrix"] == m["confusion_matrix"] and chunked["acc1"] == m["acc1"]


def test_task_indices_select_rows_of_the_record_embeddings():
    image = torch.stack([E[1], E[0], E[2], E[0]])  # records 0..3
    task = ZeroShotTask("sub", ["0", "1", "2"], ["a photo of a {}"], indices=[3, 1, 2], labels=[0, 0, 1])
    m = evaluate_zeroshot(image, task, _text_fn)
    assert m["acc1"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 0, 1], [0, 0, 0]]


def test_acc5_counts_true_class_in_top_five():
    # 7 classes; the true class sits at rank 1, 3, 5, 6 and 7 for the five rows.
    ranks = [1, 3, 5, 6, 7]
    logits, labels = [], []
    for r in ranks:
        row = torch.linspace(1.0, 0.0, 7)  # class j has rank j+1
        logits.append(row)
        labels.append(r - 1)
    m = zeroshot_metrics(torch.stack(logits), labels)
    assert m["acc1"] == pytest.approx(1 / 5)
    assert m["acc5"] == pytest.approx(3 / 5)


def test_chunking_of_logits_does_not_change_metrics():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(103, 9, generator=g)
    labels = torch.randint(0, 9, (103,), generator=g)
    a = zeroshot_metrics(logits, labels, chunk_size=10)
    b = zeroshot_metrics(logits, labels)
    assert a == b


def test_bad_inputs_raise_with_task_name():
    image = torch.stack([E[0], E[1]])
    bad = ZeroShotTask("broken", ["0", "1"], ["a photo of a {}"], [0, 1], [0, 5])
    with pytest.raises(ValueError, match="broken"):
        evaluate_zeroshot(image, bad, _text_fn)
    out_of_range = ZeroShotTask("far", ["0", "1"], ["a photo of a {}"], [0, 7], [0, 1])
    with pytest.raises(ValueError, match="far"):
        evaluate_zeroshot(image, out_of_range, _text_fn)
