"""Geometry metrics against direct formulas on constructed point clouds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from contrastkit.evaluate import (
    alignment,
    centroid_cosine,
    effective_rank,
    geometry_metrics,
    linear_separability,
    mean_negative_cosine,
    mean_positive_cosine,
    modality_gap,
    temperature_diagnostics,
    tolerance,
    uniformity,
)


def _clouds(n=300, d=16, shift=3.0, seed=0):
    """Paired Gaussian clouds centred at +shift e_0 (x) and -shift e_0 (y); y_i = x_i - 2 shift e_0 + noise."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.zeros(d)
    direction[0] = shift
    x = torch.randn(n, d, generator=g) + direction
    y = x - 2 * direction + 0.5 * torch.randn(n, d, generator=g)
    return x, y


def _unit_np(a):
    a = a.double().numpy()
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_gap_and_centroid_cosine_equal_direct_computation():
    x, y = _clouds()
    u, v = _unit_np(x), _unit_np(y)
    cu, cv = u.mean(0), v.mean(0)
    assert modality_gap(x, y) == pytest.approx(np.linalg.norm(cu - cv), abs=1e-10)
    assert centroid_cosine(x, y) == pytest.approx(cu @ cv / np.linalg.norm(cu) / np.linalg.norm(cv), abs=1e-10)
    assert modality_gap(x, y) > 0.5  # the clouds sit on opposite sides


def test_pair_cosines_and_alignment_equal_loops():
    x, y = _clouds(n=40)
    u, v = _unit_np(x), _unit_np(y)
    n = len(u)
    pos = np.mean([u[i] @ v[i] for i in range(n)])
    neg = np.mean([u[i] @ v[j] for i in range(n) for j in range(n) if i != j])
    align = np.mean([np.sum((u[i] - v[i]) ** 2) for i in range(n)])
    assert mean_positive_cosine(x, y) == pytest.approx(pos, abs=1e-10)
    assert mean_negative_cosine(x, y) == pytest.approx(neg, abs=1e-10)
    assert alignment(x, y) == pytest.approx(align, abs=1e-10)


def test_uniformity_equals_naive_double_loop():
    x, _ = _clouds(n=50, d=5)
    u = _unit_np(x)
    terms = [math.exp(-2.0 * np.sum((u[i] - u[j]) ** 2)) for i in range(50) for j in range(i + 1, 50)]
    want = math.log(sum(terms) / len(terms))
    assert uniformity(x) == pytest.approx(want, abs=1e-10)
    assert uniformity(x, chunk_size=7) == pytest.approx(want, abs=1e-10)  # chunking changes nothing
    t1 = [math.exp(-1.0 * np.sum((u[i] - u[j]) ** 2)) for i in range(50) for j in range(i + 1, 50)]
    assert uniformity(x, t=1.0) == pytest.approx(math.log(sum(t1) / len(t1)), abs=1e-10)


def test_uniformity_orders_spread_and_collapsed_sets():
    g = torch.Generator().manual_seed(3)
    spread = torch.randn(500, 8, generator=g)
    collapsed = torch.tensor([1.0] + [0.0] * 7) + 0.05 * torch.randn(500, 8, generator=g)
    assert uniformity(spread) < uniformity(collapsed) < 0.0
    assert uniformity(torch.ones(10, 4)) == pytest.approx(0.0, abs=1e-12)  # all points equal


def test_identical_modalities_have_no_gap_no_misalignment_and_chance_separability():
    x, _ = _clouds(n=200)
    assert modality_gap(x, x) == pytest.approx(0.0, abs=1e-12)
    assert alignment(x, x) == pytest.approx(0.0, abs=1e-12)
    assert linear_separability(x, x) == pytest.approx(0.5, abs=0.02)


def test_well_separated_modalities_are_linearly_separable():
    x, y = _clouds(n=200, shift=6.0)
    assert linear_separability(x, y) >= 0.99
    assert linear_separability(x, y, seed=1) >= 0.99


def test_separability_split_is_by_pair():
    # If x_i and y_i are identical, every held-out x has its twin y held out too,
    # so predictions pair up and accuracy is exactly 1/2 whatever the classifier.
    x, _ = _clouds(n=101, shift=0.0)
    for seed in range(3):
        assert linear_separability(x, x.clone(), seed=seed) == 0.5


def test_effective_rank_isotropic_vs_rank_one():
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(4000, 8, generator=g)
    assert 7.8 < effective_rank(iso) <= 8.0
    u = torch.randn(8, generator=g)
    line = torch.randn(100, 1, generator=g).double() * u.double()  # all points on one line through 0
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    two = torch.cat([iso[:, :2], torch.zeros(4000, 6)], dim=1)  # isotropic in a 2-D subspace
    assert effective_rank(two) == pytest.approx(2.0, abs=0.05)


