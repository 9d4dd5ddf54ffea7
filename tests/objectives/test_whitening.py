"""group_whitening: WhitenedCSE shuffled group whitening head (docs/methods.md A12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives._heads import has_lazy_parameters
from contrastkit.objectives.whitening import GroupWhiteningTerm, group_whiten
from helpers import frozen_group_whiten

pytestmark = pytest.mark.usefixtures("one_thread")


def make_enc(b: int = 10, v: int = 2, f: int = 6, dtype=torch.float64, seed: int = 0) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    return Encoded(
        image=F.normalize(torch.randn(b, 3, generator=g, dtype=dtype), dim=-1),
        text=F.normalize(torch.randn(b, 3, generator=g, dtype=dtype), dim=-1),
        logit_scale=torch.tensor(10.0, dtype=dtype),
        image_features=torch.randn(b, f, generator=g, dtype=dtype),
        image_view_features=torch.randn(v, b, f, generator=g, dtype=dtype),
        text_features=torch.randn(b, f + 2, generator=g, dtype=dtype),
        text_view_features=torch.randn(v, b, f + 2, generator=g, dtype=dtype),
    )


def naive_whiten(x: np.ndarray, groups: int, eps: float, perm: np.ndarray | None = None) -> np.ndarray:
    """Numpy, group by group: centre, Sigma = X^T X / N, ZCA W = U (lam + eps)^-1/2 U^T."""
    n, f = x.shape
    d = f // groups
    xp = x[:, perm] if perm is not None else x
    out = np.zeros_like(xp)
    for g in range(groups):
        block = xp[:, g * d : (g + 1) * d]
        block = block - block.mean(axis=0, keepdims=True)
        lam, u = np.linalg.eigh(block.T @ block / n)
        w = u @ np.diag(1.0 / np.sqrt(np.maximum(lam, 0) + eps)) @ u.T
        out[:, g * d : (g + 1) * d] = block @ w
    if perm is not None:
        unperm = np.empty_like(out)
        unperm[:, perm] = out
        out = unperm
    return out


def naive_loss(
    term: GroupWhiteningTerm, base: torch.Tensor, views: torch.Tensor, perms: list[np.ndarray | None]
) -> float:
    w = term.head[0].weight.detach().numpy()
    c = term.head[0].bias.detach().numpy()
    zs = []
    for x, perm in zip([base, *views], perms):
        y = naive_whiten(x.detach().numpy(), term.groups, term.eps, perm)
        z = np.tanh(y @ w.T + c)
        zs.append(z / np.linalg.norm(z, axis=1, keepdims=True))
    total = 0.0
    for zv in zs[1:]:
        logits = zs[0] @ zv.T / term.temperature
        m = logits.max(axis=1, keepdims=True)
        log_p = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
        total += -np.mean(np.diag(log_p))
    return total


# (a) value --------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups,v", [(2, 2), (3, 1), (1, 3)])
def test_value_matches_naive_formula_without_shuffle(groups, v):
    torch.manual_seed(0)
    term = GroupWhiteningTerm(groups=groups, shuffle=False, eps=1e-4).double()
    enc = make_enc(v=v)
    value = term(enc)
    expected = naive_loss(term, enc.image_features, enc.image_view_features, [None] * (v + 1))
    assert value.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_value_matches_naive_formula_with_shuffle():
    term = GroupWhiteningTerm(groups=3, shuffle=True).double()
    enc = make_enc()
    term(enc)  # materialise the head first (its initialisation draws from the same RNG)
    torch.manual_seed(7)
    value = term(enc)
    torch.manual_seed(7)  # the term draws one permutation per version: base, view 1, view 2
    perms = [torch.randperm(6).numpy() for _ in range(3)]
    expected = naive_loss(term, enc.image_features, enc.image_view_features, perms)
    assert value.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # with 3 groups of 2 dims the permutation matters
    torch.manual_seed(8)
    assert term(enc).item() != pytest.approx(expected, rel=1e-6)


def test_text_modality_reads_text_fields():
    torch.manual_seed(0)
    term = GroupWhiteningTerm(modality="text", groups=4, shuffle=False).double()
    enc = make_enc()
    assert term.requires == ("text_features", "text_view_features")
    value = term(enc).item()
    expected = naive_loss(term, enc.text_features, enc.text_view_features, [None] * 3)
    assert value == pytest.approx(expected, rel=1e-10)


# (b) gradcheck --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("shuffle", [False, True])
def test_gradcheck_inputs(detach, shuffle):
    torch.manual_seed(0)
    term = GroupWhiteningTerm(groups=2, shuffle=shuffle, detach_whitening=detach, temperature=0.5).double()
    base = make_enc(b=8, f=4)
    term(base)

    def f(x, xv):
        torch.manual_seed(3)  # the same permutations on every evaluation
        return term(
            Encoded(
                image=base.image, text=base.text, logit_scale=base.logit_scale, image_features=x, image_view_features=xv
            )
        )

    inputs = (base.image_features.clone().requires_grad_(True), base.image_view_features.clone().requires_grad_(True))
    if not detach:  # the gradient flows through eigh too: plain gradcheck
        assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5)
        return
    # detach_whitening: W is a constant for autograd but not for finite differences. The autograd gradient
    # must equal that of the same loss with W frozen at its current value, which gradcheck can verify.
    grad_term = torch.autograd.grad(f(*inputs), inputs)
    refs = [base.image_features, *base.image_view_features]
    calls: list[int] = []

    def whiten_with_frozen_w(x):
        ref = refs[len(calls) % len(refs)]
        calls.append(1)
        perm = torch.randperm(x.shape[1]) if term.shuffle else None
        return frozen_group_whiten(x, ref, term.groups, term.eps, perm)

    value = f(*inputs)
    term.whiten = whiten_with_frozen_w  # type: ignore[method-assign]
    torch.testing.assert_close(f(*inputs), value)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5)
    for a, b in zip(grad_term, torch.autograd.grad(f(*inputs), inputs)):
        torch.testing.assert_close(a, b)


# (c) finite values and gradients (the head's included) at batch 2 and 512:
# tests/objectives/test_every_term.py; batch 1 is undefined ---------------------------------------------


def test_batch_one_raises_clear_error():
    with pytest.raises(ValueError, match=r"'group_whitening'.*at least 2 rows"):
        GroupWhiteningTerm(groups=2).double()(make_enc(b=1))


# (d) peer parity ------------------------------------------------------------------------------------
# No installable peer implements WhitenedCSE's shuffled group whitening; the value is checked against an
# independent numpy implementation of the release's transformation (above).


# (e) behaviour --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [False, True])
def test_whitened_groups_have_identity_covariance(shuffle):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=g, dtype=torch.float64) @ torch.randn(12, 12, generator=g, dtype=torch.float64)
    x = x + 5.0
    perm = torch.randperm(12, generator=g) if shuffle else None
    y = group_whiten(x, groups=3, eps=1e-12, perm=perm)
    assert y.shape == x.shape
    yp = y[:, perm] if shuffle else y
    torch.testing.assert_close(yp.mean(dim=0), torch.zeros(12, dtype=torch.float64), atol=1e-10, rtol=0)
    for k in range(3):
        block = yp[:, 4 * k : 4 * (k + 1)]
        torch.testing.assert_close(block.t() @ block / 200, torch.eye(4, dtype=torch.float64), atol=1e-8, rtol=0)
    # groups are whitened separately: across groups the covariance is not the identity
    assert (yp[:, :4].t() @ yp[:, 4:8] / 200).abs().max() > 1e-2


def test_each_view_is_whitened_on_its_own():
    """A view's whitening depends only on that view's rows (the release mixed sample-major thirds)."""
    torch.manual_seed(0)
    term = GroupWhiteningTerm(groups=2, shuffle=False, eps=1e-12).double()  # eps ~ 0: scale-invariant
    enc = make_enc()
    term(enc)
    scaled = make_enc()
    scaled.image_view_features[1] = scaled.image_view_features[1] * 10 + 4  # affine per view: same whitening
    torch.testing.assert_close(term(enc), term(scaled), rtol=1e-8, atol=1e-8)


def test_detach_whitening_changes_gradients_not_values():
    torch.manual_seed(0)
    enc = make_enc()
    a = GroupWhiteningTerm(groups=2, shuffle=False, detach_whitening=True).double()
    a(enc)
    b = GroupWhiteningTerm(groups=2, shuffle=False, detach_whitening=False).double()
    b.load_state_dict(a.state_dict())
    grads = []
    for term in (a, b):
        x = enc.image_features.clone().requires_grad_(True)
        value = term(
            Encoded(
                image=enc.image,
                text=enc.text,
                logit_scale=enc.logit_scale,
                image_features=x,
                image_view_features=enc.image_view_features,
            )
        )
        value.backward()
        grads.append((value.detach(), x.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    assert not torch.allclose(grads[0][1], grads[1][1])


def test_training_lowers_loss():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    base = torch.randn(32, 8, generator=g)
    enc = Encoded(
        image=torch.zeros(32, 2),
        text=torch.zeros(32, 2),
        logit_scale=torch.tensor(1.0),
        image_features=base,
        image_view_features=torch.stack([base + 0.3 * torch.randn(32, 8, generator=g) for _ in range(2)]),
    )
    term = GroupWhiteningTerm(groups=2)
    first = term(enc).item()
    opt = torch.optim.Adam(term.parameters(), lr=2e-2)
    for _ in range(40):
        opt.zero_grad()
        term(enc).backward()
        opt.step()
    assert term(enc).item() < 0.7 * first


# registry, validation, missing inputs --------------------------------------------------------------


def test_build_lazy_and_missing_input_error():
    objective = build([{"name": "group_whitening", "groups": 3}])
    assert objective.requires == {"image_features", "image_view_features"}
    assert has_lazy_parameters(objective)
    enc = make_enc(dtype=torch.float32)
    assert torch.isfinite(objective(enc).loss)
    assert not has_lazy_parameters(objective)
    assert objective.terms[0].head[0].weight.shape == (6, 6)
    enc.image_view_features = None
    with pytest.raises(ValueError, match=r"'group_whitening'.*image_view_features"):
        objective(enc)
    text = build([{"name": "group_whitening", "modality": "text", "groups": 4}])
    enc = make_enc(dtype=torch.float32)
    enc.text_features = None
    with pytest.raises(ValueError, match=r"'group_whitening'.*text_features"):
        text(enc)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"modality": "audio"}, "modality"),
        ({"groups": 0}, "groups"),
        ({"eps": 0.0}, "eps"),
        ({"temperature": -1.0}, "temperature"),
        ({"detach_whitening": "yes"}, "detach_whitening"),
    ],
)
def test_invalid_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build([{"name": "group_whitening", **kwargs}])


def test_indivisible_width_is_reported():
    with pytest.raises(ValueError, match="not divisible by groups=4"):
        GroupWhiteningTerm(groups=4).double()(make_enc(f=6))
