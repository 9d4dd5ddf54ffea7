"""Seed statistics and claim verdicts against hand-computed examples."""

from __future__ import annotations

import math

import pytest

from contrastkit.evaluate.verdicts import (
    Condition,
    claim_verdict,
    condition_verdict,
    paired_difference,
    summarize,
)

T_975_DF2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (tables)


def test_summary_is_mean_and_sample_sd():
    s = summarize([0.8, 0.7, 0.9])
    assert s.mean == pytest.approx(0.8) and s.sd == pytest.approx(0.1) and s.n == 3
    assert summarize([0.5]).sd == 0.0
    with pytest.raises(ValueError, match="no values"):
        summarize([])


def test_paired_difference_by_hand():
    # d = [0.2, 0.05, 0.2]: mean 0.15, sd sqrt((0.05^2 + 0.1^2 + 0.05^2) / 2) = sqrt(0.0075)
    d = paired_difference([0.8, 0.7, 0.9], [0.6, 0.65, 0.7])
    sd = math.sqrt(0.0075)
    half = T_975_DF2 * sd / math.sqrt(3)
    assert d.mean == pytest.approx(0.15) and d.sd == pytest.approx(sd) and d.n == 3
    assert (d.low, d.high) == (pytest.approx(0.15 - half), pytest.approx(0.15 + half))
    assert condition_verdict(d, Condition("acc", "higher")) == "within noise"  # [-0.065, 0.365] holds 0


def test_pairing_cancels_the_seed_luck_that_unpaired_spreads_would_not():
    # the method is 0.02 better on every seed while seeds move both by 0.2
    control = [0.5, 0.7, 0.9]
    method = [0.52, 0.72, 0.92]
    d = paired_difference(method, control)
    assert d.sd == pytest.approx(0.0, abs=1e-12) and d.low == pytest.approx(0.02)
    assert summarize(control).sd == pytest.approx(0.2)


@pytest.mark.parametrize(
    "diffs, direction, margin, expected",
    [
        ([0.2, 0.21, 0.19], "higher", 0.0, "reproduced"),  # [0.175, 0.225]
        ([0.2, 0.21, 0.19], "higher", 0.18, "within noise"),  # low 0.175 is not above the margin 0.18
        ([0.2, 0.21, 0.19], "lower", 0.0, "against"),
        ([-0.2, -0.21, -0.19], "lower", 0.0, "reproduced"),
        ([0.2, 0.05, 0.2], "lower", 0.0, "within noise"),
        ([-0.01, 0.0, 0.01], "not_lower", 0.02, "within noise"),  # [-0.0248, 0.0248]: a 2.5-point loss possible
        ([-0.01, 0.0, 0.01], "not_lower", 0.03, "reproduced"),
        ([-0.1, -0.11, -0.09], "not_lower", 0.02, "against"),  # [-0.125, -0.075]: a clear loss
        ([0.1, 0.11, 0.09], "not_higher", 0.02, "against"),
        ([0.0, 0.01, -0.01], "not_higher", 0.03, "reproduced"),
    ],
)
def test_condition_verdicts(diffs, direction, margin, expected):
    d = paired_difference(diffs, [0.0] * len(diffs))
    assert condition_verdict(d, Condition("metric", direction, margin)) == expected


def test_one_seed_is_never_a_verdict():
    d = paired_difference([0.9], [0.1])
    assert (d.low, d.high) == (-math.inf, math.inf)
    assert condition_verdict(d, Condition("acc", "higher")) == "within noise"


def test_claims_combine_their_conditions():
    assert claim_verdict(["reproduced", "reproduced"]) == "reproduced"
    assert claim_verdict(["reproduced", "within noise"]) == "within noise"
    assert claim_verdict(["reproduced", "against"]) == "against"
    with pytest.raises(ValueError, match="at least one condition"):
        claim_verdict([])


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="3 method runs but 2 control runs"):
        paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="direction must be one of"):
        Condition("acc", "up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin must be >= 0"):
        Condition("acc", "higher", -1.0)
