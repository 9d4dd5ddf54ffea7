"""uniformity / alignment / cross_uniformity (contrastive gap, Fahim et al.).

Peer: no peer library implements these terms; the Wang & Isola reference code
(``torch.pdist(x).pow(2).mul(-t).exp().mean().log()``) is used as the peer
formula for in-modality uniformity.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives.gap import alignment_loss, cross_uniformity_loss, in_modality_uniformity, uniformity_loss
from helpers import unit

D64 = torch.float64


def enc_of(image, text, scale=10.0):
    return Encoded(image=image, text=text, logit_scale=torch.tensor(scale, dtype=image.dtype))


def naive_uniformity(z, t):
    n = z.shape[0]
    vals = [math.exp(-t * float(((z[i] - z[j]) ** 2).sum())) for i in range(n) for j in range(i + 1, n)]
    return math.log(sum(vals) / len(vals))


def naive_cross(x, y, t):
    n = x.shape[0]
    vals = [math.exp(-t * float(((x[i] - y[j]) ** 2).sum())) for i in range(n) for j in range(n) if i != j]
    return math.log(sum(vals) / len(vals))


def naive_alignment(x, y, alpha):
    return sum(float(((x[i] - y[i]) ** 2).sum()) ** (alpha / 2) for i in range(x.shape[0])) / x.shape[0]


@pytest.mark.parametrize("t", [2.0, 0.5])
def test_values_match_naive_loops(t):
    x, y = unit(7, 5, seed=1), unit(7, 5, seed=2)
    enc = enc_of(x, y)
    u = build([{"name": "uniformity", "t": t}])(enc).loss
    assert float(u) == pytest.approx(0.5 * naive_uniformity(x, t) + 0.5 * naive_uniformity(y, t), rel=1e-10)
    xu = build([{"name": "cross_uniformity", "t": t}])(enc).loss
    assert float(xu) == pytest.approx(naive_cross(x, y, t), rel=1e-10)
    for alpha in (2.0, 1.0, 3.0):
        a = build([{"name": "alignment", "alpha": alpha}])(enc).loss
        assert float(a) == pytest.approx(naive_alignment(x, y, alpha), rel=1e-10)
    assert float(build([{"name": "uniformity", "modality": "image", "t": t}])(enc).loss) == pytest.approx(
        naive_uniformity(x, t), rel=1e-10
    )


def test_uniformity_matches_wang_isola_reference_formula():
    x = unit(9, 6, seed=3)
    ref = torch.pdist(x, p=2).pow(2).mul(-2.0).exp().mean().log()
    assert float(uniformity_loss(x, 2.0)) == pytest.approx(float(ref), rel=1e-12)


# the default configurations of all three terms: tests/objectives/test_every_term.py
@pytest.mark.parametrize("name,kwargs", [("alignment", {"alpha": 3.0})])
def test_gradcheck(name, kwargs):
    term = build([{"name": name, **kwargs}]).terms[0]
    raw_x = torch.randn(5, 4, dtype=D64, requires_grad=True)
    raw_y = torch.randn(5, 4, dtype=D64, requires_grad=True)

    def f(a, b):
        return term(enc_of(F.normalize(a, dim=-1), F.normalize(b, dim=-1)))

    assert torch.autograd.gradcheck(f, (raw_x, raw_y))


def test_uniformity_lower_for_spread_than_clustered_points():
    spread = unit(64, 8, seed=6)
    centre = unit(1, 8, seed=7)
    clustered = F.normalize(centre + 0.05 * torch.randn(64, 8, dtype=D64), dim=-1)
    assert float(uniformity_loss(spread)) < float(uniformity_loss(clustered))
    # identical points: every exp term is 1, log mean = 0 (the maximum)
    same = centre.expand(10, 8)
    assert float(uniformity_loss(same)) == pytest.approx(0.0, abs=1e-12)
    assert float(in_modality_uniformity(same, same)) == pytest.approx(0.0, abs=1e-12)


def test_alignment_and_cross_uniformity_behaviour():
    x = unit(16, 8, seed=8)
    assert float(alignment_loss(x, x)) == pytest.approx(0.0, abs=1e-12)
    assert float(alignment_loss(x, -x)) == pytest.approx(4.0, rel=1e-12)
    # XU falls as non-paired image-text points move apart: two separated modality cones
    # score lower than texts lying on their images (the term is used together with alignment)
    closed = cross_uniformity_loss(x, x)
    gapped = cross_uniformity_loss(
        F.normalize(x + 3.0 * unit(1, 8, seed=11), dim=-1), F.normalize(x - 3.0 * unit(1, 8, seed=11), dim=-1)
    )
    assert float(gapped) < float(closed)


def test_parameter_validation():
    with pytest.raises(ValueError, match="uniformity"):
        build([{"name": "uniformity", "t": 0}])
    with pytest.raises(ValueError, match="modality"):
        build([{"name": "uniformity", "modality": "audio"}])
    with pytest.raises(ValueError, match="alpha"):
        build([{"name": "alignment", "alpha": -1}])
    with pytest.raises(ValueError, match="cross_uniformity"):
        build([{"name": "cross_uniformity", "t": -2}])
