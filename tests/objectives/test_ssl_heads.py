"""barlip, siamlip, byolip: cross-modal SSL heads of CL2L (docs/methods.md A7)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives._heads import has_lazy_parameters
from contrastkit.objectives.ssl_heads import (
    BarlipTerm,
    ByolipTerm,
    SiamlipTerm,
    barlow_twins_loss,
    negative_cosine,
    siamese_pair_loss,
)
from helpers import naive_mlp

SMALL = {"hidden_dim": 6, "out_dim": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_enc(b: int = 6, v: int | None = 2, fi: int = 5, ft: int = 4, dtype=torch.float64, seed: int = 0) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    enc = Encoded(
        image=F.normalize(torch.randn(b, 3, generator=g, dtype=dtype), dim=-1),
        text=F.normalize(torch.randn(b, 3, generator=g, dtype=dtype), dim=-1),
        logit_scale=torch.tensor(10.0, dtype=dtype),
        image_features=torch.randn(b, fi, generator=g, dtype=dtype),
        text_features=torch.randn(b, ft, generator=g, dtype=dtype),
    )
    if v:
        enc.image_view_features = torch.randn(v, b, fi, generator=g, dtype=dtype)
        enc.text_view_features = torch.randn(v, b, ft, generator=g, dtype=dtype)
    return enc


def sources(enc: Encoded, use_views: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pairs = [(enc.image_features, enc.text_features)]
    if use_views and enc.image_view_features is not None:
        pairs += [(a, b) for a in enc.image_view_features for b in enc.text_view_features]
    return pairs


def naive_barlow(za: torch.Tensor, zb: torch.Tensor, lam: float, scale: float) -> torch.Tensor:
    n, d = za.shape
    c = torch.zeros(d, d, dtype=za.dtype)
    for k in range(n):
        c = c + torch.outer(za[k], zb[k])
    c = c / n
    total = 0.0
    for i in range(d):
        for j in range(d):
            total = total + ((1 - c[i, j]) ** 2 if i == j else lam * c[i, j] ** 2)
    return scale * total


def naive_cos(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return ((p * z).sum(dim=1) / (p.norm(dim=1) * z.norm(dim=1))).mean()


def naive_siam(
    term: SiamlipTerm, enc: Encoded, target_img: nn.Module | None = None, target_txt: nn.Module | None = None
) -> torch.Tensor:
    target_img = target_img or term.image_projector
    target_txt = target_txt or term.text_projector
    losses = []
    for x, y in sources(enc):
        p_img = naive_mlp(term.image_predictor, naive_mlp(term.image_projector, x))
        p_txt = naive_mlp(term.text_predictor, naive_mlp(term.text_projector, y))
        v_img, v_txt = naive_mlp(target_img, x), naive_mlp(target_txt, y)
        pair = (2 - 2 * naive_cos(p_img, v_txt)) + (2 - 2 * naive_cos(p_txt, v_img))
        losses.append(pair if term.reduction == "sum" else pair / 2)
    return sum(losses) / len(losses)


# ================================================================ BarLIP


@pytest.mark.parametrize("use_views", [True, False])
def test_barlip_value_matches_naive_formula(use_views):
    torch.manual_seed(0)
    term = BarlipTerm(**SMALL, off_diagonal_weight=0.3, loss_scale=0.025, use_views=use_views).double()
    enc = make_enc()
    value = term(enc)
    with torch.no_grad():  # non-trivial BN affine parameters
        for m in term.modules():
            if isinstance(m, nn.BatchNorm1d) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    value = term(enc)
    expected = torch.stack(
        [
            naive_barlow(naive_mlp(term.image_projector, x), naive_mlp(term.text_projector, y), 0.3, 0.025)
            for x, y in sources(enc, use_views)
        ]
    ).mean()
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)


# gradcheck on the (view) features and finite values and gradients at batch 2 and 512 of all three terms:
# tests/objectives/test_every_term.py (siamlip / byolip with their stop-gradient targets frozen)


@pytest.mark.slow
def test_barlip_default_sizes_run():
    term = BarlipTerm()  # 3000 hidden, 8192 out (docs/methods.md)
    loss = term(make_enc(b=8, v=None, fi=16, ft=12, dtype=torch.float32))
    assert torch.isfinite(loss)
    assert term.image_projector[-1].num_features == 8192 and term.image_projector[-1].affine


def test_barlip_batch_one_is_undefined():
    with pytest.raises(ValueError, match=r"'barlip'.*BatchNorm.*1 row"):
        BarlipTerm(**SMALL).double()(make_enc(b=1))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_barlip_parity_with_lightly(dtype, tol):
    """lightly's BarlowTwinsLoss standardises z over the batch and has no 0.025 scale: set loss_scale=1 and feed it
    the projector's output before our final (affine, identity at init) BatchNorm."""
    from lightly.loss import BarlowTwinsLoss

    torch.manual_seed(0)
    term = BarlipTerm(hidden_dim=16, out_dim=12, off_diagonal_weight=5e-3, loss_scale=1.0, use_views=False).to(dtype)
    enc = make_enc(b=32, v=None, dtype=dtype)
    value = term(enc)
    pre_img = term.image_projector[:-1](enc.image_features)
    pre_txt = term.text_projector[:-1](enc.text_features)
    peer = BarlowTwinsLoss(lambda_param=5e-3)(pre_img, pre_txt)
    torch.testing.assert_close(value, peer, rtol=tol, atol=0)


