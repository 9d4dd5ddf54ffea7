"""cl2l_local: CL2L local-view InfoNCE with its own MLP projectors and scale (docs/methods.md A7)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives._heads import has_lazy_parameters
from contrastkit.objectives.cl2l import Cl2lLocalTerm
from contrastkit.objectives.clip import clip_loss
from helpers import naive_mlp

SMALL = {"hidden_dim": 6, "out_dim": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_enc(
    b: int = 5, v: int = 2, vt: int | None = None, fi: int = 7, ft: int = 5, dtype=torch.float64, seed: int = 0
) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    vt = v if vt is None else vt
    return Encoded(
        image=F.normalize(torch.randn(b, 3, generator=g, dtype=dtype), dim=-1),
        text=F.normalize(torch.randn(b, 3, generator=g, dtype=dtype), dim=-1),
        logit_scale=torch.tensor(10.0, dtype=dtype),
        image_view_features=torch.randn(v, b, fi, generator=g, dtype=dtype),
        text_view_features=torch.randn(vt, b, ft, generator=g, dtype=dtype),
    )


def naive_ce(logits: torch.Tensor, eps: float) -> torch.Tensor:
    rows, cols = logits.shape
    target = torch.full((rows, cols), eps / cols, dtype=logits.dtype)
    for i in range(rows):
        target[i, i] += 1 - eps
    m = logits.max(dim=1, keepdim=True).values
    log_p = logits - m - torch.log(torch.exp(logits - m).sum(dim=1, keepdim=True))
    return -(target * log_p).sum() / rows


def naive_cl2l(term: Cl2lLocalTerm, enc: Encoded) -> torch.Tensor:
    t = math.exp(term.log_logit_scale.item())
    h_img = [naive_mlp(term.image_projector, x) for x in enc.image_view_features]
    h_txt = [naive_mlp(term.text_projector, y) for y in enc.text_view_features]
    h_img = [h / h.norm(dim=1, keepdim=True) for h in h_img]
    h_txt = [h / h.norm(dim=1, keepdim=True) for h in h_txt]
    total, count = 0.0, 0
    for a in h_img:
        for b in h_txt:
            s = t * a @ b.t()
            total = total + (naive_ce(s, term.label_smoothing) + naive_ce(s.t(), term.label_smoothing)) / 2
            count += 1
    return total / count


def double_term(**kwargs) -> Cl2lLocalTerm:
    return Cl2lLocalTerm(**{**SMALL, **kwargs}).double()


# (a) value against the formula written out by hand -------------------------------------------------


@pytest.mark.parametrize("v,vt,eps", [(2, 2, 0.1), (1, 3, 0.0), (3, 1, 0.3)])
def test_value_matches_naive_formula(v, vt, eps):
    torch.manual_seed(0)
    term = double_term(label_smoothing=eps, logit_scale_init=7.0)
    enc = make_enc(v=v, vt=vt)
    value = term(enc)
    assert value.dtype == torch.float64
    torch.testing.assert_close(value, naive_cl2l(term, enc), rtol=1e-12, atol=1e-12)


# (b) gradcheck on the inputs and (c) finite values and gradients (own scale included) at batch 2 and 512:
# tests/objectives/test_every_term.py. BatchNorm makes batch 1 undefined in training mode ---------------


def test_batch_one_raises_clear_error_in_training_but_eval_works():
    term = Cl2lLocalTerm(**SMALL).double()
    with pytest.raises(ValueError, match=r"cl2l_local.*BatchNorm.*1 row"):
        term(make_enc(b=1))
    term(make_enc(b=4))  # materialise
    term.eval()
    assert torch.isfinite(term(make_enc(b=1)))


# (d) peer parity -----------------------------------------------------------------------------------
# No peer implements CL2L's multi-view smoothed loss; with V = 1 and no smoothing it is exactly open_clip's
# ClipLoss on the projected views, which we check here.


def test_single_view_no_smoothing_equals_open_clip_on_projected_views():
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    term = double_term(label_smoothing=0.0)
    enc = make_enc(b=6, v=1)
    value = term(enc)
    h_img = F.normalize(naive_mlp(term.image_projector, enc.image_view_features[0]), dim=-1)
    h_txt = F.normalize(naive_mlp(term.text_projector, enc.text_view_features[0]), dim=-1)
    peer = ClipLoss()(h_img, h_txt, term.logit_scale)
    torch.testing.assert_close(value, peer, rtol=1e-10, atol=1e-12)


# (e) behaviour -------------------------------------------------------------------------------------


def test_single_view_no_smoothing_equals_clip_term_on_projected_views():
    torch.manual_seed(1)
    term = double_term(label_smoothing=0.0, logit_scale_init=10.0)
    enc = make_enc(b=8, v=1)
    value = term(enc)
    h_img = term.project(term.image_projector, enc.image_view_features)[0]
    h_txt = term.project(term.text_projector, enc.text_view_features)[0]
    torch.testing.assert_close(value, clip_loss(h_img, h_txt, term.logit_scale.detach()), rtol=1e-12, atol=1e-12)


def test_batchnorm_statistics_are_per_view():
    torch.manual_seed(0)
    term = double_term()
    enc = make_enc(b=6, v=2)
    enc.image_view_features[1] = enc.image_view_features[1] * 5 + 3  # a view with other statistics
    value = term(enc)
    # Projecting the two views as one 2B batch (shared statistics) would give a different value.
    stacked = naive_mlp(term.image_projector, enc.image_view_features.reshape(12, -1)).reshape(2, 6, -1)
    h_txt = [F.normalize(naive_mlp(term.text_projector, y), dim=-1) for y in enc.text_view_features]
    shared = torch.stack(
        [
            (naive_ce(10 * F.normalize(a, dim=-1) @ b.t(), 0.1) + naive_ce(10 * b @ F.normalize(a, dim=-1).t(), 0.1))
            / 2
            for a in stacked
            for b in h_txt
        ]
    ).mean()
    assert not torch.allclose(value, shared)
    torch.testing.assert_close(value, naive_cl2l(term, enc))


def test_own_scale_initialised_learnable_and_clamped():
    term = Cl2lLocalTerm(**SMALL)
    assert float(term.logit_scale.detach()) == pytest.approx(10.0)
    assert term.log_logit_scale.requires_grad
    with torch.no_grad():
        term.log_logit_scale.fill_(10.0)
    term.on_step_end()
    assert float(term.logit_scale.detach()) == pytest.approx(100.0)
    with torch.no_grad():
        term.log_logit_scale.fill_(-1.0)
    term.on_step_end()
    assert float(term.logit_scale.detach()) == pytest.approx(1.0)


def test_projectors_are_lazy_until_first_forward_and_training_lowers_loss():
    torch.manual_seed(0)
    term = Cl2lLocalTerm(hidden_dim=32, out_dim=8)
    assert has_lazy_parameters(term)
    g = torch.Generator().manual_seed(3)
    base = torch.randn(32, 6, generator=g)
    enc = Encoded(
        image=torch.zeros(32, 2),
        text=torch.zeros(32, 2),
        logit_scale=torch.tensor(1.0),
        image_view_features=torch.stack([base + 0.1 * torch.randn(32, 6, generator=g) for _ in range(2)]),
        text_view_features=torch.stack([base[:, :4] + 0.1 * torch.randn(32, 4, generator=g) for _ in range(2)]),
    )
    first = term(enc)  # dry forward: materialises, then the optimizer can be built
    assert not has_lazy_parameters(term)
    opt = torch.optim.Adam(term.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        term(enc).backward()
        opt.step()
        term.on_step_end()
    assert term(enc).item() < 0.5 * first.item()


# registry, validation, missing inputs ----------------------------------------------------------------


def test_build_and_missing_input_error():
    objective = build([{"name": "cl2l_local", "weight": 2 / 3, "hidden_dim": 8, "out_dim": 4}])
    assert objective.requires == {"image_view_features", "text_view_features"}
    enc = make_enc(dtype=torch.float32)
    out = objective(enc)
    assert torch.isfinite(out.loss)
    enc.text_view_features = None
    with pytest.raises(ValueError, match=r"'cl2l_local'.*text_view_features"):
        objective(enc)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"num_layers": 0}, "num_layers"),
        ({"logit_scale_init": 0.5}, "logit_scale_init"),
        ({"logit_scale_init": 200.0}, "logit_scale_init"),
        ({"bogus": 1}, "unknown parameter"),
    ],
)
def test_invalid_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build([{"name": "cl2l_local", **kwargs}])


def test_mismatched_rows_and_shapes():
    term = Cl2lLocalTerm(**SMALL).double()
    enc = make_enc()
    enc.text_view_features = enc.text_view_features[:, :3]
    with pytest.raises(ValueError, match="rows"):
        term(enc)
    enc = make_enc()
    enc.image_view_features = enc.image_view_features[0]
    with pytest.raises(ValueError, match="V x B x F"):
        term(enc)
