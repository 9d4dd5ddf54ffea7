"""degla_igc / degla_tgc / ema_distill (DeGLA, Hu et al. 2025).

Peer: DeGLA exists only as the authors' release; no library implements it. The
release's masked-matrix construction (interleaved IGC mask, tiled TGC mask,
``F.mse_loss(reduction="sum")`` distillation) is re-implemented below from its
description and compared.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import FIELDS, Encoded
from contrastkit.objectives import build
from contrastkit.objectives.degla import degla_igc_loss, degla_tgc_loss, ema_distill_loss, tgc_negative_index
from helpers import unit

D64 = torch.float64


def ce_first(cols):
    return -cols[0] + math.log(sum(math.exp(c) for c in cols))


def naive_igc(x, y, n, mask, t):
    b, k, _ = n.shape
    return (
        sum(
            ce_first(
                [t * float(x[i] @ y[i])]
                + [t * float(x[i] @ n[i, kk]) for kk in range(k) if mask is None or mask[i, kk]]
            )
            for i in range(b)
        )
        / b
    )


def naive_tgc(y, yt, n, mask, s, mode):
    b, k, d = n.shape
    flat, fmask = n.reshape(b * k, d), None if mask is None else mask.reshape(b * k)
    total = 0.0
    for i in range(b):
        idx = [i * k + kk for kk in range(k)] if mode == "own" else [kk * b + i for kk in range(k)]
        cols = [s * float(y[i] @ yt[i])] + [s * float(y[i] @ flat[j]) for j in idx if fmask is None or fmask[j]]
        total += ce_first(cols)
    return total / b


def release_igc(x, y, n, t):
    """The release's get_image_local_loss: texts = [positives, negatives sample-major], interleaved mask."""
    b, k, d = n.shape
    texts = torch.cat([y, n.reshape(b * k, d)])
    mat = t * x @ texts.t()
    mask0 = torch.full((b, b), float("-inf"), dtype=x.dtype)
    mask0.fill_diagonal_(0)
    mask = torch.cat([mask0, mask0.repeat_interleave(k, dim=1)], dim=1)
    return F.cross_entropy(mat + mask, torch.arange(b))


def release_tgc(y, yt, n, scale=10.0):
    """The release's get_text_local_loss: tiled (repeat) mask over sample-major negatives."""
    b, k, d = n.shape
    mat = scale * y @ torch.cat([yt, n.reshape(b * k, d)]).t()
    mask0 = torch.full((b, b), float("-inf"), dtype=y.dtype)
    mask0.fill_diagonal_(0)
    mask = torch.cat([mask0, mask0.repeat(1, k)], dim=1)
    return F.cross_entropy(mat + mask, torch.arange(b))


def make(b=5, k=3, d=6, seed=0, dtype=D64, t=9.0, mask=None):
    return Encoded(
        image=unit(b, d, seed=seed, dtype=dtype),
        text=unit(b, d, seed=seed + 1, dtype=dtype),
        logit_scale=torch.tensor(t, dtype=dtype),
        neg_text=unit(b, k, d, seed=seed + 2, dtype=dtype),
        neg_text_mask=mask,
        teacher_image=unit(b, d, seed=seed + 3, dtype=dtype),
        teacher_text=unit(b, d, seed=seed + 4, dtype=dtype),
        teacher_neg_text=unit(b, k, d, seed=seed + 5, dtype=dtype),
    )


MASK = torch.tensor(
    [[True, False, True], [True, True, True], [False, False, False], [True, True, False], [False, True, True]]
)


