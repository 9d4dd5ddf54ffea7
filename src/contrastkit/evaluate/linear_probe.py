"""Linear probe: logistic regression on frozen image embeddings, regularisation chosen on validation.

Follows CLIP's protocol (Radford et al. 2021, appendix A.3): scikit-learn's
L-BFGS logistic regression on the (L2-normalised) image embeddings, with the
inverse regularisation strength C searched on a validation split, then refit on
train + validation with the chosen C and scored once on the test split.

Search: C over ``c_grid`` (default 10^-4 .. 10^4, one per decade), then a
refinement at 10^(b +- 1/2) and 10^(b +- 1/4) around the best decade b; the
best validation acc1 wins, the smaller C on ties (more regularisation). Fits
warm-start from the previous C.

Validation: the given validation features, else a stratified ``val_fraction``
of the training features (seeded). With ``fewshot_k``: k training examples per
class are drawn (seeded; a class with fewer keeps all it has), validation is up
to k other examples per class from the rest of the training data (or the given
validation set), and the final model is fit on the k shots only, so "k-shot"
stays k-shot. When no validation example is left, C = 1.

Test metrics are CLIP_benchmark's (``acc1``, ``acc5`` (NaN under 5 classes),
``mean_per_class_recall``, from the class logits (ranked as the probabilities), see
:mod:`~contrastkit.evaluate.zeroshot`) plus ``C``, ``val_acc1`` (C -> validation
acc1 of the search), ``n_train``, ``n_val``, ``n_test``, ``fewshot_k``
(None: all data) and ``c_selected_on`` (``"validation"`` or ``"default"``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .zeroshot import zeroshot_metrics

DEFAULT_C_GRID: tuple[float, ...] = tuple(10.0**e for e in range(-4, 5))


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _labels(y: Tensor | Sequence[int] | np.ndarray, n: int, what: str) -> np.ndarray:
    y = np.asarray(y.cpu().numpy() if isinstance(y, Tensor) else y, dtype=np.int64).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"linear probe: {n} {what} features but {y.shape[0]} labels")
    return y


def fewshot_indices(labels: np.ndarray, k: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Up to ``k`` indices per class, drawn with ``seed`` (sorted), skipping ``exclude``."""
    if k < 1:
        raise ValueError(f"few-shot k must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    banned = set() if exclude is None else set(exclude.tolist())
    chosen: list[int] = []
    for c in np.unique(labels):
        pool = [i for i in np.flatnonzero(labels == c) if i not in banned]
        if pool:
            chosen.extend(rng.choice(pool, size=min(k, len(pool)), replace=False).tolist())
    return np.array(sorted(chosen), dtype=np.int64)


def _stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: ``fraction`` of each class with >= 2 members goes to val."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = round(fraction * len(idx)) if len(idx) >= 2 else 0
        n_val = min(max(n_val, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        val.extend(idx[:n_val].tolist())
        train.extend(idx[n_val:].tolist())
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64)


class _Probe:
    def __init__(self, max_iter: int, seed: int) -> None:
        from sklearn.linear_model import LogisticRegression

        self.clf = LogisticRegression(max_iter=max_iter, random_state=seed, warm_start=True)

    def fit(self, x: np.ndarray, y: np.ndarray, c: float) -> _Probe:
        from sklearn.exceptions import ConvergenceWarning

        self.clf.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.clf.fit(x, y)
        return self

    def scores(self, x: np.ndarray, n_classes: int) -> Tensor:
        """N x n_classes logits (ranked as the probabilities; classes never seen in training get -inf)."""
        logits = self.clf.decision_function(x)
        if logits.ndim == 1:  # binary: p(class 1) = sigmoid(d), i.e. logits (0, d)
            logits = np.stack([np.zeros_like(logits), logits], axis=1)
        out = np.full((x.shape[0], n_classes), -np.inf)
        out[:, self.clf.classes_] = logits
        return torch.from_numpy(out)

    def head(self, n_classes: int) -> tuple[Tensor, Tensor]:
        """(W, b) with the logits of :meth:`scores` (sklearn's one binary row as the rows (0, w))."""
        coef, intercept = self.clf.coef_, self.clf.intercept_
        if coef.shape[0] == 1:
            coef, intercept = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        weight = np.zeros((n_classes, coef.shape[1]))
        bias = np.full(n_classes, -1e4)
        weight[self.clf.classes_], bias[self.clf.classes_] = coef, intercept
        return torch.from_numpy(weight).float(), torch.from_numpy(bias).float()


def _acc1(probe: _Probe, x: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    return float((probe.scores(x, n_classes).argmax(1).numpy() == y).mean())


def select_c(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    *,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    refine: bool = True,
    max_iter: int = 1000,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """(best C, C -> validation acc1) by the search in the module docstring."""
    scores: dict[float, float] = {}
    probe = _Probe(max_iter, seed)

    def run(cs: Sequence[float]) -> None:
        for c in sorted(cs):
            if c not in scores:
                scores[c] = _acc1(probe.fit(x_train, y_train, c), x_val, y_val, n_classes)

    run(c_grid)
    if refine and len(c_grid) > 1:
        best = max(sorted(scores), key=lambda c: scores[c])  # first max = smallest C on ties
        b = math.log10(best)
        run([10.0 ** (b + d) for d in (-0.5, -0.25, 0.25, 0.5)])
    best = max(sorted(scores), key=lambda c: scores[c])
    return best, scores


def _fit_and_validation(
    xtr: np.ndarray,
    ytr: np.ndarray,
    given_val: tuple[np.ndarray, np.ndarray] | None,
    fewshot_k: int | None,
    val_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fit x, fit y, validation x, validation y): k shots per class and k more for validation, or all the
    training data and the given validation split, or a stratified ``val_fraction`` of the training data."""
    if fewshot_k is not None:
        shots = fewshot_indices(ytr, fewshot_k, seed)
        if given_val is None:
            val_idx = fewshot_indices(ytr, fewshot_k, seed + 1, exclude=shots)
            return xtr[shots], ytr[shots], xtr[val_idx], ytr[val_idx]
        xva, yva = given_val
        val_idx = fewshot_indices(yva, fewshot_k, seed + 1)
        return xtr[shots], ytr[shots], xva[val_idx], yva[val_idx]
    if given_val is None:
        tr_idx, va_idx = _stratified_split(ytr, val_fraction, seed)
        return xtr[tr_idx], ytr[tr_idx], xtr[va_idx], ytr[va_idx]
    return xtr, ytr, given_val[0], given_val[1]


def linear_probe(
    train_x: Tensor | np.ndarray,
    train_y: Tensor | Sequence[int] | np.ndarray,
    test_x: Tensor | np.ndarray,
    test_y: Tensor | Sequence[int] | np.ndarray,
    *,
    val_x: Tensor | np.ndarray | None = None,
    val_y: Tensor | Sequence[int] | np.ndarray | None = None,
    classnames: Sequence[str] | None = None,
    fewshot_k: int | None = None,
    val_fraction: float = 0.2,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    refine: bool = True,
    max_iter: int = 1000,
    seed: int = 0,
    keep_head: bool = False,
) -> dict[str, Any]:
    """Linear-probe metrics (see the module docstring); labels are ints in [0, n_classes).

    ``keep_head``: also return the fitted probe as ``head`` = (W, b), float tensors of n_classes x D and
    n_classes whose logits x Wᵀ + b on unit-norm x rank the classes as the scored probe does (a class without training
    examples gets a bias of -1e4)."""
    xtr, xte = _numpy(train_x), _numpy(test_x)
    ytr, yte = _labels(train_y, len(xtr), "train"), _labels(test_y, len(xte), "test")
    if len(xtr) == 0 or len(xte) == 0:
        raise ValueError("linear probe: need training and test examples")
    given_val: tuple[np.ndarray, np.ndarray] | None = None
    if val_x is not None:
        if val_y is None:
            raise ValueError("linear probe: val_x given without val_y")
        xva = _numpy(val_x)
        given_val = (xva, _labels(val_y, len(xva), "validation"))
    n_classes = int(max(ytr.max(), yte.max(), -1 if given_val is None else given_val[1].max())) + 1
    if classnames is not None:
        if len(classnames) < n_classes:
            raise ValueError(f"linear probe: {len(classnames)} class names but labels up to {n_classes - 1}")
        n_classes = len(classnames)
    if min(ytr.min(), yte.min()) < 0:
        raise ValueError("linear probe: labels must be >= 0")
    x_fit, y_fit, xva, yva = _fit_and_validation(xtr, ytr, given_val, fewshot_k, val_fraction, seed)
    # C is chosen on the validation data; the final probe also learns from it (unless few-shot)
    x_final = x_fit if fewshot_k is not None else np.concatenate([x_fit, xva])
    y_final = y_fit if fewshot_k is not None else np.concatenate([y_fit, yva])

    if len(np.unique(y_final)) < 2:
        raise ValueError("linear probe: the training data has fewer than 2 classes")
    can_validate = len(yva) > 0 and len(np.unique(y_fit)) >= 2
    if can_validate:
        best_c, val_scores = select_c(
            x_fit,
            y_fit,
            xva,
            yva,
            n_classes,
            c_grid=c_grid,
            refine=refine,
            max_iter=max_iter,
            seed=seed,
        )
    else:
        best_c, val_scores = 1.0, {}
    probe = _Probe(max_iter, seed).fit(x_final, y_final, best_c)
    metrics = zeroshot_metrics(
        probe.scores(xte, n_classes), torch.from_numpy(yte), list(classnames) if classnames is not None else None
    )
    metrics.update(
        {
            "C": best_c,
            "val_acc1": {f"{c:.4g}": a for c, a in sorted(val_scores.items())},
            "n_train": len(y_final),
            "n_val": len(yva),
            "n_test": len(yte),
            "fewshot_k": fewshot_k,
            "c_selected_on": "validation" if can_validate else "default",
        }
    )
    if keep_head:
        metrics["head"] = probe.head(n_classes)
    return metrics
