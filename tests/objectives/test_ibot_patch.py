"""ibot_patch: the distillation loss against float64 loops, the centre and the head's EMA after the step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives.ibot_patch import distillation_loss


def _enc(student, mask, teacher):
    return Encoded(
        image=torch.zeros(student.shape[0], 2),
        text=torch.zeros(student.shape[0], 2),
        logit_scale=torch.tensor(1.0),
        masked_image_tokens=student,
        cell_mask=mask,
        teacher_image_tokens=teacher,
    )


def test_distillation_loss_equals_a_loop_over_images_and_cells():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    probs = F.softmax(torch.randn(3, 4, 5, generator=g, dtype=torch.float64), dim=-1)
    weights = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=torch.float64)
    per_image = []
    for b in range(3):
        total = sum(
            -float(weights[b, i])
            * sum(float(probs[b, i, k]) * float(F.log_softmax(logits[b, i], 0)[k]) for k in range(5))
            for i in range(4)
        )
        per_image.append(total / float(weights[b].sum()))
    assert float(distillation_loss(logits, probs, weights)) == pytest.approx(sum(per_image) / 3, rel=1e-12)


@pytest.mark.parametrize("masked_only", [True, False])
def test_the_term_is_ibot_on_masked_cells_or_ibot_plus_plus_on_all(masked_only):
    torch.manual_seed(0)
    term = build(
        [{"name": "ibot_patch", "hidden_dim": 8, "bottleneck_dim": 4, "prototypes": 6, "masked_only": masked_only}]
    )
    term = term.terms[0].double()
    student, teacher = torch.randn(2, 4, 5, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)
    mask = torch.tensor([[True, False, False, True], [False, True, False, False]])
    term.center.copy_(torch.linspace(-0.2, 0.3, 6))
    loss = term(_enc(student, mask, teacher))
    head, target = term.head, term.target_head
    assert all(torch.equal(a, b) for a, b in zip(head.parameters(), target.parameters()))  # starts as a copy

    def logits(h, x):
        z = F.normalize(h.mlp(x), dim=-1)
        return z @ F.normalize(h.prototypes, dim=-1).t()

    p_t = F.softmax((logits(target, teacher) - term.center) / 0.04, dim=-1)
    log_p_s = F.log_softmax(logits(head, student) / 0.1, dim=-1)
    cross = -(p_t * log_p_s).sum(-1)
    weights = mask.double() if masked_only else torch.ones(2, 4, dtype=torch.float64)
    expected = ((cross * weights).sum(1) / weights.sum(1)).mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-10)


def test_centre_and_teacher_head_move_only_after_the_step():
    term = build([{"name": "ibot_patch", "hidden_dim": 8, "bottleneck_dim": 4, "prototypes": 6, "momentum": 0.5}])
    term = term.terms[0]
    enc = _enc(torch.randn(2, 4, 5), torch.ones(2, 4, dtype=torch.bool), torch.randn(2, 4, 5))
    first = term(enc)
    assert torch.equal(term(enc), first) and torch.equal(term.center, torch.zeros(6))  # replays see one centre
    with torch.no_grad():
        batch_mean = term.target_head(enc.teacher_image_tokens).mean(dim=(0, 1))
        for p in term.head.parameters():
            p.add_(1.0)
    before = [t.clone() for t in term.target_head.parameters()]
    term.on_step_end()
    torch.testing.assert_close(term.center, 0.1 * batch_mean)
    for t, t0, o in zip(term.target_head.parameters(), before, term.head.parameters()):
        torch.testing.assert_close(t, 0.5 * t0 + 0.5 * o)
        assert not t.requires_grad


def test_bad_hyperparameters_are_named():
    with pytest.raises(ValueError, match="prototypes"):
        build([{"name": "ibot_patch", "prototypes": 0}])
    with pytest.raises(ValueError, match="masked_only"):
        build([{"name": "ibot_patch", "masked_only": "yes"}])
    with pytest.raises(ValueError, match="temperatures"):
        build([{"name": "ibot_patch", "teacher_temperature": 0}])
