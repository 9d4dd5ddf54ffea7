"""score_contrastive: CE over an arbitrary score matrix in extras['scores'] (docs/methods.md E)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives.clip import clip_loss
from contrastkit.objectives.score_contrastive import ScoreContrastiveTerm

pytestmark = pytest.mark.usefixtures("one_thread")


def make_enc(b: int = 6, cols: int | None = None, d: int = 4, dtype=torch.float64, seed: int = 0) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    cols = b if cols is None else cols
    return Encoded(
        image=F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=-1),
        text=F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=-1),
        logit_scale=torch.tensor(10.0, dtype=dtype),
        extras={"scores": torch.randn(b, cols, generator=g, dtype=dtype) * 3},
    )


def naive(scores: torch.Tensor, scale: float, eps: float, symmetric: bool) -> torch.Tensor:
    def ce(logits):
        rows, cols = logits.shape
        total = 0.0
        for i in range(rows):
            m = logits[i].max()
            lse = m + torch.log(torch.exp(logits[i] - m).sum())
            for j in range(cols):
                p = eps / cols + (1 - eps if i == j else 0.0)
                total = total - p * (logits[i, j] - lse)
        return total / rows

    logits = scale * scores
    return (ce(logits) + ce(logits.t())) / 2 if symmetric else ce(logits)


# (a) value --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scale,eps,symmetric,cols", [(1.0, 0.0, False, None), (4.0, 0.1, False, 9), (0.5, 0.2, True, None)]
)
def test_value_matches_naive_formula(scale, eps, symmetric, cols):
    enc = make_enc(cols=cols)
    term = ScoreContrastiveTerm(scale=scale, label_smoothing=eps, symmetric=symmetric)
    torch.testing.assert_close(term(enc), naive(enc.extras["scores"], scale, eps, symmetric), rtol=1e-12, atol=1e-12)


# (b) gradcheck --------------------------------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [False, True])
def test_gradcheck_on_scores(symmetric):
    base = make_enc(b=5)
    term = ScoreContrastiveTerm(scale=2.0, label_smoothing=0.1, symmetric=symmetric)

    def f(scores):
        return term(Encoded(image=base.image, text=base.text, logit_scale=base.logit_scale, extras={"scores": scores}))

    assert torch.autograd.gradcheck(f, (base.extras["scores"].clone().requires_grad_(True),))


# (c) finite values and gradients on the scores at 1, 2, 512: tests/objectives/test_every_term.py;
# defined at batch 1: one column, loss 0 ----------------------------------------------------------------


def test_batch_one_gives_zero():
    enc = make_enc(b=1, dtype=torch.float32)
    assert ScoreContrastiveTerm()(enc).item() == 0.0


# (d) peer parity + the docs/methods.md E unit test: scores = t S recover clip ------------------------------------


def test_scores_t_s_recover_the_image_to_text_half_of_clip():
    enc = make_enc(b=8)
    t = enc.logit_scale
    enc.extras["scores"] = enc.image @ enc.text.t()  # S; the term's scale supplies t
    one_way = ScoreContrastiveTerm(scale=float(t))(enc)
    i2t = F.cross_entropy(t * enc.image @ enc.text.t(), torch.arange(8))
    t2i = F.cross_entropy(t * enc.text @ enc.image.t(), torch.arange(8))
    torch.testing.assert_close(one_way, i2t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(2 * clip_loss(enc.image, enc.text, t) - t2i, one_way, rtol=1e-12, atol=1e-12)
    # scores already scaled (scale 1), symmetric: the whole clip term
    enc.extras["scores"] = t * enc.image @ enc.text.t()
    both = ScoreContrastiveTerm(symmetric=True)(enc)
    torch.testing.assert_close(both, clip_loss(enc.image, enc.text, t), rtol=1e-12, atol=1e-12)


def test_symmetric_matches_open_clip_cliploss():
    from open_clip.loss import ClipLoss

    enc = make_enc(b=8)
    enc.extras["scores"] = enc.image @ enc.text.t()
    ours = ScoreContrastiveTerm(scale=10.0, symmetric=True)(enc)
    torch.testing.assert_close(ours, ClipLoss()(enc.image, enc.text, enc.logit_scale), rtol=1e-12, atol=1e-12)


# (e) behaviour --------------------------------------------------------------------------------------


def test_only_the_scores_carry_gradient_and_embeddings_are_not_read():
    enc = make_enc(b=4)
    scores = enc.extras["scores"].requires_grad_(True)
    enc.image = torch.full_like(enc.image, float("nan"))  # not read
    loss = ScoreContrastiveTerm(scale=4.0)(enc)
    loss.backward()
    assert torch.isfinite(loss)
    # row i's gradient: scale * (softmax_i - onehot_i) / B
    expected = 4.0 * (torch.softmax(4.0 * scores.detach(), dim=1) - torch.eye(4, dtype=torch.float64)) / 4
    torch.testing.assert_close(scores.grad, expected)
    assert list(ScoreContrastiveTerm().parameters()) == []


def test_softrepa_style_scores_prefer_low_error_on_the_diagonal():
    """l_ij = 4 exp(-e_ij / 0.07): a smaller denoising error on the own prompt gives a lower loss."""
    g = torch.Generator().manual_seed(0)
    errors = 0.2 + 0.05 * torch.rand(6, 6, generator=g, dtype=torch.float64)
    good, bad = errors.clone(), errors.clone()
    good.diagonal().sub_(0.05)
    bad.diagonal().add_(0.05)
    term = ScoreContrastiveTerm()
    values = [
        term(
            Encoded(
                image=torch.zeros(6, 2),
                text=torch.zeros(6, 2),
                logit_scale=torch.tensor(1.0),
                extras={"scores": 4 * torch.exp(-e / 0.07)},
            )
        )
        for e in (good, errors, bad)
    ]
    assert values[0] < values[1] < values[2]


# registry, validation, missing inputs --------------------------------------------------------------


def test_build_and_missing_input_error():
    objective = build([{"name": "score_contrastive", "scale": 2.0}])
    assert objective.requires == {"scores"}
    enc = make_enc(dtype=torch.float32)
    assert torch.isfinite(objective(enc).loss)
    enc.extras = {}
    with pytest.raises(ValueError, match=r"'score_contrastive'.*scores"):
        objective(enc)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"scale": 0.0}, "scale"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"symmetric": 1}, "symmetric"),
    ],
)
def test_invalid_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build([{"name": "score_contrastive", **kwargs}])


def test_bad_scores_are_reported():
    term = ScoreContrastiveTerm()
    enc = make_enc()
    enc.extras["scores"] = enc.extras["scores"][:, :3]
    with pytest.raises(ValueError, match="at least as many columns"):
        term(enc)
    enc = make_enc(cols=8)
    with pytest.raises(ValueError, match="square"):
        ScoreContrastiveTerm(symmetric=True)(enc)
    enc = make_enc()
    enc.extras["scores"] = enc.extras["scores"][0]
    with pytest.raises(ValueError, match="R x C"):
        term(enc)
    enc.extras["scores"] = torch.ones(3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="floating point"):
        term(enc)
