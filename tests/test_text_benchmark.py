"""benchmarks/text_pairs.py: metrics read from reports, and the claim table's verdicts from paired seeds."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import text_pairs  # noqa: E402 - benchmarks/ is a folder of scripts, put on the path above


def test_metrics_are_read_from_the_report_sections():
    report = {
        "sts": {"shapes-sts": {"spearman_cosine": 0.9, "alignment": 0.1, "uniformity": -2.0}},
        "text_geometry": {"anisotropy": 0.3},
        "text_retrieval": {"cosine_mrr@10": 0.7},
    }
    assert [text_pairs.metric(report, m) for m in text_pairs.METRICS] == [0.9, 0.1, -2.0, 0.3, 0.7]
    assert text_pairs.metric({}, "sts") != text_pairs.metric({}, "sts")  # missing: NaN, never a number


def test_claim_rows_pair_seeds_and_give_verdicts():
    def arm(sts, uniformity):
        return {
            "sts": sts,
            "alignment": [0.1] * 3,
            "uniformity": uniformity,
            "anisotropy": [0.2] * 3,
            "mrr@10": [0.5] * 3,
        }

    values = {
        "untuned": arm([0.88] * 3, [-2.0] * 3),
        "text_pairs": arm([0.91, 0.92, 0.915], [-2.1] * 3),  # above untuned on every seed
        "text_pairs_no_hycd": arm([0.85, 0.86, 0.84], [-2.5] * 3),
        "simcse": arm([0.80, 0.70, 0.75], [-2.0, -2.1, -2.2]),
        "whitenedcse": arm([0.78, 0.74, 0.73], [-1.9, -2.0, -2.1]),  # no better, less uniform
    }
    seconds = {a: [10.0, 11.0, 12.0] for a in values if a != "untuned"}
    body = text_pairs.report_body(values, seconds, ["--seeds", "0,1,2"])
    rows = [line for line in body.splitlines() if line.startswith("| Issue") or "WhitenedCSE" in line or "HyCD" in line]
    assert "**reproduced**" in rows[0] and "**reproduced**" in rows[1]
    assert "**against**" in rows[2]  # uniformity higher on every seed: the paired interval lies above 0
    assert "| text_pairs | 0.9150 ± 0.0050 |" in body
