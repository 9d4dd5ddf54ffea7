"""Objective terms: the base class and the registry every term family joins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from torch import Tensor, nn

from ..encoded import Encoded
from ..registry import Registry


class Term(nn.Module):
    """One objective term: ``term(enc) -> scalar``.

    Subclasses set ``name`` (registry key), ``description`` (one line),
    ``requires`` (Encoded fields read besides image/text/logit_scale), and
    implement :meth:`loss`. Keyword arguments of ``__init__`` are the term's
    hyperparameters. A term may own parameters (projector heads); the engine
    optimises them with the model.

    ``model_defaults`` lets a term ask for model settings it is designed for
    (SigLIP's learnable bias with t=10, b=-10); explicit model config wins.
    Requiring a ``teacher_*`` / ``reference_*`` field makes the engine keep an
    EMA teacher / a frozen copy of the initial model (``encoded.py``'s field table).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Class-level defaults that a term may replace per instance (when its hyperparameters change them).
    requires: tuple[str, ...] = ()
    model_defaults: Mapping[str, float] = {}

    def forward(self, enc: Encoded) -> Tensor:
        enc.require(self.name, *self.requires)
        return self.loss(enc)

    def loss(self, enc: Encoded) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_step_end(self) -> None:
        """Hook called by the engine after each optimizer step (EMA targets, schedules)."""


TERMS: Registry[type[Term]] = Registry("objective term")


def register_term(cls: type[Term]) -> type[Term]:
    """Class decorator: register a Term subclass under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    TERMS.register(cls.name)(cls)
    return cls
