"""Report sections added for the suite (linear probe, benchmark sets, recall curve) and --compare."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from contrastkit.evaluate.compare import compare_reports, find_report, format_comparison, load_report
from contrastkit.evaluate.report import write_report


def _results(acc=0.5, gap=0.8):
    return {
        "dataset": "toy",
        "split": "test",
        "n_images": 4,
        "model": {"name": "open_clip:ViT-X", "pretrained": "w.safetensors", "logit_scale": 100.0},
        "zeroshot": {
            "shape": {
                "acc1": acc,
                "acc5": math.nan,
                "mean_per_class_recall": acc,
                "per_class_recall": {"a": 1.0, "b": 0.0},
                "confusion_matrix": [[1, 0], [1, 0]],
                "classnames": ["a", "b"],
                "n_samples": 2,
                "n_classes": 2,
            }
        },
        "retrieval": {
            "image_retrieval_recall@1": 0.25,
            "text_retrieval_recall@1": 0.5,
            "n_images": 4,
            "recall_curve": {"k": [1, 2, 4], "image_retrieval": [0.25, 0.5, 1.0], "text_retrieval": [0.5, 0.75, 1.0]},
        },
        "linear_probe": {
            "shape": {
                "full": {"acc1": 0.75, "acc5": math.nan, "mean_per_class_recall": 0.7, "C": 3.16, "n_train": 40},
                "5-shot": {"acc1": 0.5, "acc5": math.nan, "mean_per_class_recall": 0.5, "C": 1e-4, "n_train": 10},
            }
        },
        "compositional_benchmarks": {
            "sugarcrepe": {
                "accuracy": {"add_att": 0.8, "swap_obj": 0.6},
                "n_pairs": {"add_att": 5, "swap_obj": 5},
                "macro_accuracy": 0.7,
                "micro_accuracy": 0.7,
                "n_pairs_total": 10,
            }
        },
        "geometry": {"modality_gap": gap, "hardness_top1": 0.3, "n_pairs": 4},
    }


def test_report_renders_the_new_sections_and_the_recall_curve(tmp_path):
    rep = write_report(tmp_path, _results())
    assert rep["plots"]["recall_at_k"] == "recall_at_k.png" and (tmp_path / "recall_at_k.png").stat().st_size > 5000
    assert rep["plots"]["per_class/shape"] == "per_class_shape.png"
    md = (tmp_path / "report.md").read_text()
    assert "model: **open_clip:ViT-X** · pretrained: `w.safetensors`" in md
    assert "## Linear probe" in md and "| shape | 5-shot | 10 | 0.0001 | 50.00 | — | 50.00 |" in md
    assert "### sugarcrepe" in md and "| add_att | 5 | 80.00 |" in md
    assert "](recall_at_k.png)" in md and "share of the negative gradient" in md
    assert "## Other results" not in md  # every key has a section
    quiet = write_report(tmp_path / "quiet", _results(), plots=False)
    assert quiet["plots"] == {} and not list((tmp_path / "quiet").glob("*.png"))


def test_compare_two_reports_side_by_side(tmp_path):
    write_report(tmp_path / "a", _results(acc=0.5, gap=0.8), plots=False)
    b = _results(acc=0.75, gap=0.6)
    b["geometry"]["tolerance_image"] = 0.9  # only in B
    write_report(tmp_path / "b", b, plots=False)
    ra, rb = load_report(tmp_path / "a"), load_report(tmp_path / "b" / "report.json")
    rows = {k: (va, vb, d) for k, va, vb, d in compare_reports(ra, rb)}
    assert rows["zeroshot.shape.acc1"] == (0.5, 0.75, 0.25)
    assert rows["geometry.modality_gap"][2] == pytest.approx(-0.2)
    assert rows["geometry.tolerance_image"] == (None, 0.9, None)
    assert math.isnan(rows["zeroshot.shape.acc5"][0]) and rows["zeroshot.shape.acc5"][2] is None
    assert rows["linear_probe.shape.5-shot.acc1"] == (0.5, 0.5, 0.0)
    assert "zeroshot.shape.per_class_recall.a" not in rows and "retrieval.n_images" not in rows
    assert "zeroshot.shape.per_class_recall.a" in {r[0] for r in compare_reports(ra, rb, detail=True)}
    text = format_comparison(ra, rb)
    assert "open_clip:ViT-X" in text and "+0.2500" in text and "-0.2000" in text
    assert format_comparison(ra, rb, markdown=True).count("\n| ") >= 10


def test_find_report_in_a_run_directory_prefers_its_own_then_the_newest_eval(tmp_path):
    run = tmp_path / "run"
    for name in ("eval-val", "eval-test"):
        (run / name).mkdir(parents=True)
        (run / name / "report.json").write_text(json.dumps({"split": name}))
    old = time.time() - 100
    os.utime(run / "eval-val" / "report.json", (old, old))
    assert find_report(run) == run / "eval-test" / "report.json"
    (run / "report.json").write_text("{}")
    assert find_report(run) == run / "report.json"
    with pytest.raises(FileNotFoundError, match="no report.json"):
        find_report(tmp_path / "nothing")