def test_barlow_function_is_zero_for_decorrelated_identical_codes_and_symmetric():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(64, 8, generator=g, dtype=torch.float64))
    z = q * 8.0  # z^T z / 64 = I
    assert float(barlow_twins_loss(z, z)) == pytest.approx(0.0, abs=1e-12)
    a, b = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randn(16, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(barlow_twins_loss(a, b), barlow_twins_loss(b, a))


def test_barlip_training_lowers_loss_on_correlated_pairs():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    enc = Encoded(
        image=torch.zeros(64, 2),
        text=torch.zeros(64, 2),
        logit_scale=torch.tensor(1.0),
        image_features=x,
        text_features=x @ torch.randn(8, 6, generator=g),
    )
    term = BarlipTerm(hidden_dim=32, out_dim=16, loss_scale=1.0)
    first = term(enc).item()
    opt = torch.optim.Adam(term.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        term(enc).backward()
        opt.step()
    assert term(enc).item() < 0.5 * first


# ================================================================ SiamLIP


@pytest.mark.parametrize("reduction,last_bn", [("sum", True), ("mean", False)])
def test_siamlip_value_matches_naive_formula(reduction, last_bn):
    torch.manual_seed(0)
    term = SiamlipTerm(**SMALL, reduction=reduction, last_bn=last_bn).double()
    enc = make_enc()
    torch.testing.assert_close(term(enc), naive_siam(term, enc), rtol=1e-12, atol=1e-12)


def test_siamese_math_gradcheck():
    g = torch.Generator().manual_seed(0)
    p_img, p_txt = (torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    t_img, t_txt = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(2))  # constants (sg)
    assert torch.autograd.gradcheck(lambda a, c: siamese_pair_loss(a, t_txt, c, t_img), (p_img, p_txt))


@pytest.mark.parametrize("name", ["siamlip", "byolip"])
def test_siamese_batch_one_is_undefined(name):
    term = build([{"name": name, **SMALL}]).double()
    with pytest.raises(ValueError, match=rf"'{name}'.*BatchNorm.*1 row"):
        term(make_enc(b=1))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_siamlip_parity_with_lightly_negative_cosine(dtype, tol):
    from lightly.loss import NegativeCosineSimilarity

    torch.manual_seed(0)
    peer = NegativeCosineSimilarity()
    p, z = torch.randn(32, 16, dtype=dtype), torch.randn(32, 16, dtype=dtype)
    torch.testing.assert_close(negative_cosine(p, z), 2 + 2 * peer(p, z), rtol=tol, atol=tol)
    # the whole term (release's "mean" reduction, no views) against lightly on the same head outputs
    term = SiamlipTerm(hidden_dim=16, out_dim=8, reduction="mean", use_views=False).to(dtype)
    enc = make_enc(b=32, v=None, dtype=dtype)
    value = term(enc)
    v_img, v_txt = term.image_projector(enc.image_features), term.text_projector(enc.text_features)
    p_img, p_txt = term.image_predictor(v_img), term.text_predictor(v_txt)
    expected = 2 + peer(p_img, v_txt.detach()) + peer(p_txt, v_img.detach())
    torch.testing.assert_close(value, expected, rtol=tol, atol=tol)


def test_siamlip_stop_gradient_and_reduction():
    torch.manual_seed(0)
    p_img, p_txt = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4, requires_grad=True)
    t_img, t_txt = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4, requires_grad=True)
    total = siamese_pair_loss(p_img, t_txt, p_txt, t_img, "sum")
    total.backward()
    assert t_img.grad is None and t_txt.grad is None  # targets take no gradient
    assert p_img.grad is not None and p_txt.grad is not None
    torch.testing.assert_close(siamese_pair_loss(p_img, t_txt, p_txt, t_img, "mean"), total / 2)
    # identical directions give the minimum, 0
    assert siamese_pair_loss(t_txt, t_txt, t_img, t_img).item() == pytest.approx(0.0, abs=1e-6)


def test_siamlip_without_views_uses_global_pair_only():
    torch.manual_seed(0)
    term = SiamlipTerm(**SMALL).double()
    enc = make_enc()
    with_views = term(enc)
    no_views = SiamlipTerm(**SMALL, use_views=False).double()
    no_views.load_state_dict(term.state_dict())
    enc_global = make_enc(v=None)
    torch.testing.assert_close(no_views(enc), term(enc_global))
    assert not torch.allclose(with_views, term(enc_global))


# ================================================================ BYOLIP


