"""Seed statistics and claim verdicts: is a method's effect reproduced, against, or within noise?

A claim compares a method with its control over the same seeds (run i of both uses seed i, so
the seed's luck cancels in the paired difference d_i = method_i - control_i). For n seeds:

    mean d = (1/n) sum_i d_i,   sd d = sqrt(sum_i (d_i - mean d)^2 / (n - 1)),
    95% interval = mean d -/+ t_{0.975, n-1} sd d / sqrt(n)     (Student's t; scipy.stats.t)

A condition on one metric says which way the paper expects it to move:

- ``higher`` / ``lower``: reproduced when the whole interval lies on that side of ``margin``
  (``higher``: low > margin; ``lower``: high < -margin), against when it lies wholly on the
  other side of 0, within noise otherwise;
- ``not_lower`` / ``not_higher`` (a method should keep a metric, e.g. zero-shot accuracy while
  fine-tuning): reproduced when the interval excludes a loss larger than ``margin``
  (``not_lower``: low > -margin), against when the whole interval is a loss beyond ``margin``
  (high < -margin), within noise otherwise.

A claim of several conditions is reproduced when all are, against when any is, else within
noise. With one seed there is no interval: every verdict is within noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scipy import stats

Direction = Literal["higher", "lower", "not_lower", "not_higher"]
Verdict = Literal["reproduced", "against", "within noise"]
DIRECTIONS: tuple[Direction, ...] = ("higher", "lower", "not_lower", "not_higher")


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation of a metric over seeds."""

    mean: float
    sd: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.sd:.2g} (n={self.n})"


@dataclass(frozen=True)
class PairedDifference:
    """method - control over paired seeds, with its two-sided confidence interval."""

    mean: float
    sd: float
    n: int
    low: float
    high: float
    confidence: float


@dataclass(frozen=True)
class Condition:
    """One metric of a claim and the direction the paper expects (see the module docstring)."""

    metric: str
    direction: Direction
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"condition on {self.metric}: direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}"
            )
        if self.margin < 0:
            raise ValueError(f"condition on {self.metric}: margin must be >= 0, got {self.margin}")


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample sd (n - 1 in the denominator; 0 for a single value)."""
    if not values:
        raise ValueError("summarize: no values")
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Summary(mean, sd, n)


def paired_difference(method: Sequence[float], control: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """The mean paired difference and its Student-t interval (seed i of ``method`` against seed i of ``control``)."""
    if len(method) != len(control):
        raise ValueError(
            f"paired difference: {len(method)} method runs but {len(control)} control runs; pair them by seed"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diffs = [m - c for m, c in zip(method, control)]
    s = summarize(diffs)
    if s.n < 2:
        return PairedDifference(s.mean, 0.0, s.n, -math.inf, math.inf, confidence)
    half = float(stats.t.ppf(0.5 + confidence / 2, s.n - 1)) * s.sd / math.sqrt(s.n)
    return PairedDifference(s.mean, s.sd, s.n, s.mean - half, s.mean + half, confidence)


def condition_verdict(diff: PairedDifference, condition: Condition) -> Verdict:
    """Whether the paired difference of the condition's metric supports it (module docstring)."""
    m = condition.margin
    if condition.direction in ("lower", "not_higher"):  # mirror: "lower" is "higher" of -d
        diff = PairedDifference(-diff.mean, diff.sd, diff.n, -diff.high, -diff.low, diff.confidence)
    if condition.direction in ("higher", "lower"):
        if diff.low > m:
            return "reproduced"
        if diff.high < 0:
            return "against"
        return "within noise"
    if diff.low > -m:
        return "reproduced"
    if diff.high < -m:
        return "against"
    return "within noise"


def claim_verdict(verdicts: Sequence[Verdict]) -> Verdict:
    """All conditions reproduced -> reproduced; any against -> against; else within noise."""
    if not verdicts:
        raise ValueError("a claim needs at least one condition")
    if "against" in verdicts:
        return "against"
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    return "within noise"
