"""Compositional accuracy: strictness, per-category counts, records and triples."""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch
from PIL import Image

from contrastkit.data.records import Record
from contrastkit.evaluate import evaluate_compositional, evaluate_triples, pair_correct
from contrastkit.evaluate.compositional import summarize

E = torch.eye(3)


def test_tie_counts_as_wrong_and_only_strictly_greater_is_right():
    img = torch.stack([E[0]] * 4)
    pos = torch.stack([E[0] + E[1], E[0] + E[1], E[0] + E[1], E[0] + E[1]])
    neg = torch.stack([E[0] + E[1], E[0] + E[2], E[1], E[0] + 0.1 * E[1]])
    # cos: pos = .707 each; neg = .707 (tie), .707 (tie, different vector), 0, .995
    assert pair_correct(img, pos, neg).tolist() == [False, False, True, False]


def test_tolerance_absorbs_rounding_but_zero_tolerance_is_bare_strict():
    img = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[1.0, 1e-4]])  # cos 1 - 5e-9: above only by rounding
    assert pair_correct(img, pos, neg).tolist() == [False]
    neg = torch.tensor([[1.0, 0.01]])  # cos 1 - 5e-5: genuinely lower
    assert pair_correct(img, pos, neg).tolist() == [True]
    assert pair_correct(img, pos, torch.tensor([[1.0, 1e-3]]), tol=0.0).tolist() == [True]


def test_summary_per_category_counts_and_macro_vs_micro():
    s = summarize([True, True, True, False, False], ["a", "a", "a", "b", "b"])
    assert s["accuracy"] == {"a": 1.0, "b": 0.0}
    assert s["n_pairs"] == {"a": 3, "b": 2}
    assert s["macro_accuracy"] == pytest.approx(0.5)
    assert s["micro_accuracy"] == pytest.approx(3 / 5)
    assert s["n_pairs_total"] == 5


def _text_table():
    return {
        "red": E[0],
        "green": E[1],
        "blue": E[2],
        "red2": E[0],  # identical embedding to "red": a tie
    }


def test_records_negatives_by_category():
    table = _text_table()
    fn = lambda ts: torch.stack([table[t] for t in ts])  # noqa: E731
    records = [
        Record(image="unused", captions=["red", "green"], neg_captions={"color": ["green", "blue"], "dup": ["red2"]}),
        Record(image="unused", captions=["green"], neg_captions={"color": ["red"]}),
        Record(image="unused", captions=["blue"]),  # no negatives: skipped
    ]
    image = torch.stack([E[0] + 0.1 * E[1], 0.2 * E[0] + E[1], E[2]])
    out = evaluate_compositional(image, records, fn)
    assert out["n_pairs"] == {"color": 3, "dup": 1}
    assert out["accuracy"]["color"] == 1.0
    assert out["accuracy"]["dup"] == 0.0  # tie with the caption itself
    assert out["macro_accuracy"] == pytest.approx(0.5)
    assert out["micro_accuracy"] == pytest.approx(3 / 4)


def test_no_negatives_gives_empty_summary():
    out = evaluate_compositional(torch.eye(2), [Record(image="x", captions=["a"])], lambda ts: torch.eye(2))
    assert out["n_pairs_total"] == 0 and out["accuracy"] == {} and math.isnan(out["macro_accuracy"])


class ColourEmbedder:
    """Image -> its (R, G, B) direction; text -> bag of colour words."""

    words: ClassVar[dict[str, int]] = {"red": 0, "green": 1, "blue": 2}

    def __init__(self):
        self.image_calls = []

    def embed_images(self, images):
        self.image_calls.append(len(images))
        v = torch.tensor([im.getpixel((0, 0)) for im in images], dtype=torch.float32) + 1.0
        return v / v.norm(dim=1, keepdim=True)

    def embed_texts(self, texts):
        rows = torch.full((len(texts), 3), 0.01)
        for i, t in enumerate(texts):
            for w in t.split():
                if w in self.words:
                    rows[i, self.words[w]] += 1.0
        return rows / rows.norm(dim=1, keepdim=True)


def test_sugarcrepe_style_triples_with_paths_and_categories(tmp_path):
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    path = tmp_path / "blue.png"
    Image.new("RGB", (4, 4), (0, 0, 255)).save(path)
    emb = ColourEmbedder()
    triples = {
        "replace_att": [(red, "a red box", "a green box"), (str(path), "a blue box", "a red box")],
        "swap_att": [(red, "red green", "green red"), (path, "blue", "green")],
    }
    out = evaluate_triples(emb, triples, progress=False, batch_size=1)
    assert out["accuracy"] == {"replace_att": 1.0, "swap_att": 0.5}  # bag of words ties the swap
    assert out["n_pairs"] == {"replace_att": 2, "swap_att": 2}
    assert sum(emb.image_calls) == 2  # each distinct image (object or path) embedded once
    flat = evaluate_triples(emb, triples["replace_att"], category="replace_att", progress=False)
    assert flat["accuracy"] == {"replace_att": 1.0}
