"""PixPro: crop geometry, positive pairs, propagation and the loss against direct float64 loops; EMA targets."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from contrastkit.data.transforms import BoxedCrop, boxed_views
from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives.pixpro import cell_centres, consistency_loss, positive_pairs, propagate


def test_identical_boxes_pair_each_cell_with_itself_and_a_flip_mirrors_the_columns():
    box = torch.tensor([[0.1, 0.2, 0.7, 0.8]])  # square bins
    same = positive_pairs(box, box, 3, 0.7)[0]
    assert torch.equal(same, torch.eye(9))  # neighbours are one bin apart: 1 / sqrt(2) > 0.7 diagonals
    flipped = positive_pairs(box, box[:, [2, 1, 0, 3]], 3, 0.7)[0]
    mirror = torch.zeros(9, 9)
    for r, c in itertools.product(range(3), range(3)):
        mirror[r * 3 + c, r * 3 + (2 - c)] = 1
    assert torch.equal(flipped, mirror)


def test_positive_pairs_against_a_loop_over_cells():
    g = torch.Generator().manual_seed(0)
    a = torch.cat([0.4 * torch.rand(5, 2, generator=g), 0.6 + 0.4 * torch.rand(5, 2, generator=g)], 1).double()
    b = torch.cat([0.4 * torch.rand(5, 2, generator=g), 0.6 + 0.4 * torch.rand(5, 2, generator=g)], 1).double()
    grid, threshold = 4, 0.7
    ours = positive_pairs(a, b, grid, threshold)
    for k in range(5):

        def centre(box, r, c):
            x0, y0, x1, y1 = box.tolist()
            return x0 + (c + 0.5) * (x1 - x0) / grid, y0 + (r + 0.5) * (y1 - y0) / grid

        def diag(box):
            x0, y0, x1, y1 = box.tolist()
            return math.hypot((x1 - x0) / grid, (y1 - y0) / grid)

        for i, j in itertools.product(range(grid * grid), repeat=2):
            (xa, ya), (xb, yb) = centre(a[k], *divmod(i, grid)), centre(b[k], *divmod(j, grid))
            near = math.hypot(xa - xb, ya - yb) / max(diag(a[k]), diag(b[k])) < threshold
            assert ours[k, i, j] == float(near)
    centres, _ = cell_centres(a[:1], grid)
    assert centres[0, 1].tolist() == pytest.approx(list(centre(a[0], 0, 1)))  # row-major: cell 1 is row 0, col 1


def _direct_loss(x, value, target, boxes, grid, gamma, threshold):
    """Float64 loops: propagation per cell, positives per cell pair, mean per image, -2 x batch mean, pairs."""
    v, b, n, _ = x.shape
    total = []
    for a, c in itertools.combinations(range(v), 2):
        pair = 0.0
        for p, q in ((a, c), (c, a)):
            per_image = []
            for k in range(b):
                mask = positive_pairs(boxes[k : k + 1, p], boxes[k : k + 1, q], grid, threshold)[0]
                num, den = 0.0, 0.0
                for i in range(n):
                    y = sum(
                        max(F.cosine_similarity(x[p, k, i], x[p, k, j], dim=0).item(), 0.0) ** gamma
                        * F.normalize(value[p, k, j], dim=0)
                        for j in range(n)
                    )
                    y = F.normalize(y, dim=0)
                    for j in range(n):
                        if mask[i, j]:
                            num += float(y @ F.normalize(target[q, k, j], dim=0))
                            den += 1
                per_image.append(num / (den + 1e-6))
            pair += -2 * float(np.mean(per_image))
        total.append(pair)
    return float(np.mean(total))


def test_loss_equals_the_direct_formula():
    g = torch.Generator().manual_seed(1)
    v, b, grid, c = 3, 4, 2, 5
    x = torch.randn(v, b, grid * grid, c, generator=g, dtype=torch.float64)
    value = torch.randn(v, b, grid * grid, c, generator=g, dtype=torch.float64)
    target = torch.randn(v, b, grid * grid, c, generator=g, dtype=torch.float64)
    boxes = torch.cat([0.3 * torch.rand(b, v, 2, generator=g), 0.7 + 0.3 * torch.rand(b, v, 2, generator=g)], -1)
    boxes = boxes.double()
    ours = []
    for a, d in itertools.combinations(range(v), 2):
        ya, yd = propagate(x[a], value[a], 2.0), propagate(x[d], value[d], 2.0)
        ta, td = F.normalize(target[a], dim=-1), F.normalize(target[d], dim=-1)
        ours.append(
            consistency_loss(ya, td, positive_pairs(boxes[:, a], boxes[:, d], grid, 0.7))
            + consistency_loss(yd, ta, positive_pairs(boxes[:, d], boxes[:, a], grid, 0.7))
        )
    assert float(torch.stack(ours).mean()) == pytest.approx(_direct_loss(x, value, target, boxes, grid, 2.0, 0.7))


def test_no_overlap_gives_zero_and_the_term_needs_two_views():
    y = F.normalize(torch.randn(2, 4, 3), dim=-1)
    assert float(consistency_loss(y, y, torch.zeros(2, 4, 4))) == 0.0
    term = build([{"name": "pixpro", "hidden_dim": 8, "out_dim": 4}]).terms[0]
    one_view = Encoded(
        image=torch.zeros(2, 3),
        text=torch.zeros(2, 3),
        logit_scale=torch.tensor(1.0),
        image_view_tokens=torch.randn(1, 2, 4, 6),
        teacher_image_view_tokens=torch.randn(1, 2, 4, 6),
        view_boxes=torch.rand(2, 1, 4),
    )
    with pytest.raises(ValueError, match="at least 2 views"):
        term(one_view)
    with pytest.raises(ValueError, match="hidden_dim"):
        build([{"name": "pixpro", "hidden_dim": 0}])


def test_target_projector_starts_as_a_copy_and_follows_by_ema():
    term = build([{"name": "pixpro", "hidden_dim": 8, "out_dim": 4, "momentum": 0.9}]).terms[0]
    enc = Encoded(
        image=torch.zeros(2, 3),
        text=torch.zeros(2, 3),
        logit_scale=torch.tensor(1.0),
        image_view_tokens=torch.randn(2, 2, 4, 6),
        teacher_image_view_tokens=torch.randn(2, 2, 4, 6),
        view_boxes=torch.tensor([[[0.0, 0.0, 1.0, 1.0]] * 2] * 2),
    )
    term(enc)
    for t, o in zip(term.target_projector.parameters(), term.projector.parameters()):
        assert torch.equal(t, o) and not t.requires_grad
    before = [t.clone() for t in term.target_projector.parameters()]
    with torch.no_grad():
        for o in term.projector.parameters():
            o.add_(1.0)
    term.on_step_end()
    for t, t0, o in zip(term.target_projector.parameters(), before, term.projector.parameters()):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * o)


def test_boxed_crop_records_where_each_view_came_from():
    ramp = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (64, 1, 3))  # brightness = 4 x column
    source = Image.fromarray(ramp)
    crop = BoxedCrop(32, scale=(0.2, 0.5), flip=0.5, jitter=0.0)

    def finish(im):
        return torch.from_numpy(np.asarray(im, dtype=np.float32))

    views, boxes = boxed_views(source, crop, finish, list(range(8)))
    assert views.shape == (8, 32, 32, 3) and boxes.shape == (8, 4)
    for view, (x0, _, x1, _) in zip(views, boxes.tolist()):
        # the view's first column shows the source at x0, its last at x1 (flipped or not)
        assert float(view[16, 0, 0]) == pytest.approx(4 * 64 * x0, abs=10)
        assert float(view[16, -1, 0]) == pytest.approx(4 * 64 * x1, abs=10)
    flips = [x0 > x1 for x0, _, x1, _ in boxes.tolist()]
    assert any(flips) and not all(flips)
    again, same_boxes = boxed_views(source, crop, finish, list(range(8)))
    assert torch.equal(same_boxes, boxes) and torch.equal(again, views)  # seeded
