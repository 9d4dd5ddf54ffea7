"""matryoshka: a term's loss over nested prefixes of the embedding.

Checked against the explicit sum over prefixes (Kusupati et al. 2022) written with the inner term's own
function; gradcheck and 2 ranks = 1 process in test_every_term.py / test_distributed_terms.py.
"""

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives.clip import clip_loss
from helpers import unit


def cut(x, m):
    return F.normalize(x[..., :m], dim=-1)


def test_clip_over_prefixes_is_the_weighted_sum():
    x, y, t = unit(7, 8, seed=0), unit(7, 8, seed=1), torch.tensor(5.0, dtype=torch.float64)
    term = build([{"name": "matryoshka", "dims": [2, 4, 8], "weights": [1.0, 0.5, 2.0]}]).terms[0]
    expected = sum(w * clip_loss(cut(x, m), cut(y, m), t) for m, w in ((2, 1.0), (4, 0.5), (8, 2.0)))
    assert float(term(Encoded(image=x, text=y, logit_scale=t))) == pytest.approx(float(expected), rel=1e-12)


def test_hard_negatives_are_cut_too_and_parameters_reach_the_inner_term():
    x, y, n = unit(5, 6, seed=2), unit(5, 6, seed=3), unit(5, 3, 6, seed=4)
    t = torch.tensor(4.0, dtype=torch.float64)
    term = build([{"name": "matryoshka", "dims": [3, 6], "term": "simcse", "params": {"temperature": 0.1}}]).terms[0]
    assert term.requires == ("neg_text",)
    got = float(term(Encoded(image=x, text=y, logit_scale=t, neg_text=n)))
    # simcse at tau 0.1 = negclip's image->text half at scale 10: compare with the direct formula
    expected = 0.0
    for m in (3, 6):
        h, p, hn = cut(x, m), cut(y, m), cut(n, m)
        logits = torch.cat([10 * h @ p.t(), 10 * h @ hn.reshape(-1, m).t()], dim=1)
        expected += float(F.cross_entropy(logits, torch.arange(5)))
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"dims": []}, "dims must be increasing"),
        ({"dims": [8, 4]}, "dims must be increasing"),
        ({"dims": [4, 8], "weights": [1.0]}, "weights: 1 values for 2 dims"),
        ({"dims": [4], "term": "nope"}, "unknown term 'nope'"),
        ({"dims": [4], "params": {"bogus": 1}}, "unknown parameter"),
        ({"dims": [4], "term": "matryoshka"}, "cannot wrap another matryoshka"),
    ],
)
def test_bad_settings_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        build([{"name": "matryoshka", **spec}])


def test_dims_wider_than_the_embedding_are_named():
    term = build([{"name": "matryoshka", "dims": [4, 16]}]).terms[0]
    with pytest.raises(ValueError, match="dims go up to 16 but embeddings have 8"):
        term(Encoded(image=unit(3, 8, seed=5), text=unit(3, 8, seed=6), logit_scale=torch.tensor(2.0)))