@pytest.mark.parametrize("mask", [None, MASK])
def test_values_match_naive_loops(mask):
    enc = make(mask=mask)
    igc = build([{"name": "degla_igc"}])(enc).loss
    assert float(igc) == pytest.approx(naive_igc(enc.image, enc.text, enc.neg_text, mask, 9.0), rel=1e-10)
    for mode in ("own", "reference"):
        tgc = build([{"name": "degla_tgc", "tgc_mask_mode": mode}])(enc).loss
        assert float(tgc) == pytest.approx(
            naive_tgc(enc.text, enc.teacher_text, enc.neg_text, mask, 10.0, mode), rel=1e-10
        )
    # distillation: explicit sum over images, positives and valid negatives
    err = sum(float(((enc.image[i] - enc.teacher_image[i]) ** 2).sum()) for i in range(5))
    err += sum(float(((enc.text[i] - enc.teacher_text[i]) ** 2).sum()) for i in range(5))
    err += sum(
        float(((enc.neg_text[i, k] - enc.teacher_neg_text[i, k]) ** 2).sum())
        for i in range(5)
        for k in range(3)
        if mask is None or mask[i, k]
    )
    literal = build([{"name": "ema_distill", "batch_rows": None}])(enc).loss
    assert float(literal) == pytest.approx(err, rel=1e-10)
    per32 = build([{"name": "ema_distill"}])(enc).loss
    assert float(per32) == pytest.approx(err * 32 / 5, rel=1e-10)


def test_release_formulas():
    enc = make(b=6, k=4, seed=10)
    assert float(degla_igc_loss(enc.image, enc.text, enc.neg_text, enc.logit_scale)) == pytest.approx(
        float(release_igc(enc.image, enc.text, enc.neg_text, 9.0)), rel=1e-10
    )
    ref = degla_tgc_loss(enc.text, enc.teacher_text, enc.neg_text, mode="reference")
    assert float(ref) == pytest.approx(float(release_tgc(enc.text, enc.teacher_text, enc.neg_text)), rel=1e-10)
    texts = torch.cat([enc.text, enc.neg_text.reshape(24, -1)])
    t_texts = torch.cat([enc.teacher_text, enc.teacher_neg_text.reshape(24, -1)])
    release_dist = F.mse_loss(enc.image, enc.teacher_image, reduction="sum") + F.mse_loss(
        texts, t_texts, reduction="sum"
    )
    ours = ema_distill_loss(
        enc.image, enc.text, enc.teacher_image, enc.teacher_text, enc.neg_text, enc.teacher_neg_text, batch_rows=None
    )
    assert float(ours) == pytest.approx(float(release_dist), rel=1e-12)


# the default configurations of all three terms: tests/objectives/test_every_term.py
@pytest.mark.parametrize("name,kwargs", [("degla_tgc", {"tgc_mask_mode": "reference"})])
def test_gradcheck(name, kwargs):
    term = build([{"name": name, **kwargs}]).terms[0]
    base = make(b=4, k=2, d=4, seed=20, mask=torch.tensor([[True, False], [True, True], [False, False], [True, True]]))
    args = (
        torch.randn(4, 4, dtype=D64, requires_grad=True),
        torch.randn(4, 4, dtype=D64, requires_grad=True),
        torch.randn(4, 2, 4, dtype=D64, requires_grad=True),
        torch.tensor(4.0, dtype=D64, requires_grad=True),
    )

    def f(a, b, c, s):
        enc = Encoded(
            image=F.normalize(a, dim=-1),
            text=F.normalize(b, dim=-1),
            logit_scale=s,
            neg_text=F.normalize(c, dim=-1),
            neg_text_mask=base.neg_text_mask,
            teacher_image=base.teacher_image,
            teacher_text=base.teacher_text,
            teacher_neg_text=base.teacher_neg_text,
        )
        return term(enc)

    assert torch.autograd.gradcheck(f, args)


