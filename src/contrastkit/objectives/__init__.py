"""Objectives: a recipe is a weighted sum of registered terms.

    from contrastkit.objectives import build
    objective = build([{"name": "clip", "weight": 1.0}])
    loss, per_term = objective(encoded)

Every module in this package that defines a term registers it on import; the
package imports them all, so a new family only needs a new file.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn

from ..encoded import Encoded
from .base import TERMS, Term, register_term

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name not in ("base", "functional"):
        importlib.import_module(f"{__name__}.{_module.name}")


class ObjectiveOutput(NamedTuple):
    loss: Tensor  # weighted sum, scalar
    terms: dict[str, Tensor]  # unweighted value of each term, by label


class NonFiniteLossError(FloatingPointError):
    """Raised when a term produces NaN/inf; names the term (and the step when the engine knows it)."""

    def __init__(self, term: str, value: float, step: int | None = None) -> None:
        where = f" at step {step}" if step is not None else ""
        super().__init__(
            f"objective term {term!r} produced {value}{where}; "
            "lower the learning rate, check the data, or enable gradient clipping"
        )
        self.term, self.value, self.step = term, value, step


class Objective(nn.Module):
    """Weighted sum of terms. Labels are the term names, suffixed ``#2``... when repeated."""

    def __init__(self, terms: Sequence[Term], weights: Sequence[float], labels: Sequence[str]) -> None:
        super().__init__()
        self.terms = nn.ModuleList(terms)
        self.weights = [float(w) for w in weights]
        self.labels = list(labels)

    def iter_terms(self) -> Iterator[Term]:
        """The terms in recipe order (``self.terms``, an ``nn.ModuleList``, is typed as holding plain modules)."""
        return cast(Iterator[Term], iter(self.terms))

    def forward(self, enc: Encoded, check_finite: bool = True) -> ObjectiveOutput:
        values: dict[str, Tensor] = {}
        total: Tensor | None = None
        for label, weight, term in zip(self.labels, self.weights, self.iter_terms()):
            value = term(enc)
            if check_finite and not torch.isfinite(value.detach()).all():
                raise NonFiniteLossError(label, float(value.detach()))
            values[label] = value
            total = weight * value if total is None else total + weight * value
        assert total is not None
        return ObjectiveOutput(total, values)

    @property
    def requires(self) -> set[str]:
        return {field for term in self.iter_terms() for field in term.requires}

    @property
    def model_defaults(self) -> dict[str, float]:
        merged: dict[str, float] = {}
        for term in self.iter_terms():
            merged.update(term.model_defaults)
        return merged

    def on_step_end(self) -> None:
        for term in self.iter_terms():
            term.on_step_end()


def term_parameters(name: str) -> dict[str, Any]:
    """Hyperparameters of a registered term and their defaults.

    A term whose ``__init__`` passes ``**kwargs`` on to its parent term also takes the parent's.
    """
    params: dict[str, Any] = {}
    for klass in TERMS.get(name).__mro__:
        if "__init__" not in vars(klass):
            continue
        signature = inspect.signature(vars(klass)["__init__"])
        for p in signature.parameters.values():
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                params.setdefault(p.name, None if p.default is inspect.Parameter.empty else p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
            break
    return params


def build_term(spec: Mapping[str, Any], where: str = "objective") -> tuple[Term, float, str]:
    spec = dict(spec)
    if "name" not in spec:
        raise ValueError(f"{where}: every term needs a 'name'; known terms: {', '.join(TERMS.names())}")
    name = spec.pop("name")
    weight = spec.pop("weight", 1.0)
    label = spec.pop("label", name)
    if name not in TERMS:
        raise ValueError(f"{where}: unknown term {name!r}; known terms: {', '.join(TERMS.names())}")
    try:
        weight = float(weight)
    except (TypeError, ValueError):
        raise ValueError(f"{where}.{name}.weight must be a number, got {weight!r}") from None
    allowed = term_parameters(name)
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ValueError(
            f"{where}.{name}: unknown parameter(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed)) or '(none)'}"
        )
    try:
        term = TERMS.get(name)(**spec)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}.{name}: {err}") from None
    return term, weight, str(label)


def build(specs: Sequence[Mapping[str, Any]]) -> Objective:
    """Build an :class:`Objective` from ``[{name, weight, **kwargs}, ...]``."""
    if not specs:
        raise ValueError("objective: the recipe lists no terms; e.g. [{name: clip, weight: 1.0}]")
    terms, weights, labels = [], [], []
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping):
            raise ValueError(f"objective[{i}] must be a mapping like {{name: clip, weight: 1.0}}, got {spec!r}")
        term, weight, label = build_term(spec, where=f"objective[{i}]")
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        terms.append(term)
        weights.append(weight)
        labels.append(label)
    return Objective(terms, weights, labels)


__all__ = [
    "TERMS",
    "NonFiniteLossError",
    "Objective",
    "ObjectiveOutput",
    "Term",
    "build",
    "register_term",
    "term_parameters",
]
