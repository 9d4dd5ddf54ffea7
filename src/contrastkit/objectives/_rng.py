"""Seeded randomness for objective terms (helper module; defines no term).

Terms that draw random numbers (``mochi``, ``m2mix`` and friends, ``rafa``)
own a CPU :class:`torch.Generator` seeded from their ``seed`` hyperparameter.
Draws are made on the CPU and moved to the embeddings' device, so the numbers
do not depend on the device, and every rank (which sees the same global
batch) draws the same numbers in the same order: the terms stay pure functions
of ``Encoded`` plus a step-indexed random stream.

The generator state is saved with the term through ``nn.Module``'s extra
state (a uint8 tensor under ``<prefix>_extra_state`` in ``state_dict``), so a
resumed run replays the same stream.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor


class SeededRandomMixin:
    """Mixin for :class:`~contrastkit.objectives.base.Term` subclasses that draw random numbers."""

    name: ClassVar[str]  # the Term's registry name (the mixin is always combined with a Term)
    seed: int
    _generator: torch.Generator

    def _init_rng(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"{self.name}: seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(self.seed)

    def reset_rng(self, seed: int | None = None) -> None:
        """Restart the random stream (from ``seed``, default the term's own seed)."""
        self._generator.manual_seed(self.seed if seed is None else int(seed))

    @property
    def generator(self) -> torch.Generator:
        return self._generator

    # nn.Module hooks: the generator state travels with state_dict().
    def get_extra_state(self) -> Tensor:
        return self._generator.get_state()

    def set_extra_state(self, state: Tensor) -> None:
        self._generator.set_state(state.to("cpu", torch.uint8))


def _standard_gamma(shape: float, generator: torch.Generator) -> float:
    """One Gamma(shape, 1) draw (Marsaglia & Tsang 2000) from ``generator``."""
    if shape < 1.0:
        # Gamma(k) = Gamma(k + 1) * U^(1/k)
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        return _standard_gamma(shape + 1.0, generator) * u ** (1.0 / shape)
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = float(torch.randn((), generator=generator, dtype=torch.float64))
        v = (1.0 + c * x) ** 3
        if v <= 0.0:
            continue
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        if u <= 0.0:
            continue
        if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v


def sample_beta(a: float, b: float, generator: torch.Generator) -> float:
    """One Beta(a, b) draw from ``generator`` (``torch.distributions.Beta`` takes no generator)."""
    x = _standard_gamma(a, generator)
    y = _standard_gamma(b, generator)
    if x + y == 0.0:  # both underflowed (tiny a, b): the two ends are equally likely
        return 0.5
    return x / (x + y)
