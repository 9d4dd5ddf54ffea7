"""m2mix / vmix / lmix / vlmix: geodesic multi-modal mixup (Oh et al. 2023).

Peer: no library implements geodesic multi-modal mixup; checked against explicit
loops with a scalar slerp, and against CLIP / open_clip in its lam -> 0, 1 limits.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives._rng import sample_beta
from contrastkit.objectives.functional import soft_cross_entropy
from contrastkit.objectives.m2mix import lmix_loss, m2mix_loss, slerp, vlmix_loss, vmix_loss
from helpers import unit

D64 = torch.float64
NAMES = ["m2mix", "vmix", "lmix", "vlmix"]


def py_slerp(a, b, lam):
    a, b = [float(v) for v in a], [float(v) for v in b]
    cos = max(-1.0, min(1.0, sum(p * q for p, q in zip(a, b))))
    th = math.acos(cos)
    if math.sin(th) < 1e-3:
        v = [lam * p + (1 - lam) * q for p, q in zip(a, b)]
        n = math.sqrt(sum(c * c for c in v))
        return [c / n for c in v]
    return [(p * math.sin(lam * th) + q * math.sin((1 - lam) * th)) / math.sin(th) for p, q in zip(a, b)]


def dot(a, b):
    return sum(float(p) * float(q) for p, q in zip(a, b))


def ce_rows(logits, target):
    total = 0.0
    for row, trow in zip(logits, target):
        lse = math.log(sum(math.exp(v) for v in row))
        total += -sum(t * (v - lse) for v, t in zip(row, trow))
    return total / len(logits)


def naive(name, x, y, lam, t, reduction):
    b = x.shape[0]
    eye = [[float(i == j) for j in range(b)] for i in range(b)]
    flip = [[float(j == b - 1 - i) for j in range(b)] for i in range(b)]
    if name == "m2mix":
        neg = [py_slerp(x[j], y[j], lam) for j in range(b)]
        li = [[t * (dot(x[i], y[i]) if i == j else dot(x[i], neg[j])) for j in range(b)] for i in range(b)]
        lt = [[t * (dot(x[i], y[i]) if i == j else dot(y[i], neg[j])) for j in range(b)] for i in range(b)]
        total = ce_rows(li, eye) + ce_rows(lt, eye)
    else:
        xs = [py_slerp(x[i], x[b - 1 - i], lam) for i in range(b)] if name in ("vmix", "vlmix") else list(x)
        ys = [py_slerp(y[i], y[b - 1 - i], lam) for i in range(b)] if name in ("lmix", "vlmix") else list(y)
        logits = [[t * dot(xs[i], ys[j]) for j in range(b)] for i in range(b)]
        if name == "vlmix":
            target = [[eye[i][j] + flip[i][j] for j in range(b)] for i in range(b)]
        else:
            target = [[lam * eye[i][j] + (1 - lam) * flip[i][j] for j in range(b)] for i in range(b)]
        cols = [list(c) for c in zip(*logits)]
        total = ce_rows(logits, target) + ce_rows(cols, [list(c) for c in zip(*target)])
    return total if reduction == "sum" else total / 2


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [6, 7])
def test_values_match_naive_loops(name, batch):
    x, y = unit(batch, 5, seed=1), unit(batch, 5, seed=2)
    enc = Encoded(image=x, text=y, logit_scale=torch.tensor(9.0, dtype=D64))
    for reduction in ("sum", "mean"):
        value = build([{"name": name, "seed": 4, "reduction": reduction, "beta": 0.7}])(enc).loss
        lam = sample_beta(0.7, 0.7, torch.Generator().manual_seed(4))
        t = 1 / 0.07 if name == "m2mix" else 9.0
        assert float(value) == pytest.approx(naive(name, x, y, lam, t, reduction), rel=1e-9)


def test_slerp_properties():
    a, b = unit(10, 6, seed=3), unit(10, 6, seed=4)
    for lam in (0.0, 0.3, 0.5, 1.0):
        m = slerp(a, b, lam)
        assert torch.allclose(m.norm(dim=-1), torch.ones(10, dtype=D64))
    assert torch.allclose(slerp(a, b, 1.0), a) and torch.allclose(slerp(a, b, 0.0), b)
    assert torch.allclose(slerp(a, b, 0.5), F.normalize(a + b, dim=-1))
    # equal angular steps along the geodesic (lam on the first argument)
    th = torch.acos((a * b).sum(-1))
    assert torch.allclose(torch.acos((slerp(a, b, 0.3) * b).sum(-1).clamp(-1, 1)), 0.3 * th)
    # identical points: nlerp fallback, finite values and gradients
    same = a.clone().requires_grad_()
    m = slerp(same, same.detach().clone(), 0.4)
    assert torch.allclose(m, a)
    m.sum().backward()
    assert torch.isfinite(same.grad).all()


# gradcheck (re-seeded) and finite values and gradients at batch 1, 2, 512: tests/objectives/test_every_term.py


def test_limits_against_clip_and_open_clip():
    from open_clip.loss import ClipLoss

    x, y = unit(8, 8, seed=7, dtype=torch.float32), unit(8, 8, seed=8, dtype=torch.float32)
    t = torch.tensor(12.0)
    peer = float(ClipLoss()(x, y, t))
    # lam = 1 leaves the points unmixed: V-mix and L-mix are CLIP
    assert float(vmix_loss(x, y, 1.0, t)) == pytest.approx(peer, rel=1e-5)
    assert float(lmix_loss(x, y, 1.0, t)) == pytest.approx(peer, rel=1e-5)
    # VL-mix at lam = 1: CLIP plus the same CE against the flipped identity
    s = t * x @ y.t()
    flip = torch.flip(torch.eye(8), dims=[0])
    expected = peer + (soft_cross_entropy(s, flip) + soft_cross_entropy(s.t(), flip)) / 2
    assert float(vlmix_loss(x, y, 1.0, t)) == pytest.approx(float(expected), rel=1e-5)
    # m2mix: lam = 0 mixes to the texts, so its image half is CLIP's image->text CE (lam = 1: text->image)
    labels = torch.arange(8)
    yy = torch.where(torch.eye(8, dtype=torch.bool), s, t * y @ y.t())
    assert float(m2mix_loss(x, y, 0.0, t)) == pytest.approx(
        float(F.cross_entropy(s, labels) + F.cross_entropy(yy, labels)), rel=1e-5
    )
    xx = torch.where(torch.eye(8, dtype=torch.bool), s, t * x @ x.t())
    assert float(m2mix_loss(x, y, 1.0, t)) == pytest.approx(
        float(F.cross_entropy(xx, labels) + F.cross_entropy(s.t(), labels)), rel=1e-5
    )
    assert float(m2mix_loss(x, y, 0.3, t, reduction="mean")) == pytest.approx(
        float(m2mix_loss(x, y, 0.3, t)) / 2, rel=1e-6
    )


def test_detach_mix_changes_gradient_not_value():
    x, y = unit(6, 5, seed=9).requires_grad_(), unit(6, 5, seed=10).requires_grad_()
    t = torch.tensor(5.0, dtype=D64)
    for fn in (m2mix_loss, vmix_loss, lmix_loss, vlmix_loss):
        a, b = fn(x, y, 0.35, t), fn(x, y, 0.35, t, detach_mix=True)
        assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-12)
        ga = torch.autograd.grad(a, (x, y))
        grads = torch.autograd.grad(b, (x, y), allow_unused=True) if b.requires_grad else (None, None)
        gb = [torch.zeros_like(v) if g is None else g for v, g in zip((x, y), grads)]
        assert any(not torch.allclose(p, q) for p, q in zip(ga, gb))


def test_lambda_stream_beta_distribution_and_defaults():
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_beta(0.5, 0.5, g) for _ in range(4000)])
    assert float(draws.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(draws.var()) == pytest.approx(0.125, abs=0.01)  # ab / ((a+b)^2 (a+b+1))
    draws = torch.tensor([sample_beta(2.0, 5.0, g) for _ in range(4000)])
    assert float(draws.mean()) == pytest.approx(2 / 7, abs=0.01)
    assert build([{"name": "m2mix"}]).terms[0].temperature == pytest.approx(0.07)
    assert build([{"name": "m2mix"}]).terms[0].reduction == "sum"
    assert build([{"name": "vmix"}]).terms[0].temperature is None
    enc = Encoded(image=unit(6, 5, seed=11), text=unit(6, 5, seed=12), logit_scale=torch.tensor(5.0, dtype=D64))
    term = build([{"name": "vmix", "seed": 2}]).terms[0]
    first, second = float(term(enc)), float(term(enc))
    assert first != second  # one new lam per batch
    term.reset_rng()
    assert float(term(enc)) == first


def test_validation():
    for name in NAMES:
        for bad in ({"beta": 0}, {"temperature": -1}, {"reduction": "max"}, {"detach_mix": "no"}):
            with pytest.raises(ValueError, match=name):
                build([{"name": name, **bad}])