def test_byolip_value_matches_naive_formula_before_and_after_ema():
    torch.manual_seed(0)
    term = ByolipTerm(**SMALL, momentum=0.9).double()
    enc = make_enc()
    value = term(enc)  # the target starts as a copy of the online projector: same value as SimSiam
    torch.testing.assert_close(value, naive_siam(term, enc), rtol=1e-12, atol=1e-12)
    opt = torch.optim.SGD([p for p in term.parameters() if p.requires_grad], lr=0.5)
    value.backward()
    opt.step()
    term.on_step_end()
    expected = naive_siam(term, enc, term.target_image_projector, term.target_text_projector)
    torch.testing.assert_close(term(enc), expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(expected, naive_siam(term, enc))  # the target now differs from the online head


def test_byolip_target_changes_only_in_on_step_end_and_moves_toward_online():
    torch.manual_seed(0)
    m = 0.9
    term = ByolipTerm(**SMALL, momentum=m).double()
    enc = make_enc()
    term(enc)
    assert not has_lazy_parameters(term)
    online = list(term.image_projector.parameters()) + list(term.text_projector.parameters())
    target = list(term.target_image_projector.parameters()) + list(term.target_text_projector.parameters())
    assert all(not t.requires_grad for t in target)
    for o, t in zip(online, target):
        torch.testing.assert_close(o, t)  # initialised as a copy
    opt = torch.optim.SGD([p for p in term.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        before = [t.detach().clone() for t in target]
        opt.zero_grad()
        term(enc).backward()
        assert all(t.grad is None for t in target)
        opt.step()
        for b, t in zip(before, target):
            assert torch.equal(b, t)  # neither the forward nor the optimizer step touched the target
        gaps = [(o - t).norm().item() for o, t in zip(online, target)]
        assert max(gaps) > 0
        term.on_step_end()
        for b, o, t in zip(before, online, target):
            torch.testing.assert_close(t, m * b + (1 - m) * o)
        new_gaps = [(o - t).norm().item() for o, t in zip(online, target)]
        for old, new in zip(gaps, new_gaps):
            assert new == pytest.approx(m * old, rel=1e-9, abs=1e-15)  # moved toward the online head
    for o_buf, t_buf in zip(term.image_projector.buffers(), term.target_image_projector.buffers()):
        assert torch.equal(o_buf, t_buf)  # BN statistics copied at the step end


def test_byolip_ema_matches_lightly_update_momentum():
    from lightly.models.utils import update_momentum

    torch.manual_seed(0)
    term = ByolipTerm(**SMALL, momentum=0.99).double()
    enc = make_enc()
    term(enc)
    with torch.no_grad():
        for p in term.image_projector.parameters():
            p.add_(torch.randn_like(p))
    peer_target = copy.deepcopy(term.target_image_projector)
    update_momentum(term.image_projector, peer_target, m=0.99)
    term.on_step_end()
    for ours, peer in zip(term.target_image_projector.parameters(), peer_target.parameters()):
        torch.testing.assert_close(ours, peer, rtol=1e-12, atol=1e-12)


def test_byolip_state_dict_round_trip_before_first_forward():
    torch.manual_seed(0)
    term = ByolipTerm(**SMALL).double()
    term(make_enc())
    fresh = ByolipTerm(**SMALL).double()
    fresh.load_state_dict(term.state_dict())  # materialises the lazy heads, target included
    assert not has_lazy_parameters(fresh)
    enc = make_enc(seed=5)
    torch.testing.assert_close(fresh(enc), term(enc))
    assert all(not p.requires_grad for p in fresh.target_image_projector.parameters())


# ================================================================ registry, validation, missing inputs


@pytest.mark.parametrize("name", ["barlip", "siamlip", "byolip"])
def test_build_and_missing_input_error(name):
    objective = build([{"name": name, "hidden_dim": 8, "out_dim": 4}])
    assert objective.requires == {"image_features", "text_features"}
    enc = make_enc(dtype=torch.float32)
    assert torch.isfinite(objective(enc).loss)
    enc.text_features = None
    with pytest.raises(ValueError, match=rf"'{name}'.*text_features"):
        objective(enc)


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"name": "barlip", "off_diagonal_weight": -1.0}, "off_diagonal_weight"),
        ({"name": "barlip", "loss_scale": 0.0}, "loss_scale"),
        ({"name": "barlip", "out_dim": 0}, "out_dim"),
        ({"name": "siamlip", "reduction": "avg"}, "reduction"),
        ({"name": "siamlip", "hidden_dim": 1.5}, "hidden_dim"),
        ({"name": "byolip", "momentum": 1.5}, "momentum"),
        ({"name": "byolip", "use_views": "yes"}, "use_views"),
    ],
)
def test_invalid_parameters(spec, match):
    with pytest.raises(ValueError, match=match):
        build([spec])


def test_view_shape_mismatch_is_reported():
    term = SiamlipTerm(**SMALL).double()
    enc = make_enc()
    enc.text_view_features = enc.text_view_features[..., :3]
    with pytest.raises(ValueError, match="text_view_features"):
        term(enc)
