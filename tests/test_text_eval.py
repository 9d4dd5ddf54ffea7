"""Text evaluation: STS correlations, retrieval metrics (against sentence-transformers), text geometry,
and the shapes world's graded-similarity set."""

import math
import random

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

from contrastkit.data.shapes.similarity import caption_facts, graded_pairs, graded_similarity, paraphrase_pairs
from contrastkit.data.text_pairs import ScoredPair
from contrastkit.evaluate.sts import evaluate_sts
from contrastkit.evaluate.text_geometry import anisotropy, text_geometry
from contrastkit.evaluate.text_retrieval import retrieval_metrics


def bag_of_letters(texts):
    """A deterministic toy embedder: letter counts."""
    rows = [[t.count(c) + 0.1 for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts]
    return F.normalize(torch.tensor(rows), dim=-1)


def test_sts_is_scipys_pearson_and_spearman_of_the_pair_cosines():
    rng = random.Random(0)
    words = ["red circle", "blue square", "green star", "small cross", "large diamond", "a photo"]
    pairs = [ScoredPair(rng.choice(words), rng.choice(words), rng.uniform(0, 5)) for _ in range(40)]
    got = evaluate_sts(bag_of_letters, pairs)

    def unit64(text):
        return F.normalize(bag_of_letters([text])[0].double(), dim=-1)

    cos = [float((unit64(p.text_a) * unit64(p.text_b)).sum()) for p in pairs]
    gold = [p.score for p in pairs]
    assert got["spearman_cosine"] == pytest.approx(stats.spearmanr(cos, gold).statistic, abs=1e-9)
    assert got["pearson_cosine"] == pytest.approx(stats.pearsonr(cos, gold).statistic, abs=1e-12)
    assert got["pairs"] == 40


def test_sts_refuses_constant_gold():
    with pytest.raises(ValueError, match="different gold scores"):
        evaluate_sts(bag_of_letters, [ScoredPair("a", "b", 1.0), ScoredPair("c", "d", 1.0)])


def test_retrieval_metrics_match_sentence_transformers():
    g = torch.Generator().manual_seed(0)
    q, n = 30, 120
    scores = torch.rand(q, n, generator=g)
    relevant = [set(torch.randperm(n, generator=g)[: 1 + i % 4].tolist()) for i in range(q)]
    peer = InformationRetrievalEvaluator(
        queries={f"q{i}": "x" for i in range(q)},
        corpus={f"d{j:04d}": "x" for j in range(n)},
        relevant_docs={f"q{i}": {f"d{j:04d}" for j in r} for i, r in enumerate(relevant)},
        write_csv=False,
    )
    results = [[{"corpus_id": f"d{j:04d}", "score": float(scores[i, j])} for j in range(n)] for i in range(q)]
    expected = peer.compute_metrics(results)
    got = retrieval_metrics(scores, relevant)
    for family, by_k in expected.items():
        for k, value in by_k.items():
            assert got[f"cosine_{family.replace('@k', '')}@{k}"] == pytest.approx(float(value), abs=1e-12), (family, k)


def test_retrieval_names_queries_without_relevant_documents():
    with pytest.raises(ValueError, match="at least one relevant"):
        retrieval_metrics(torch.rand(2, 3), [{0}, set()])


def test_anisotropy_is_the_mean_off_diagonal_cosine_and_geometry_reports_it():
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u = F.normalize(x, dim=-1)
    direct = sum(float(u[i] @ u[j]) for i in range(9) for j in range(9) if i != j) / 72
    assert anisotropy(x) == pytest.approx(direct, abs=1e-12)
    shifted = x + 3.0  # a common direction raises anisotropy
    assert anisotropy(shifted) > anisotropy(x) + 0.3
    geo = text_geometry(u[:4], u[4:8])
    assert set(geo) == {"alignment", "uniformity", "anisotropy"}
    assert geo["alignment"] == pytest.approx(float((u[:4] - u[4:8]).pow(2).sum(-1).mean()), abs=1e-12)


def test_a_caption_and_its_paraphrases_state_the_same_facts():
    a = "a large red circle to the left of a small blue square"
    assert graded_similarity(a, "a small blue square is to the right of a large red circle") == 5.0
    assert graded_similarity(a, "a photo of a large red circle to the left of a small blue square") == 5.0
    swapped_colours = "a large blue circle to the left of a small red square"
    swapped_relation = "a large red circle to the right of a small blue square"
    # 7 facts each; a colour swap keeps shapes, sizes (4 of 7), a relation swap keeps all but the relation
    assert graded_similarity(a, swapped_colours) == pytest.approx(5 * 4 / 10)
    assert graded_similarity(a, swapped_relation) == pytest.approx(5 * 6 / 8)
    assert len(caption_facts(a)) == 7
    assert graded_similarity(a, "a green star") == 0.0


def test_graded_pairs_are_reproducible_and_spread_over_the_scale():
    pairs = graded_pairs(90, seed=3)
    assert pairs == graded_pairs(90, seed=3)
    assert pairs != graded_pairs(90, seed=4)
    scores = [p.score for p in pairs]
    assert min(scores) == 0.0 and max(scores) == 5.0
    assert len({round(s, 2) for s in scores}) >= 6
    assert all(math.isclose(p.score, graded_similarity(p.text_a, p.text_b)) for p in pairs)


def test_paraphrase_pairs_state_the_same_facts_and_their_negative_is_false():
    from contrastkit.data.shapes import SyntheticShapes
    from contrastkit.data.shapes.grammar import caption_is_true, parse_caption

    world = SyntheticShapes("train", size=50, seed=0)
    pairs = paraphrase_pairs(50, seed=0)
    assert len(pairs) == 50
    for pair in pairs:
        index = int(pair.key.rsplit("-", 1)[1])
        words = world.describe(index)
        assert pair.anchor == words.captions[0] != pair.positive
        assert pair.positive in words.rewrites
        assert caption_is_true(world.scene(index), parse_caption(pair.positive))
        assert graded_similarity(pair.anchor, pair.positive) == 5.0
        assert len(pair.negatives) == 1
        assert pair.negatives[0] not in words.captions
        assert graded_similarity(pair.anchor, pair.negatives[0]) < 5.0
