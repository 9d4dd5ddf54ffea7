"""meow: InfoNCE with negatives weighted by cluster disagreement (Yu & Li 2023).

Peer: no library implements MEOW's weighting. (With all-distinct clusters it is a
decoupled InfoNCE, but lightly's DCLLoss also adds same-view negatives, so it is
not the same loss.) Checked against explicit loops and a hand-written formula.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives.meow import meow_loss, meow_weights, proto_nce, weighted_info_nce
from helpers import unit

D64 = torch.float64


def naive_meow(x, y, ids, tau, symmetric=True):
    ids = ids.reshape(1, -1) if ids.dim() == 1 else ids
    c, b = ids.shape

    def w(i, j):
        return c - sum(int(ids[k, i] == ids[k, j]) for k in range(c))

    def direction(rows, cols):
        losses = []
        for i in range(b):
            den = sum(w(i, j) * math.exp(float(rows[i] @ cols[j]) / tau) for j in range(b))
            if den > 0:
                losses.append(-math.log(math.exp(float(rows[i] @ cols[i]) / tau) / den))
        return sum(losses) / len(losses) if losses else 0.0

    return (direction(x, y) + direction(y, x)) / 2 if symmetric else direction(x, y)


def naive_proto(z, ids, cents, dens):
    total = 0.0
    for c in range(ids.shape[0]):
        rows = 0.0
        for i in range(z.shape[0]):
            logits = [float(z[i] @ cents[c][k]) / float(dens[c][k]) for k in range(cents[c].shape[0])]
            rows += -logits[int(ids[c, i])] + math.log(sum(math.exp(v) for v in logits))
        total += rows / z.shape[0]
    return total / ids.shape[0]


IDS = torch.tensor([[0, 1, 0, 2, 1, 2, 0], [0, 1, 1, 2, 3, 2, 0]])


@pytest.mark.parametrize("symmetric", [True, False])
def test_value_matches_naive_loops(symmetric):
    x, y = unit(7, 5, seed=1), unit(7, 5, seed=2)
    enc = Encoded(image=x, text=y, logit_scale=torch.tensor(9.0, dtype=D64), extras={"cluster_ids": IDS})
    value = build([{"name": "meow", "symmetric": symmetric}])(enc).loss
    assert float(value) == pytest.approx(naive_meow(x, y, IDS, 0.4, symmetric), rel=1e-10)
    # temperature None: the model's logit scale
    value = build([{"name": "meow", "temperature": None}])(enc).loss
    assert float(value) == pytest.approx(naive_meow(x, y, IDS, 1 / 9.0), rel=1e-10)
    w = meow_weights(IDS)
    assert w.diagonal().abs().sum() == 0 and float(w[0, 6]) == 0 and float(w[0, 2]) == 1 and float(w[0, 3]) == 2


def test_group_ids_fallback_is_one_clustering():
    x, y = unit(7, 5, seed=3), unit(7, 5, seed=4)
    groups = torch.tensor([3, 3, 1, 1, 1, 2, 0])
    enc = Encoded(image=x, text=y, logit_scale=torch.tensor(1.0, dtype=D64), group_ids=groups)
    value = build([{"name": "meow"}])(enc).loss
    assert float(value) == pytest.approx(naive_meow(x, y, groups, 0.4), rel=1e-10)
    assert float(build([{"name": "meow", "source": "groups"}])(enc).loss) == float(value)
    # cluster_ids win over group_ids in "auto"
    enc.extras["cluster_ids"] = IDS
    assert float(build([{"name": "meow"}])(enc).loss) == pytest.approx(naive_meow(x, y, IDS, 0.4), rel=1e-10)


def test_proto_nce_matches_naive_loops():
    x, y = unit(7, 5, seed=5), unit(7, 5, seed=6)
    cents = [unit(3, 5, seed=7), unit(4, 5, seed=8)]
    dens = [torch.tensor([0.3, 0.5, 0.4], dtype=D64), torch.tensor([0.2, 0.6, 0.4, 0.3], dtype=D64)]
    assert float(proto_nce(x, IDS, cents, dens, 0.4)) == pytest.approx(naive_proto(x, IDS, cents, dens), rel=1e-10)
    enc = Encoded(
        image=x,
        text=y,
        logit_scale=torch.tensor(1.0, dtype=D64),
        extras={"cluster_ids": IDS, "cluster_centroids": cents, "cluster_density": dens},
    )
    value = build([{"name": "meow", "proto_weight": 1.0}])(enc).loss
    expected = naive_meow(x, y, IDS, 0.4) + (naive_proto(x, IDS, cents, dens) + naive_proto(y, IDS, cents, dens)) / 2
    assert float(value) == pytest.approx(expected, rel=1e-10)
    # no density: every prototype at temperature tau
    del enc.extras["cluster_density"]
    flat = [torch.full((3,), 0.4, dtype=D64), torch.full((4,), 0.4, dtype=D64)]
    value = build([{"name": "meow", "proto_weight": 0.5}])(enc).loss
    expected = (
        naive_meow(x, y, IDS, 0.4) + 0.5 * (naive_proto(x, IDS, cents, flat) + naive_proto(y, IDS, cents, flat)) / 2
    )
    assert float(value) == pytest.approx(expected, rel=1e-10)


def test_gradcheck():
    ids = torch.tensor([[0, 1, 0, 2, 1], [0, 0, 1, 2, 1]])
    cents = [unit(3, 4, seed=9), unit(3, 4, seed=10)]
    for kwargs in ({"temperature": None}, {"proto_weight": 1.0}):  # the default: test_every_term.py
        term = build([{"name": "meow", **kwargs}]).terms[0]

        def f(a, b, s):
            return term(
                Encoded(
                    image=F.normalize(a, dim=-1),
                    text=F.normalize(b, dim=-1),
                    logit_scale=s,
                    extras={"cluster_ids": ids, "cluster_centroids": cents},
                )
            )

        assert torch.autograd.gradcheck(
            f,
            (
                torch.randn(5, 4, dtype=D64, requires_grad=True),
                torch.randn(5, 4, dtype=D64, requires_grad=True),
                torch.tensor(2.5, dtype=D64, requires_grad=True),
            ),
        )


def test_all_distinct_clusters_equal_hand_weighted_info_nce():
    x, y = unit(6, 8, seed=13), unit(6, 8, seed=14)
    ids = torch.stack([torch.arange(6), torch.arange(6) + 10, torch.arange(6) * 2])  # C = 3, all distinct
    tau = 0.4
    s = x @ y.t() / tau
    # every negative weighs C = 3, the positive 0 (left out of the denominator)
    eye = torch.eye(6, dtype=torch.bool)
    i2t = (-s.diagonal() + torch.log(3 * s.exp().masked_fill(eye, 0).sum(1))).mean()
    t2i = (-s.diagonal() + torch.log(3 * s.t().exp().masked_fill(eye, 0).sum(1))).mean()
    assert float(meow_loss(x, y, meow_weights(ids), 1 / tau)) == pytest.approx(float((i2t + t2i) / 2), rel=1e-12)
    # and the loss can go negative (no positive in the denominator)
    aligned = meow_loss(x, x, meow_weights(ids), 1 / 0.05)
    assert float(aligned) < 0


def test_zero_denominator_guard_and_false_negative_removal():
    x, y = unit(4, 6, seed=15), unit(4, 6, seed=16)
    # one cluster for everyone: no row has a negative -> 0 (not inf / nan)
    same = torch.zeros(2, 4, dtype=torch.long)
    x_ = x.clone().requires_grad_()
    loss = meow_loss(x_, y, meow_weights(same), 2.5)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.isfinite(x_.grad).all()
    # (with cluster weights a row has no negative only if no row has; for general weights, e.g. learnt
    # AdaMEOW-style ones, such rows are left out of the mean)
    w = 1.0 - torch.eye(4, dtype=D64)
    w[0] = 0.0
    logits = x @ y.t() * 2.5
    expected = sum(float(-logits[i, i] + torch.log((w[i] * torch.exp(logits[i])).sum())) for i in (1, 2, 3)) / 3
    assert float(weighted_info_nce(logits, w)) == pytest.approx(expected, rel=1e-12)
    # a near-duplicate negative in the same cluster no longer pushes the anchor away
    y2 = y.clone()
    y2[1] = F.normalize(x[0] + 0.01 * y[1], dim=-1)
    together = torch.tensor([[0, 0, 1, 2]])
    apart = torch.tensor([[0, 1, 2, 3]])
    assert float(meow_loss(x, y2, meow_weights(together), 2.5, symmetric=False)) < float(
        meow_loss(x, y2, meow_weights(apart), 2.5, symmetric=False)
    )


def test_missing_inputs_and_validation():
    x, y = unit(4, 4, seed=17), unit(4, 4, seed=18)
    plain = Encoded(image=x, text=y, logit_scale=torch.tensor(1.0, dtype=D64))
    with pytest.raises(ValueError, match=r"'meow'.*cluster_ids.*group_ids"):
        build([{"name": "meow"}])(plain)
    with pytest.raises(ValueError, match=r"'meow'.*cluster_ids"):
        build([{"name": "meow", "source": "clusters"}])(plain)
    with pytest.raises(ValueError, match=r"'meow'.*cluster_centroids"):
        build([{"name": "meow", "proto_weight": 1.0}])(
            Encoded(image=x, text=y, logit_scale=torch.tensor(1.0), extras={"cluster_ids": torch.arange(4)})
        )
    with pytest.raises(ValueError, match="C x B"):
        build([{"name": "meow"}])(
            Encoded(
                image=x,
                text=y,
                logit_scale=torch.tensor(1.0),
                extras={"cluster_ids": torch.zeros(2, 5, dtype=torch.long)},
            )
        )
    for bad in (
        {"temperature": 0},
        {"source": "kmeans"},
        {"proto_weight": -1},
        {"proto_weight": 1.0, "source": "groups"},
    ):
        with pytest.raises(ValueError, match="meow"):
            build([{"name": "meow", **bad}])
