"""mochi: in-batch hard negative mixing (Kalantidis et al. 2020).

Peer: no library implements MoCHi (lightly and pytorch-metric-learning have no
hard-negative mixing). With no synthetic negative it must equal CLIP, checked
against open_clip's ClipLoss; the closed-form mixing logits are checked against
explicitly built D-dimensional mixed points (values and gradients).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives.clip import clip_loss
from contrastkit.objectives.mochi import draw_mochi, mochi_direction, mochi_loss
from helpers import unit

D64 = torch.float64


def explicit_direction(anchor, keys, t, n_hard, draws, loops=False):
    """Build h and h' as D-vectors (detached) and take the CE; ``loops``: plain Python floats."""
    b = anchor.shape[0]
    total = anchor.new_zeros(())
    naive = 0.0
    for i in range(b):
        q = anchor[i]
        sims = [(float((q @ keys[j]).detach()), j) for j in range(b) if j != i]
        hard = [j for _, j in sorted(sims, key=lambda p: -p[0])[:n_hard]]
        cols = [q @ keys[j] for j in range(b)]
        kd, qd = keys.detach(), q.detach()
        for m in range(draws.alpha.shape[1]):
            a = float(draws.alpha[i, m])
            ni, nj = kd[hard[int(draws.pair_pos[i, m, 0])]], kd[hard[int(draws.pair_pos[i, m, 1])]]
            cols.append(q @ F.normalize(a * ni + (1 - a) * nj, dim=-1))
        for m in range(draws.beta.shape[1]):
            bb = float(draws.beta[i, m])
            nj = kd[hard[int(draws.self_pos[i, m])]]
            cols.append(q @ F.normalize(bb * qd + (1 - bb) * nj, dim=-1))
        logits = t * torch.stack(cols)
        total = total + torch.logsumexp(logits, 0) - logits[i]
        vals = [float(v) for v in logits.detach()]
        naive += math.log(sum(math.exp(v) for v in vals)) - vals[i]
    return naive / b if loops else total / b


def make(b=6, d=5, seed=0, dtype=D64, t=5.0):
    return Encoded(
        image=unit(b, d, seed=seed, dtype=dtype),
        text=unit(b, d, seed=seed + 1, dtype=dtype),
        logit_scale=torch.tensor(t, dtype=dtype),
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_hard": 3, "num_mix": 4, "num_self_mix": 2},
        {"num_hard": 32, "num_mix": 5, "num_self_mix": 0},
        {"num_hard": 1, "num_mix": 0, "num_self_mix": 3, "self_mix_max": 1.0},
    ],
)
def test_value_matches_naive_loops(kwargs):
    enc = make()
    value = build([{"name": "mochi", "seed": 7, **kwargs}])(enc).loss
    g = torch.Generator().manual_seed(7)
    n = min(kwargs["num_hard"], 5)
    args = (n, kwargs["num_mix"], kwargs["num_self_mix"], kwargs.get("self_mix_max", 0.5), g)
    d_img, d_txt = draw_mochi(6, *args), draw_mochi(6, *args)
    naive = (
        explicit_direction(enc.image, enc.text, 5.0, n, d_img, loops=True)
        + explicit_direction(enc.text, enc.image, 5.0, n, d_txt, loops=True)
    ) / 2
    assert float(value) == pytest.approx(naive, rel=1e-10)


def test_closed_form_gradient_equals_explicit_detached_mixing():
    x = unit(7, 6, seed=1).requires_grad_()
    y = unit(7, 6, seed=2).requires_grad_()
    draws = draw_mochi(7, 4, 6, 3, 0.5, torch.Generator().manual_seed(3))
    t = torch.tensor(4.0, dtype=D64)
    closed = mochi_direction(x, y, t, 4, draws)
    gx, gy = torch.autograd.grad(closed, (x, y))
    explicit = explicit_direction(x, y, t, 4, draws)
    ex, ey = torch.autograd.grad(explicit, (x, y))
    assert float(closed.detach()) == pytest.approx(float(explicit.detach()), rel=1e-12)
    assert torch.allclose(gx, ex, rtol=1e-10, atol=1e-12) and torch.allclose(gy, ey, rtol=1e-10, atol=1e-12)


