"""multi_positive: several captions per image as uniform soft targets (SupCon-style).

Peers: pytorch-metric-learning's SupConLoss (per direction, ``ref_emb`` = the
other modality, temperature 1/t) and, with distinct groups, open_clip's ClipLoss.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives.clip import clip_loss
from contrastkit.objectives.multi_positive import group_targets, multi_positive_loss
from helpers import unit

D64 = torch.float64


def naive(x, y, g, t):
    b = x.shape[0]

    def direction(rows, cols):
        total = 0.0
        for i in range(b):
            logits = [t * float(rows[i] @ cols[j]) for j in range(b)]
            lse = math.log(sum(math.exp(v) for v in logits))
            pos = [j for j in range(b) if g[j] == g[i]]
            total += -sum(logits[j] - lse for j in pos) / len(pos)
        return total / b

    return (direction(x, y) + direction(y, x)) / 2


GROUPS = torch.tensor([0, 0, 0, 1, 2, 2, 3])


def test_value_matches_naive_loops():
    x, y = unit(7, 5, seed=1), unit(7, 5, seed=2)
    enc = Encoded(image=x, text=y, logit_scale=torch.tensor(5.0, dtype=D64), group_ids=GROUPS)
    assert float(build([{"name": "multi_positive"}])(enc).loss) == pytest.approx(naive(x, y, GROUPS, 5.0), rel=1e-10)
    p = group_targets(GROUPS)
    assert torch.allclose(p.sum(-1), torch.ones(7)) and float(p[0, 1]) == pytest.approx(1 / 3)


# gradcheck and finite values and gradients at batch 1, 2, 512: tests/objectives/test_every_term.py


def test_parity_with_pytorch_metric_learning_supcon():
    from pytorch_metric_learning.losses import SupConLoss  # test-only peer

    x, y = unit(24, 16, seed=5), unit(24, 16, seed=6)
    g = torch.randint(0, 8, (24,), generator=torch.Generator().manual_seed(7))
    scale = torch.tensor(10.0, dtype=D64)
    peer = SupConLoss(temperature=1.0 / 10.0)
    # ref_labels must be a different object, or SupConLoss drops the diagonal as "self"
    i2t = peer(x, g, ref_emb=y, ref_labels=g.clone())
    t2i = peer(y, g, ref_emb=x, ref_labels=g.clone())
    ours = multi_positive_loss(x, y, scale, g)
    assert float(ours) == pytest.approx(float((i2t + t2i) / 2), rel=1e-5)


def test_distinct_groups_equal_clip_and_open_clip():
    from open_clip.loss import ClipLoss

    x, y = unit(10, 8, seed=8, dtype=torch.float32), unit(10, 8, seed=9, dtype=torch.float32)
    scale = torch.tensor(30.0)
    ours = multi_positive_loss(x, y, scale, torch.arange(10))
    assert float(ours) == pytest.approx(float(clip_loss(x, y, scale)), rel=1e-6)
    assert float(ours) == pytest.approx(float(ClipLoss()(x, y, scale)), rel=1e-5)


def test_caption_groups_stop_penalising_sibling_captions():
    # rows 0-2 are three captions of one image (image rows identical): clip cannot go below log 3 on them,
    # the multi-positive targets accept the sibling captions
    x = unit(6, 16, seed=10)
    x[1] = x[0]
    x[2] = x[0]
    y = x.clone()
    y[1] = F.normalize(x[0] + 0.01 * unit(16, seed=11), dim=-1)
    y[2] = F.normalize(x[0] + 0.01 * unit(16, seed=12), dim=-1)
    scale = torch.tensor(50.0, dtype=D64)
    groups = torch.tensor([0, 0, 0, 1, 2, 3])
    soft = multi_positive_loss(x, y, scale, groups)
    hard = clip_loss(x, y, scale)
    assert float(hard) > float(soft)
    # the soft loss is at its floor: the row entropy log 3 on the three sibling rows, 0 elsewhere
    assert float(soft) == pytest.approx(3 * math.log(3) / 6, rel=1e-2)


def test_missing_groups_raise():
    x, y = unit(4, 4, seed=13), unit(4, 4, seed=14)
    with pytest.raises(ValueError, match=r"'multi_positive'.*group_ids"):
        build([{"name": "multi_positive"}])(Encoded(image=x, text=y, logit_scale=torch.tensor(1.0)))
    with pytest.raises(ValueError, match="group_ids"):
        build([{"name": "multi_positive"}])(
            Encoded(image=x, text=y, logit_scale=torch.tensor(1.0), group_ids=torch.arange(3))
        )
