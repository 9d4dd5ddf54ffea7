"""Retrieval recall@k on hand-computed cases, chunking, and ties."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.evaluate import retrieval_metrics
from contrastkit.evaluate.retrieval import _hit_probability

E = torch.eye(3)


def _hand_case():
    images = torch.stack([E[0], E[1], E[2]])
    texts = F.normalize(
        torch.stack(
            [
                E[0] + 0.1 * E[1],  # caption 0 of image 0: nearest image 0
                E[1] + 0.5 * E[0],  # caption 1 of image 0: nearest image 1, then image 0
                E[2] + 0.3 * E[1],  # caption 2 of image 1: nearest image 2, then image 1
                E[2] + 0.2 * E[0],  # caption 3 of image 2: nearest image 2
            ]
        ),
        dim=-1,
    )
    return images, texts, [0, 0, 1, 2]


def test_recall_on_hand_case_with_a_multi_caption_image():
    images, texts, t2i = _hand_case()
    m = retrieval_metrics(images, texts, t2i, ks=(1, 2, 3))
    # text -> image: captions 0 and 3 find their image first; 1 and 2 second.
    assert m["image_retrieval_recall@1"] == pytest.approx(2 / 4)
    assert m["image_retrieval_recall@2"] == pytest.approx(1.0)
    # image -> text (cosines by hand):
    #   image 0: c0 .995 (own), c1 .447 (own), c3 .196, c2 0     -> hit at 1
    #   image 1: c1 .894, c2 .287 (own), c0 .0995, c3 0           -> hit at 2
    #   image 2: c3 .981 (own), c2 .958, c0 0, c1 0               -> hit at 1
    assert m["text_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert m["text_retrieval_recall@2"] == pytest.approx(1.0)
    assert (m["n_images"], m["n_texts"], m["n_images_with_text"]) == (3, 4, 3)


def test_any_caption_of_an_image_counts():
    # Image 0's first caption ranks last, its second caption ranks first.
    images = torch.stack([E[0], E[1]])
    texts = F.normalize(torch.stack([E[1] + 0.01 * E[0], E[0], E[1]]), dim=-1)
    m = retrieval_metrics(images, texts, [0, 0, 1], ks=(1,))
    # image 0: top text is caption 1 (its own) -> hit; image 1: top text is caption 2 (own) -> hit.
    assert m["text_retrieval_recall@1"] == 1.0
    # caption 0 (of image 0) is nearest image 1 -> miss; captions 1, 2 hit.
    assert m["image_retrieval_recall@1"] == pytest.approx(2 / 3)


def test_chunked_equals_unchunked():
    g = torch.Generator().manual_seed(1)
    images = F.normalize(torch.randn(37, 16, generator=g), dim=-1)
    t2i = torch.randint(0, 37, (90,), generator=g)
    texts = F.normalize(images[t2i] + 0.9 * torch.randn(90, 16, generator=g), dim=-1)
    full = retrieval_metrics(images, texts, t2i, chunk_size=10_000)
    for chunk in (1, 7, 36, None):
        assert retrieval_metrics(images, texts, t2i, chunk_size=chunk) == full
    assert 0.0 < full["image_retrieval_recall@1"] < full["image_retrieval_recall@10"] <= 1.0


def test_recall_is_one_when_k_covers_the_gallery():
    images, texts, t2i = _hand_case()
    m = retrieval_metrics(images, texts, t2i)  # default ks 1, 5, 10 > 3 images
    assert m["image_retrieval_recall@5"] == m["image_retrieval_recall@10"] == 1.0
    assert m["text_retrieval_recall@5"] == 1.0


def test_exact_ties_give_the_expected_topk_answer():
    # Two identical images, each with one caption, both captions identical:
    # every query ties its positive with one negative -> hit@1 with probability 1/2.
    images = torch.stack([E[0], E[0], E[1]])
    texts = torch.stack([E[0], E[0], E[1]])
    m = retrieval_metrics(images, texts, [0, 1, 2], ks=(1, 2))
    assert m["image_retrieval_recall@1"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert m["text_retrieval_recall@1"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert m["image_retrieval_recall@2"] == 1.0


@pytest.mark.parametrize(
    "g,t,m,k", [(0, 1, 1, 1), (1, 3, 2, 3), (0, 4, 1, 2), (2, 2, 3, 3), (3, 2, 1, 3), (0, 2, 2, 5)]
)
def test_tie_probability_matches_enumeration_of_orders(g, t, m, k):
    # Tied block of t negatives and m positives in every order, after g strictly-better negatives.
    block = [0] * t + [1] * m
    orders = list(itertools.permutations(block))
    hits = sum(any(order[: max(k - g, 0)]) for order in orders)
    want = hits / len(orders)
    got = _hit_probability(torch.tensor([g]), torch.tensor([t]), torch.tensor([m]), k).item()
    assert got == pytest.approx(want)


def test_images_without_captions_are_excluded_from_text_retrieval():
    images = torch.stack([E[0], E[1], E[2]])  # image 2 owns no caption (a distractor)
    texts = torch.stack([E[0], E[1]])
    m = retrieval_metrics(images, texts, [0, 1], ks=(1,))
    assert m["n_images_with_text"] == 2
    assert m["text_retrieval_recall@1"] == 1.0 and m["image_retrieval_recall@1"] == 1.0


def test_bad_mapping_raises():
    images, texts, _ = _hand_case()
    with pytest.raises(ValueError, match="text_to_image"):
        retrieval_metrics(images, texts, [0, 1, 2])
    with pytest.raises(ValueError, match="text_to_image"):
        retrieval_metrics(images, texts, [0, 1, 2, 3])
    assert not math.isnan(retrieval_metrics(images, texts, [0, 1, 2, 2])["text_retrieval_recall@1"])


def test_chunked_path_equals_the_direct_score_matrix_and_bounds_each_chunk(monkeypatch):
    """Chunked recall == recall from the full T x M matrix; no chunk exceeds the score budget."""
    from contrastkit.evaluate import retrieval as rt

    g = torch.Generator().manual_seed(4)
    n_img, d = 300, 24
    images = F.normalize(torch.randn(n_img, d, generator=g), dim=-1)
    t2i = torch.randint(0, n_img, (1200,), generator=g)  # several captions per image, some images none
    texts = F.normalize(images[t2i] + 1.1 * torch.randn(1200, d, generator=g), dim=-1)
    scores = texts @ images.T  # the direct computation: full matrix, topk
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(t2i)), t2i] = True
    has_text = positive.any(0)
    ks = (1, 5, 10, 50)
    direct = {}
    for k in ks:
        top_img = scores.topk(k, dim=1).indices
        direct[f"image_retrieval_recall@{k}"] = positive.gather(1, top_img).any(1).float().mean().item()
        top_txt = scores.T.topk(k, dim=1).indices
        direct[f"text_retrieval_recall@{k}"] = positive.T.gather(1, top_txt).any(1)[has_text].float().mean().item()

    seen = []
    real = rt._query_ranks
    monkeypatch.setattr(
        rt,
        "_query_ranks",
        lambda q, gal, pos, *, chunk_size, tie_tol: (
            seen.append(min(chunk_size, q.shape[0]) * gal.shape[0]),
            real(q, gal, pos, chunk_size=chunk_size, tie_tol=tie_tol),
        )[1],
    )
    monkeypatch.setattr(rt, "SCORE_BUDGET", 20_000)  # force many small chunks
    for chunk in (None, 17):
        got = rt.retrieval_metrics(images, texts, t2i, ks=ks, chunk_size=chunk, curve_ks=(1, 2, 5, 10, 50, 5000))
        for key, value in direct.items():
            assert got[key] == pytest.approx(value, abs=1e-6), (chunk, key)
    assert len(seen) == 4 and max(seen[:2]) <= 20_000  # the default chunks keep to the budget
    curve = got["recall_curve"]
    assert curve["k"] == [1, 2, 5, 10, 50]  # k beyond both galleries dropped
    assert curve["image_retrieval"][curve["k"].index(5)] == pytest.approx(got["image_retrieval_recall@5"])
    assert curve["text_retrieval"] == sorted(curve["text_retrieval"])  # non-decreasing in k


def test_memory_of_100k_images_and_500k_captions_stays_within_a_few_gigabytes():
    from contrastkit.evaluate.retrieval import SCORE_BUDGET, default_chunk_size, peak_bytes

    chunk = default_chunk_size(100_000, 500_000)
    assert chunk >= 1 and chunk * 500_000 <= SCORE_BUDGET
    assert peak_bytes(100_000, 500_000, 768) < 3 * 2**30  # embeddings 1.8 GB + one chunk + counts
    assert peak_bytes(100_000, 500_000, 1024) < 4 * 2**30


def test_unit_float32_inputs_are_not_copied():
    from contrastkit.evaluate.retrieval import _unit32

    x = F.normalize(torch.randn(50, 8), dim=-1)
    assert _unit32(x).data_ptr() == x.data_ptr()
    assert _unit32(3 * x).data_ptr() != x.data_ptr()
    assert torch.allclose(_unit32(3 * x.double()), x, atol=1e-6)