def test_tgc_modes_differ_only_with_sample_specific_negatives():
    enc = make(b=6, k=3, seed=40)
    own = degla_tgc_loss(enc.text, enc.teacher_text, enc.neg_text, mode="own")
    ref = degla_tgc_loss(enc.text, enc.teacher_text, enc.neg_text, mode="reference")
    assert abs(float(own) - float(ref)) > 1e-3
    # the release's tiled layout hands row i the flat negatives k*B + i: mostly other samples' negatives
    index = tgc_negative_index(6, 3, "reference")
    assert index[0].tolist() == [0, 6, 12] and (index[0] // 3).tolist() == [0, 2, 4]
    assert (tgc_negative_index(6, 3, "own") // 3 == torch.arange(6).unsqueeze(1)).all()
    shared = enc.neg_text[:1, :1].expand(6, 3, 6)  # one negative shared by everyone: the layouts agree
    own_s = degla_tgc_loss(enc.text, enc.teacher_text, shared, mode="own")
    ref_s = degla_tgc_loss(enc.text, enc.teacher_text, shared, mode="reference")
    assert float(own_s) == pytest.approx(float(ref_s), rel=1e-12)


def test_own_negatives_drive_igc_and_distill_is_world_size_invariant():
    enc = make(b=4, k=2, seed=50)
    # an image whose own negative equals its caption cannot beat chance between the two
    same = enc.text.unsqueeze(1).expand(4, 2, 6)
    assert float(degla_igc_loss(enc.image, enc.text, same, torch.tensor(50.0, dtype=D64))) == pytest.approx(
        math.log(3), rel=1e-10
    )
    # per-row means: duplicating the global batch (e.g. two ranks' worth of the same rows) keeps the value
    one = ema_distill_loss(enc.image, enc.text, enc.teacher_image, enc.teacher_text, enc.neg_text, enc.teacher_neg_text)
    two = ema_distill_loss(
        *(
            torch.cat([v, v])
            for v in (enc.image, enc.text, enc.teacher_image, enc.teacher_text, enc.neg_text, enc.teacher_neg_text)
        )
    )
    assert float(two) == pytest.approx(float(one), rel=1e-12)
    # and a perfect teacher gives zero
    assert float(ema_distill_loss(enc.image, enc.text, enc.image, enc.text, enc.neg_text, enc.neg_text)) == 0.0


def test_flags_missing_inputs_and_validation():
    objective = build([{"name": "degla_tgc"}, {"name": "ema_distill"}])
    assert "teacher" in {FIELDS[name].producer for name in objective.requires}  # the engine keeps an EMA teacher
    assert {"neg_text", "teacher_text", "teacher_image"} <= objective.requires
    enc = make()
    with pytest.raises(ValueError, match=r"'degla_tgc'.*teacher_text"):
        build([{"name": "degla_tgc"}])(
            Encoded(image=enc.image, text=enc.text, logit_scale=enc.logit_scale, neg_text=enc.neg_text)
        )
    with pytest.raises(ValueError, match=r"'degla_igc'.*neg_text"):
        build([{"name": "degla_igc"}])(Encoded(image=enc.image, text=enc.text, logit_scale=enc.logit_scale))
    with pytest.raises(ValueError, match=r"'ema_distill'.*teacher_neg_text"):
        build([{"name": "ema_distill"}])(
            Encoded(
                image=enc.image,
                text=enc.text,
                logit_scale=enc.logit_scale,
                neg_text=enc.neg_text,
                teacher_image=enc.teacher_image,
                teacher_text=enc.teacher_text,
            )
        )
    # without negatives in the batch the distillation covers images and positives only
    plain = Encoded(
        image=enc.image,
        text=enc.text,
        logit_scale=enc.logit_scale,
        teacher_image=enc.teacher_image,
        teacher_text=enc.teacher_text,
    )
    assert torch.isfinite(build([{"name": "ema_distill"}])(plain).loss)
    with pytest.raises(ValueError, match="tgc_mask_mode"):
        build([{"name": "degla_tgc", "tgc_mask_mode": "tiled"}])
    with pytest.raises(ValueError, match="batch_rows"):
        build([{"name": "ema_distill", "batch_rows": 0}])
