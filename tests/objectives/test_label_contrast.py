"""label_contrast: inputs against the mean descriptions of the batch's classes.

Checked against the formula written as loops in float64; gradcheck and 2 ranks = 1 process in
test_every_term.py / test_distributed_terms.py.
"""

import math

import pytest
import torch

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from helpers import unit


def naive(x, y, labels, t, symmetric):
    rows = [i for i in range(len(labels)) if labels[i] >= 0]
    classes = sorted({int(labels[i]) for i in rows})
    cols = {}
    for c in classes:
        s = sum(y[i] for i in rows if labels[i] == c)
        cols[c] = s / float(s.norm())
    forward = 0.0
    for i in rows:
        logits = [t * float(x[i] @ cols[c]) for c in classes]
        forward += -logits[classes.index(int(labels[i]))] + math.log(sum(math.exp(v) for v in logits))
    forward /= len(rows)
    if not symmetric:
        return forward
    back = 0.0
    for c in classes:
        logits = [t * float(x[i] @ cols[c]) for i in rows]
        members = [k for k, i in enumerate(rows) if labels[i] == c]
        log_z = math.log(sum(math.exp(v) for v in logits))
        back += -sum(logits[k] - log_z for k in members) / len(members)
    return (forward + back / len(classes)) / 2


@pytest.mark.parametrize("symmetric", [False, True])
def test_matches_the_formula(symmetric):
    x, y = unit(9, 5, seed=0), unit(9, 5, seed=1)
    labels = torch.tensor([2, 0, 2, 5, -1, 0, 0, 5, 2])
    t = torch.tensor(6.0, dtype=torch.float64)
    term = build([{"name": "label_contrast", "symmetric": symmetric}]).terms[0]
    got = float(term(Encoded(image=x, text=y, logit_scale=t, labels=labels)))
    assert got == pytest.approx(naive(x, y, labels, 6.0, symmetric), rel=1e-10)


def test_rows_of_one_class_are_not_each_others_negatives():
    """Two inputs of one class that match their shared description perfectly give the minimum loss."""
    y = unit(1, 4, seed=2).repeat(2, 1)
    other = unit(1, 4, seed=3)
    x = torch.cat([y, other])
    text = torch.cat([y, other])
    term = build([{"name": "label_contrast", "temperature": 0.01}]).terms[0]
    loss = float(term(Encoded(image=x, text=text, logit_scale=torch.tensor(1.0), labels=torch.tensor([0, 0, 1]))))
    assert loss < 1e-3


def test_a_batch_without_labels_says_so():
    term = build([{"name": "label_contrast"}]).terms[0]
    with pytest.raises(ValueError, match="no row of the batch has a class label"):
        term(
            Encoded(
                image=unit(2, 3), text=unit(2, 3, seed=1), logit_scale=torch.tensor(1.0), labels=torch.tensor([-1, -1])
            )
        )