def test_geometry_metrics_collects_everything_consistently():
    x, y = _clouds(n=120)
    m = geometry_metrics(x, y)
    assert m["modality_gap"] == pytest.approx(modality_gap(x, y))
    assert m["centroid_mse"] == pytest.approx(m["modality_gap"] ** 2 / 16)
    assert m["alignment"] == pytest.approx(2 - 2 * m["mean_positive_cosine"])
    assert m["uniformity_image"] == pytest.approx(uniformity(x))
    assert m["uniformity_text"] == pytest.approx(uniformity(y))
    assert m["n_pairs"] == 120 and m["dim"] == 16
    assert set(m) == {
        "modality_gap",
        "centroid_cosine",
        "centroid_mse",
        "mean_positive_cosine",
        "mean_negative_cosine",
        "alignment",
        "uniformity_image",
        "uniformity_text",
        "linear_separability",
        "effective_rank_image",
        "effective_rank_text",
        "n_pairs",
        "dim",
        "temperature",
        "hardness_top1",
        "hardness_top10",
        "effective_negatives",
        "effective_negatives_fraction",
    }
    assert m["temperature"] == 0.07
    labelled = geometry_metrics(x, y, labels=torch.arange(120) % 3, temperature=0.5)
    assert labelled["temperature"] == 0.5 and labelled["n_labelled"] == 120
    assert labelled["tolerance_image"] == pytest.approx(tolerance(x, torch.arange(120) % 3))
    with pytest.raises(ValueError, match="equal shapes"):
        geometry_metrics(x, y[:10])


# ------------------------------------------------------------------ temperature diagnostics (Wang & Liu)


def _naive_penalties(x, y, tau):
    """r_i(j) for every anchor i (rows) and negative j != i, by the definition, in a double loop."""
    u, v = _unit_np(x), _unit_np(y)
    n = len(u)
    out = []
    for i in range(n):
        s = np.array([u[i] @ v[j] / tau for j in range(n) if j != i])
        e = np.exp(s - s.max())
        out.append(e / e.sum())
    return out


def test_uniform_similarities_give_equal_weights_to_all_negatives():
    # Orthonormal pairs: every negative has similarity 0, so r_i is uniform over the N-1 negatives.
    n = 12
    x = torch.eye(n)
    for tau in (0.01, 0.07, 1.0):
        m = temperature_diagnostics(x, x.clone(), tau, ks=(1, 3))
        assert m["effective_negatives"] == pytest.approx(n - 1, rel=1e-9)
        assert m["effective_negatives_fraction"] == pytest.approx(1.0, rel=1e-9)
        assert m["hardness_top1"] == pytest.approx(1 / (n - 1), rel=1e-9)
        assert m["hardness_top3"] == pytest.approx(3 / (n - 1), rel=1e-9)


def test_one_much_closer_negative_takes_the_whole_gradient_at_small_tau():
    # Anchor 0's negatives: text 1 at cosine 0.9, the rest orthogonal (cosine 0).
    n, d = 8, 16
    x = torch.eye(n, d)
    y = torch.eye(n, d)
    x[0] = torch.zeros(d)
    x[0, 0], x[0, 1] = 1.0, 0.9  # anchor 0 near text 0 and text 1; the others orthogonal to it
    small = temperature_diagnostics(x, y, 0.01, ks=(1,), direction="image", chunk_size=3)
    # anchor 0: top-1 share = 1 / (1 + 6 exp(-s/tau)) with s = 0.9/|x_0|; the other anchors: 1/7 each
    s = 0.9 / math.sqrt(1 + 0.81)
    share0 = 1 / (1 + 6 * math.exp(-s / 0.01))
    assert share0 > 0.999
    assert small["hardness_top1"] == pytest.approx((share0 + 7 * (1 / 7)) / n, rel=1e-9)
    assert small["effective_negatives"] == pytest.approx((1 + 7 * 7) / n, abs=1e-3)  # anchor 0: ~1 negative
    # As tau grows the weights even out again: effective negatives -> N-1 for every anchor.
    large = temperature_diagnostics(x, y, 100.0, ks=(1,), direction="image")
    assert large["effective_negatives"] == pytest.approx(n - 1, rel=1e-3)


def test_hardness_and_effective_negatives_equal_the_definition_on_random_clouds():
    x, y = _clouds(n=40, d=8)
    for tau in (0.05, 0.3):
        ks = (1, 5)
        got = temperature_diagnostics(x, y, tau, ks=ks, chunk_size=7)
        both = _naive_penalties(x, y, tau) + _naive_penalties(y, x, tau)  # image anchors, then text anchors
        for k in ks:
            want = np.mean([np.sort(r)[::-1][:k].sum() for r in both])
            assert got[f"hardness_top{k}"] == pytest.approx(want, rel=1e-9)
        want_eff = np.mean([np.exp(-(r * np.log(r)).sum()) for r in both])
        assert got["effective_negatives"] == pytest.approx(want_eff, rel=1e-9)
    with pytest.raises(ValueError, match="positive"):
        temperature_diagnostics(x, y, 0.0)


def test_tolerance_known_answers():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    collapsed = centres[labels] * torch.rand(9, 1, generator=g).add(0.5)  # same direction, any length
    assert tolerance(collapsed, labels) == pytest.approx(1.0, abs=1e-12)  # identical same-class embeddings

    orthogonal = torch.eye(9)  # every pair orthogonal
    assert tolerance(orthogonal, labels) == pytest.approx(0.0, abs=1e-12)

    x = torch.randn(9, 5, generator=g)
    u = _unit_np(x)
    pairs = [u[a] @ u[b] for a in range(9) for b in range(a + 1, 9) if labels[a] == labels[b]]
    assert tolerance(x, labels) == pytest.approx(np.mean(pairs), rel=1e-12)
    # unlabelled rows (-1) are left out; no same-class pair -> NaN
    assert tolerance(
        torch.cat([x, torch.randn(2, 5, generator=g)]), torch.cat([labels, torch.tensor([-1, -1])])
    ) == pytest.approx(np.mean(pairs), rel=1e-12)
    assert math.isnan(tolerance(x[:3], [0, 1, 2]))