def test_gradcheck():
    # the mixes are stop-gradient points built from the current embeddings, so a finite-difference check
    # must hold them fixed: gradcheck the function with the stop-gradient copies frozen at the base point,
    # and check that the term's autograd gradient there is that function's gradient
    raw_x, raw_y = torch.randn(5, 4, dtype=D64), torch.randn(5, 4, dtype=D64)
    x0, y0 = F.normalize(raw_x, dim=-1), F.normalize(raw_y, dim=-1)
    gen = torch.Generator().manual_seed(0)
    draws = [draw_mochi(5, 3, 3, 2, 0.5, gen) for _ in range(2)]  # image-anchor draws, then text-anchor draws

    def frozen(a, b, s):
        x, y = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        return (
            mochi_direction(x, y, s, 3, draws[0], anchor_sg=x0, keys_sg=y0)
            + mochi_direction(y, x, s, 3, draws[1], anchor_sg=y0, keys_sg=x0)
        ) / 2

    args = (
        raw_x.clone().requires_grad_(),
        raw_y.clone().requires_grad_(),
        torch.tensor(3.0, dtype=D64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(frozen, args)
    term = build([{"name": "mochi", "num_hard": 3, "num_mix": 3, "num_self_mix": 2}]).terms[0]
    term.reset_rng(0)
    g_term = torch.autograd.grad(
        term(Encoded(image=F.normalize(args[0], dim=-1), text=F.normalize(args[1], dim=-1), logit_scale=args[2])), args
    )
    g_frozen = torch.autograd.grad(frozen(*args), args)
    for a, b in zip(g_term, g_frozen):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_without_mixing_equals_clip_and_open_clip():
    from open_clip.loss import ClipLoss

    enc = make(b=12, d=8, seed=5, dtype=torch.float32, t=20.0)
    peer = float(ClipLoss()(enc.image, enc.text, enc.logit_scale))
    none = build([{"name": "mochi", "num_mix": 0, "num_self_mix": 0}])(enc).loss
    assert float(none) == pytest.approx(float(clip_loss(enc.image, enc.text, enc.logit_scale)), rel=1e-6)
    assert float(none) == pytest.approx(peer, rel=1e-5)
    # before start_step the term is plain CLIP; it mixes once the engine has counted enough steps
    objective = build([{"name": "mochi", "start_step": 2}])
    assert float(objective(enc).loss) == pytest.approx(peer, rel=1e-5)
    objective.on_step_end()
    assert float(objective(enc).loss) == pytest.approx(peer, rel=1e-5)
    objective.on_step_end()
    assert float(objective(enc).loss) > peer + 1e-3
    assert int(objective.state_dict()["terms.0.steps"]) == 2


def test_mixed_negatives_are_hard():
    enc = make(b=64, d=16, seed=6)
    draws = draw_mochi(64, 8, 16, 16, 0.5, torch.Generator().manual_seed(0))
    base = clip_loss(enc.image, enc.text, enc.logit_scale)
    mixed = mochi_loss(enc.image, enc.text, enc.logit_scale, 8, draws, draws)
    assert float(mixed) > float(base)  # extra negative columns only add to the denominators
    # h' (anchor mixed in) sits closer to the anchor than the average in-batch negative
    s = enc.image @ enc.text.t()
    off = s[~torch.eye(64, dtype=torch.bool)].mean()
    hard = torch.topk(s.masked_fill(torch.eye(64, dtype=torch.bool), -2), 8, dim=1).indices
    q_h = []
    for i in range(64):
        for m in range(16):
            bb = float(draws.beta[i, m])
            h = F.normalize(bb * enc.image[i] + (1 - bb) * enc.text[hard[i, int(draws.self_pos[i, m])]], dim=-1)
            q_h.append(float(enc.image[i] @ h))
    assert sum(q_h) / len(q_h) > float(off) + 0.2


def test_stream_is_seeded_and_saved():
    enc = make()
    a = build([{"name": "mochi", "seed": 3}]).terms[0]
    b = build([{"name": "mochi", "seed": 3}]).terms[0]
    assert float(a(enc)) == float(b(enc))
    assert float(a(enc)) != float(build([{"name": "mochi", "seed": 4}]).terms[0](enc))
    b.load_state_dict(a.state_dict())  # a resumed run continues a's stream
    assert float(a(enc)) == float(b(enc))


def test_validation():
    for bad in (
        {"num_hard": 0},
        {"num_mix": -1},
        {"num_self_mix": 1.5},
        {"self_mix_max": 0},
        {"start_step": -1},
        {"seed": "x"},
    ):
        with pytest.raises(ValueError, match="mochi"):
            build([{"name": "mochi", **bad}])
