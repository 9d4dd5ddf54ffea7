"""cwcl: continuously weighted contrastive loss (Srinivasa et al. 2023).

Peer: no library implements CWCL (and the paper released no code). With
identity weights it must equal CLIP, checked against open_clip's ClipLoss.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives.clip import clip_loss
from contrastkit.objectives.cwcl import cwcl_loss, cwcl_target_entropy, cwcl_targets, cwcl_weights
from helpers import unit

D64 = torch.float64


def naive_cwcl(x, y, q, t, wmap="affine", thr=0.0):
    b = x.shape[0]

    def w(i, j):
        if i == j:
            return 1.0
        s = float(q[i] @ q[j])
        return (s + 1) / 2 if wmap == "affine" else min(max((s - thr) / (1 - thr), 0.0), 1.0)

    def direction(rows, cols):
        total = 0.0
        for i in range(b):
            logits = [t * float(rows[i] @ cols[j]) for j in range(b)]
            lse = math.log(sum(math.exp(v) for v in logits))
            norm = sum(w(i, k) for k in range(b))
            total += -sum(w(i, j) / norm * (logits[j] - lse) for j in range(b))
        return total / b

    return (direction(x, y) + direction(y, x)) / 2


def make(b=6, d=5, seed=0, dtype=D64, t=6.0):
    return Encoded(
        image=unit(b, d, seed=seed, dtype=dtype),
        text=unit(b, d, seed=seed + 1, dtype=dtype),
        logit_scale=torch.tensor(t, dtype=dtype),
        teacher_text=unit(b, d, seed=seed + 2, dtype=dtype),
        teacher_image=unit(b, d, seed=seed + 3, dtype=dtype),
        reference_text=unit(b, d, seed=seed + 4, dtype=dtype),
    )


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({}, "text"),
        ({"frozen": "image"}, "image"),
        ({"weight_source": "teacher"}, "teacher_text"),
        ({"weight_source": "teacher", "frozen": "image"}, "teacher_image"),
        ({"weight_source": "reference"}, "reference_text"),
        ({"weight_map": "clamp"}, "text"),
        ({"weight_map": "clamp", "threshold": 0.3}, "text"),
    ],
)
def test_value_matches_naive_loops(kwargs, field):
    enc = make()
    value = build([{"name": "cwcl", **kwargs}])(enc).loss
    expected = naive_cwcl(
        enc.image, enc.text, getattr(enc, field), 6.0, kwargs.get("weight_map", "affine"), kwargs.get("threshold", 0.0)
    )
    assert float(value) == pytest.approx(expected, rel=1e-10)


def test_gradcheck_teacher_weights():
    # weights from a fixed teacher field: gradient through image, text and the logit scale
    # (the default, weights from the frozen text embeddings themselves (LiT): test_every_term.py)
    term = build([{"name": "cwcl", "weight_source": "teacher"}]).terms[0]
    teacher = unit(4, 4, seed=5)

    def f(a, b, s):
        return term(
            Encoded(image=F.normalize(a, dim=-1), text=F.normalize(b, dim=-1), logit_scale=s, teacher_text=teacher)
        )

    assert torch.autograd.gradcheck(
        f,
        (
            torch.randn(4, 4, dtype=D64, requires_grad=True),
            torch.randn(4, 4, dtype=D64, requires_grad=True),
            torch.tensor(3.0, dtype=D64, requires_grad=True),
        ),
    )


def test_weights_take_no_gradient():
    text = unit(5, 4, seed=7).requires_grad_()
    w = cwcl_weights(text)
    assert not w.requires_grad
    enc = Encoded(image=unit(5, 4, seed=8), text=text, logit_scale=torch.tensor(4.0, dtype=D64))
    build([{"name": "cwcl"}])(enc).loss.backward()
    # gradient to the text only through the logits: equal to that with the weights held fixed
    text2 = text.detach().clone().requires_grad_()
    cwcl_loss(enc.image, text2, enc.logit_scale, cwcl_targets(w)).backward()
    assert torch.allclose(text.grad, text2.grad)


def test_identity_weights_equal_clip_and_open_clip():
    from open_clip.loss import ClipLoss

    x, y = unit(8, 8, seed=10, dtype=torch.float32), unit(8, 8, seed=11, dtype=torch.float32)
    scale = torch.tensor(15.0)
    eye = torch.eye(8)
    assert float(cwcl_loss(x, y, scale, eye)) == pytest.approx(float(clip_loss(x, y, scale)), rel=1e-6)
    assert float(cwcl_loss(x, y, scale, eye)) == pytest.approx(float(ClipLoss()(x, y, scale)), rel=1e-5)
    # orthogonal frozen embeddings with the clamp map give identity weights through the term
    enc = Encoded(image=x, text=y, logit_scale=scale, teacher_text=torch.eye(8))
    value = build([{"name": "cwcl", "weight_source": "teacher", "weight_map": "clamp"}])(enc).loss
    assert float(value) == pytest.approx(float(ClipLoss()(x, y, scale)), rel=1e-5)


def test_target_entropy_and_maps():
    b = 64
    q = unit(b, 16, seed=12)
    affine = cwcl_targets(cwcl_weights(q, "affine"))
    clamp = cwcl_targets(cwcl_weights(q, "clamp", 0.3))
    assert torch.allclose(affine.sum(-1), torch.ones(b, dtype=D64))
    # the affine map is nearly uniform at this B (the pitfall); the clamp map is much sharper
    assert float(cwcl_target_entropy(affine, normalized=True)) > 0.95
    assert float(cwcl_target_entropy(clamp)) < float(cwcl_target_entropy(affine)) - 1.0
    assert float(cwcl_target_entropy(torch.eye(5, dtype=D64))) == 0.0
    assert float(cwcl_target_entropy(torch.full((5, 5), 0.2, dtype=D64))) == pytest.approx(math.log(5))
    term = build([{"name": "cwcl"}]).terms[0]
    enc = make(b=b, d=16, seed=12)
    assert float(term.target_entropy(enc)) == pytest.approx(
        float(cwcl_target_entropy(cwcl_targets(cwcl_weights(enc.text)))), rel=1e-12
    )


def test_paraphrase_caption_is_pulled_in_not_pushed_away():
    # caption 1 paraphrases caption 0 (frozen-side similarity 0.9): CLIP pushes image 0 away from it,
    # CWCL (clamp map, threshold 0.5) gives it target mass and pulls image 0 towards it
    from contrastkit.objectives.functional import soft_cross_entropy

    y = unit(6, 64, seed=13)
    y[1] = F.normalize(0.9 * y[0] + math.sqrt(1 - 0.81) * F.normalize(y[1] - (y[1] @ y[0]) * y[0], dim=-1), dim=-1)
    assert float(y[0] @ y[1]) == pytest.approx(0.9, rel=1e-9)
    x = y.clone()
    targets = cwcl_targets(cwcl_weights(y, "clamp", 0.5))
    assert float(targets[0, 1]) == pytest.approx(0.8 / 1.8, rel=1e-6)
    logits = (20.0 * x @ y.t()).requires_grad_()
    soft_cross_entropy(logits, targets).backward()
    assert float(logits.grad[0, 1]) < 0  # descent raises logit (0, 1)
    logits_clip = (20.0 * x @ y.t()).requires_grad_()
    soft_cross_entropy(logits_clip, torch.eye(6, dtype=D64)).backward()
    assert float(logits_clip.grad[0, 1]) > 0  # descent lowers it


def test_missing_field_and_validation():
    enc = make()
    plain = Encoded(image=enc.image, text=enc.text, logit_scale=enc.logit_scale)
    assert build([{"name": "cwcl", "weight_source": "teacher"}]).requires == {"teacher_text"}
    with pytest.raises(ValueError, match=r"'cwcl'.*teacher_text"):
        build([{"name": "cwcl", "weight_source": "teacher"}])(plain)
    with pytest.raises(ValueError, match=r"'cwcl'.*reference_image"):
        build([{"name": "cwcl", "weight_source": "reference", "frozen": "image"}])(plain)
    for bad in (
        {"frozen": "audio"},
        {"weight_source": "ema"},
        {"weight_map": "exp"},
        {"threshold": 1.0},
        {"threshold": 0.2},
    ):
        with pytest.raises(ValueError, match="cwcl"):
            build([{"name": "cwcl", **bad}])
