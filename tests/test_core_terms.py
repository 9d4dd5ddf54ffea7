"""clip and siglip against direct float64 formulas and against open_clip's losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit import Encoded
from contrastkit.objectives import NonFiniteLossError, build
from helpers import pair_inputs


def naive_clip(x, y, t, eps=0.0, reduction="mean"):
    b = x.shape[0]
    s = [[t * float(x[i] @ y[j]) for j in range(b)] for i in range(b)]

    def ce(rows):
        total = 0.0
        for i, row in enumerate(rows):
            lse = math.log(sum(math.exp(v) for v in row))
            for j, v in enumerate(row):
                p = (1 - eps) * (i == j) + eps / len(row)
                total -= p * (v - lse)
        return total / len(rows)

    cols = [[s[i][j] for i in range(b)] for j in range(b)]
    total = ce(s) + ce(cols)
    return total if reduction == "sum" else total / 2


def naive_siglip(x, y, t, bias):
    b = x.shape[0]
    total = 0.0
    for i in range(b):
        for j in range(b):
            z = 1.0 if i == j else -1.0
            total -= math.log(1 / (1 + math.exp(-z * (t * float(x[i] @ y[j]) + bias))))
    return total / b


@pytest.mark.parametrize("eps, reduction", [(0.0, "mean"), (0.1, "mean"), (0.1, "sum")])
def test_clip_equals_direct_formula(eps, reduction):
    x, y = pair_inputs(6, 8, cols=6)[:2]
    obj = build([{"name": "clip", "label_smoothing": eps, "reduction": reduction}])
    loss, terms = obj(Encoded(image=x, text=y, logit_scale=torch.tensor(7.0, dtype=torch.float64)))
    assert float(loss) == pytest.approx(naive_clip(x, y, 7.0, eps, reduction), rel=1e-10)
    assert set(terms) == {"clip"}


def test_align_preset_is_smoothed_summed_and_starts_at_t_one():
    obj = build([{"name": "clip", "preset": "align"}])
    assert obj.model_defaults == {"logit_scale": 1.0}
    x, y = pair_inputs(5, 8, cols=5)[:2]
    loss, _ = obj(Encoded(image=x, text=y, logit_scale=torch.tensor(1.0, dtype=torch.float64)))
    assert float(loss) == pytest.approx(naive_clip(x, y, 1.0, 0.1, "sum"), rel=1e-10)


def test_siglip_equals_direct_formula_and_asks_for_bias():
    x, y = pair_inputs(5, 8, cols=5)[:2]
    obj = build([{"name": "siglip"}])
    assert obj.model_defaults == {"logit_scale": 10.0, "logit_bias": -10.0}
    loss, _ = obj(
        Encoded(
            image=x,
            text=y,
            logit_scale=torch.tensor(10.0, dtype=torch.float64),
            logit_bias=torch.tensor(-3.0, dtype=torch.float64),
        )
    )
    assert float(loss) == pytest.approx(naive_siglip(x, y, 10.0, -3.0), rel=1e-10)


def test_siglip_without_bias_names_the_missing_input():
    x, y = pair_inputs(3, 8, cols=3)[:2]
    obj = build([{"name": "siglip"}])
    with pytest.raises(ValueError, match="'siglip' needs logit_bias"):
        obj(Encoded(image=x, text=y, logit_scale=torch.tensor(10.0)))


def test_clip_matches_open_clip():
    from open_clip import loss as open_clip_loss

    x, y = pair_inputs(32, 16, cols=32, dtype=torch.float32)[:2]
    t = torch.tensor(14.3)
    ours, _ = build([{"name": "clip"}])(Encoded(image=x, text=y, logit_scale=t))
    theirs = open_clip_loss.ClipLoss()(x, y, t)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_clip_matches_pytorch_metric_learning_ntxent_both_ways():
    """clip = mean of NT-Xent image->text and text->image (PML's ref_emb form: negatives from the other modality)."""
    from pytorch_metric_learning import losses

    raw = torch.randn(24, 16, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    y = F.normalize(torch.randn(24, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    t = 1 / 0.07
    labels, ref_labels = torch.arange(24), torch.arange(24)  # PML treats ref_labels *is* labels as no reference
    ntxent = losses.NTXentLoss(temperature=1 / t)  # cosine similarity: normalises its inputs itself
    theirs = (
        ntxent(raw, labels, ref_emb=y, ref_labels=ref_labels) + ntxent(y, labels, ref_emb=raw, ref_labels=ref_labels)
    ) / 2
    ours, _ = build([{"name": "clip"}])(Encoded(image=F.normalize(raw, dim=-1), text=y, logit_scale=torch.tensor(t)))
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-5)
    (g_ours,) = torch.autograd.grad(ours, raw)
    (g_theirs,) = torch.autograd.grad(theirs, raw)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-6)


def test_siglip_matches_open_clip():
    from open_clip import loss as open_clip_loss

    x, y = pair_inputs(32, 16, cols=32, dtype=torch.float32)[:2]
    t, b = torch.tensor(10.0), torch.tensor(-10.0)
    ours, _ = build([{"name": "siglip"}])(Encoded(image=x, text=y, logit_scale=t, logit_bias=b))
    theirs = open_clip_loss.SigLipLoss()(x, y, t, b)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_weighted_sum_and_repeated_labels():
    x, y = pair_inputs(4, 8, cols=4)[:2]
    t = torch.tensor(5.0, dtype=torch.float64)
    obj = build([{"name": "clip", "weight": 0.5}, {"name": "clip", "weight": 2.0, "label_smoothing": 0.2}])
    loss, terms = obj(Encoded(image=x, text=y, logit_scale=t))
    assert list(terms) == ["clip", "clip#2"]
    assert float(loss) == pytest.approx(0.5 * float(terms["clip"]) + 2.0 * float(terms["clip#2"]))


def test_non_finite_loss_names_the_term():
    x, y = pair_inputs(4, 8, cols=4)[:2]
    x = x.clone()
    x[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="'clip'"):
        build([{"name": "clip"}])(Encoded(image=x, text=y, logit_scale=torch.tensor(5.0)))


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ([], "lists no terms"),
        ([{"weight": 1.0}], "needs a 'name'"),
        ([{"name": "clip", "weight": "heavy"}], "weight must be a number"),
        (["clip"], "must be a mapping"),
        ([{"name": "clip", "reduction": "max"}], "reduction"),
        ([{"name": "clip", "preset": "basic"}], "preset"),
    ],
)
def test_build_errors(spec, fragment):
    with pytest.raises(ValueError, match=fragment):
        build(spec)


def test_gradients_reach_temperature():
    x, y = pair_inputs(6, 8, cols=6)[:2]
    x.requires_grad_(True)
    log_t = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    loss, _ = build([{"name": "clip"}])(Encoded(image=x, text=y, logit_scale=log_t.exp()))
    loss.backward()
    assert log_t.grad is not None and log_t.grad != 0
    assert x.grad is not None and torch.isfinite(x.grad).all()
