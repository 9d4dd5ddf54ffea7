"""simcse: anchor -> in-batch positives (+ hard negatives) at a fixed temperature.

Checked against the paper's equation written as loops in float64, and against the peer
sentence-transformers' MultipleNegativesRankingLoss (and its symmetric, per-direction variant) on the
same embeddings. Gradcheck and 2 ranks = 1 process: tests/objectives/test_every_term.py and
tests/test_distributed_terms.py.
"""

import math

import pytest
import torch
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from helpers import unit


def naive_simcse(h, p, n, mask, tau, symmetric):
    """Gao et al. 2021 eq. 5 (eq. 1 when n is None), one row at a time."""
    b = h.shape[0]
    forward = 0.0
    for i in range(b):
        cols = [float(h[i] @ p[j]) / tau for j in range(b)]
        if n is not None:
            valid = [(j, k) for j in range(b) for k in range(n.shape[1]) if mask is None or mask[j, k]]
            cols += [float(h[i] @ n[j, k]) / tau for j, k in valid]
        forward += -cols[i] + math.log(sum(math.exp(c) for c in cols))
    forward /= b
    if not symmetric:
        return forward
    backward = 0.0
    for i in range(b):
        cols = [float(p[i] @ h[j]) / tau for j in range(b)]
        backward += -cols[i] + math.log(sum(math.exp(c) for c in cols))
    return (forward + backward / b) / 2


def encoded(h, p, n=None, mask=None):
    return Encoded(image=h, text=p, logit_scale=torch.tensor(3.0, dtype=h.dtype), neg_text=n, neg_text_mask=mask)


@pytest.mark.parametrize("symmetric", [False, True])
def test_supervised_matches_the_paper_equation(symmetric):
    h, p, n = unit(5, 4, seed=0), unit(5, 4, seed=1), unit(5, 2, 4, seed=2)
    mask = torch.rand(5, 2, generator=torch.Generator().manual_seed(3)) > 0.3
    term = build([{"name": "simcse", "symmetric": symmetric}]).terms[0]
    got = float(term(encoded(h, p, n, mask)))
    assert got == pytest.approx(naive_simcse(h, p, n, mask, 0.05, symmetric), rel=1e-10)


def test_unsupervised_needs_no_negatives_and_temperature_null_uses_the_model_scale():
    h, p = unit(6, 3, seed=4), unit(6, 3, seed=5)
    term = build([{"name": "simcse", "hard_negatives": False, "temperature": None}]).terms[0]
    assert term.requires == ()
    assert float(term(encoded(h, p))) == pytest.approx(naive_simcse(h, p, None, None, 1 / 3.0, False), rel=1e-10)


def test_supervised_without_negatives_says_so():
    term = build([{"name": "simcse"}]).terms[0]
    with pytest.raises(ValueError, match="simcse.*neg_text"):
        term(encoded(unit(3, 4, seed=6), unit(3, 4, seed=7)))


def test_bad_temperature_is_named():
    with pytest.raises(ValueError, match=r"objective\[0\]\.simcse: temperature must be > 0"):
        build([{"name": "simcse", "temperature": 0}])


@pytest.mark.parametrize("symmetric", [False, True])
def test_matches_sentence_transformers_multiple_negatives_ranking(symmetric):
    h, p, n = unit(8, 6, seed=8), unit(8, 6, seed=9), unit(8, 2, 6, seed=10)
    directions = ("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",)
    peer = MultipleNegativesRankingLoss(None, scale=20.0, directions=directions, partition_mode="per_direction")
    columns = [h, p, n[:, 0], n[:, 1]]  # one column per negative: the peer's triplet / n-tuple layout
    expected = float(peer.compute_loss_from_embeddings(columns, labels=None))
    term = build([{"name": "simcse", "symmetric": symmetric}]).terms[0]
    assert float(term(encoded(h, p, n))) == pytest.approx(expected, rel=1e-9)
