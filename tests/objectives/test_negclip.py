"""negclip: CLIP with all B*K hard-negative captions as extra image->text columns.

Peer: no library implements NegCLIP itself; with no valid negative it must equal
open_clip's ClipLoss, which is checked to 1e-5 relative.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives.clip import clip_loss
from contrastkit.objectives.negclip import negclip_loss
from helpers import unit

D64 = torch.float64


def naive_negclip(x, y, n, mask, t):
    b, k, _ = n.shape
    i2t = 0.0
    for i in range(b):
        cols = [t * float(x[i] @ y[j]) for j in range(b)]
        cols += [t * float(x[i] @ n[j, kk]) for j in range(b) for kk in range(k) if mask is None or mask[j, kk]]
        i2t += -cols[i] + math.log(sum(math.exp(c) for c in cols))
    t2i = 0.0
    for i in range(b):
        cols = [t * float(y[i] @ x[j]) for j in range(b)]
        t2i += -cols[i] + math.log(sum(math.exp(c) for c in cols))
    return (i2t / b + t2i / b) / 2


def enc_of(x, y, n, mask=None, t=7.0):
    return Encoded(image=x, text=y, logit_scale=torch.as_tensor(t, dtype=x.dtype), neg_text=n, neg_text_mask=mask)


def test_value_matches_naive_loops():
    x, y, n = unit(5, 6, seed=1), unit(5, 6, seed=2), unit(5, 3, 6, seed=3)
    mask = torch.rand(5, 3, generator=torch.Generator().manual_seed(4)) > 0.3
    term = build([{"name": "negclip"}]).terms[0]
    assert float(term(enc_of(x, y, n))) == pytest.approx(naive_negclip(x, y, n, None, 7.0), rel=1e-10)
    assert float(term(enc_of(x, y, n, mask))) == pytest.approx(naive_negclip(x, y, n, mask, 7.0), rel=1e-10)


# gradcheck (with a negative mask) and finite values and gradients at batch 1, 2, 512:
# tests/objectives/test_every_term.py


def test_no_valid_negative_equals_clip_and_open_clip():
    from open_clip.loss import ClipLoss

    x, y = unit(16, 8, seed=8, dtype=torch.float32), unit(16, 8, seed=9, dtype=torch.float32)
    scale = torch.tensor(20.0)
    peer = ClipLoss()(x, y, scale)
    masked = negclip_loss(
        x, y, unit(16, 3, 8, seed=10, dtype=torch.float32), scale, torch.zeros(16, 3, dtype=torch.bool)
    )
    empty = negclip_loss(x, y, torch.zeros(16, 0, 8), scale)
    for value in (masked, empty):
        assert float(value) == pytest.approx(float(clip_loss(x, y, scale)), rel=1e-6)
        assert float(value) == pytest.approx(float(peer), rel=1e-5)


def test_hard_negatives_raise_the_loss_and_masking_removes_them():
    x, y = unit(8, 8, seed=11), unit(8, 8, seed=12)
    near = F.normalize(x.unsqueeze(1) + 0.1 * unit(8, 2, 8, seed=13), dim=-1)  # captions close to their image
    scale = torch.tensor(10.0, dtype=D64)
    base = clip_loss(x, y, scale)
    assert float(negclip_loss(x, y, near, scale)) > float(base)
    # the negatives enter image->text only: text->image stays the clip half
    one = torch.zeros(8, 2, dtype=torch.bool)
    one[0, 0] = True
    assert float(base) < float(negclip_loss(x, y, near, scale, one)) < float(negclip_loss(x, y, near, scale))


def test_missing_negatives_and_bad_shapes_raise():
    x, y = unit(4, 6, seed=14), unit(4, 6, seed=15)
    objective = build([{"name": "negclip"}])
    with pytest.raises(ValueError, match=r"'negclip'.*neg_text"):
        objective(Encoded(image=x, text=y, logit_scale=torch.tensor(1.0)))
    with pytest.raises(ValueError, match="neg_text must be B x K x D"):
        objective(enc_of(x, y, unit(3, 2, 6, seed=16)))
    with pytest.raises(ValueError, match="neg_text_mask"):
        objective(enc_of(x, y, unit(4, 2, 6, seed=16), torch.ones(4, 3, dtype=torch.bool)))
    with pytest.raises(ValueError, match="unknown parameter"):
        build([{"name": "negclip", "k": 3}])
