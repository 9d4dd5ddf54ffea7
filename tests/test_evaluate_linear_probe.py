"""Linear probe: C chosen on validation, refit, few-shot sampling, against a direct scikit-learn fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from contrastkit.evaluate.linear_probe import DEFAULT_C_GRID, fewshot_indices, linear_probe, select_c


def _clusters(n_per_class=(30, 20, 10, 25, 15, 20), d=12, spread=0.6, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(n_per_class), d, generator=g) * 2
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    x = centres[labels] + spread * torch.randn(len(labels), d, generator=g)
    return x, labels


def test_separable_classes_are_learned_and_report_the_search():
    x, y = _clusters(spread=0.1)
    xt, yt = _clusters(spread=0.1, seed=0)  # same centres (same seed), fresh points would be equal too
    m = linear_probe(x, y, xt, yt, classnames=[f"c{i}" for i in range(6)])
    assert m["acc1"] == 1.0 and m["acc5"] == 1.0 and m["mean_per_class_recall"] == 1.0
    assert m["c_selected_on"] == "validation" and m["fewshot_k"] is None
    assert m["n_train"] == len(y) and m["n_test"] == len(yt) and 0 < m["n_val"] < len(y)
    assert len(m["val_acc1"]) == len(DEFAULT_C_GRID) + 4  # the grid and the refinement around the best decade
    assert set(m["per_class_recall"]) == {f"c{i}" for i in range(6)}


def test_equals_a_direct_fit_with_the_chosen_c_on_train_plus_validation():
    x, y = _clusters(spread=4.0, seed=1)
    xt, yt = _clusters(spread=4.0, seed=1)
    xt = xt + 3.0 * torch.randn(xt.shape, generator=torch.Generator().manual_seed(9))
    xv, yv = _clusters(n_per_class=(5,) * 6, spread=4.0, seed=1)
    m = linear_probe(x, y, xt, yt, val_x=xv, val_y=yv)
    assert m["n_val"] == 30 and m["n_train"] == len(y) + 30
    unit = lambda a: (a / a.norm(dim=1, keepdim=True)).double().numpy()  # noqa: E731
    clf = LogisticRegression(C=m["C"], max_iter=1000, random_state=0).fit(
        np.concatenate([unit(x), unit(xv)]), np.concatenate([y.numpy(), yv.numpy()])
    )
    acc = float((clf.predict(unit(xt)) == yt.numpy()).mean())
    assert 0.3 < acc < 0.99
    assert m["acc1"] == pytest.approx(acc, abs=1 / len(yt) + 1e-12)  # warm starts may move one borderline point


def test_the_kept_head_scores_like_the_probe_also_for_two_classes_and_missing_ones():
    for n_per_class in ((30, 20, 10, 25, 15, 20), (30, 20)):
        x, y = _clusters(n_per_class=n_per_class, spread=2.0, seed=3)
        xt, yt = _clusters(n_per_class=n_per_class, spread=2.0, seed=4)
        m = linear_probe(x, y, xt, yt, classnames=[f"c{i}" for i in range(7)], keep_head=True)
        weight, bias = m["head"]
        assert weight.shape == (7, x.shape[1]) and bias[6] == -1e4  # class 6 has no examples
        unit = (xt / xt.norm(dim=1, keepdim=True)).double().numpy()  # the probe reads unit features
        predicted = (unit @ weight.double().numpy().T + bias.double().numpy()).argmax(1)
        assert float((predicted == yt.numpy()).mean()) == pytest.approx(m["acc1"])


def test_c_search_prefers_the_smaller_c_on_ties_and_finds_the_best():
    for spread, seed in ((0.3, 0), (2.0, 3)):
        x, y = _clusters(spread=spread, seed=seed)
        xn, yn = x.double().numpy(), y.numpy()
        best, scores = select_c(xn[::2], yn[::2], xn[1::2], yn[1::2], 6)
        top = max(scores.values())
        assert scores[best] == top and best == min(c for c, v in scores.items() if v == top)
        assert min(scores.values()) < top  # the search matters: too strong a regulariser underfits


def test_fewshot_draws_k_per_class_reproducibly():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    a = fewshot_indices(labels, 4, seed=0)
    assert np.array_equal(a, fewshot_indices(labels, 4, seed=0))
    assert not np.array_equal(a, fewshot_indices(labels, 4, seed=1))
    assert np.bincount(labels[a]).tolist() == [4, 3, 4]  # class 1 has only 3
    rest = fewshot_indices(labels, 4, seed=5, exclude=a)
    assert not set(a) & set(rest) and np.bincount(labels[rest], minlength=3).tolist() == [4, 0, 3]


def test_fewshot_probe_trains_on_k_shots_only():
    x, y = _clusters(spread=0.3)
    xt, yt = _clusters(spread=0.3, seed=0)
    m = linear_probe(x, y, xt, yt, fewshot_k=2, seed=4)
    assert m["fewshot_k"] == 2 and m["n_train"] == 12 and m["n_val"] == 12
    assert m["acc1"] > 0.9
    assert linear_probe(x, y, xt, yt, fewshot_k=2, seed=4)["acc1"] == m["acc1"]  # seeded


def test_without_validation_data_c_defaults_to_one():
    x = torch.eye(4)  # one example per class: nothing left for validation
    m = linear_probe(x, [0, 1, 2, 3], x, [0, 1, 2, 3], fewshot_k=1)
    assert m["c_selected_on"] == "default" and m["C"] == 1.0 and m["n_val"] == 0
    assert m["acc1"] == 1.0 and math.isnan(m["acc5"])  # fewer than 5 classes


def test_bad_inputs():
    x, y = _clusters()
    with pytest.raises(ValueError, match="labels"):
        linear_probe(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        linear_probe(x[:5], [0] * 5, x, y)
    with pytest.raises(ValueError, match="class names"):
        linear_probe(x, y, x, y, classnames=["a", "b"])
