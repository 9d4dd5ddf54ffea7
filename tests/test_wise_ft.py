"""WiSE-FT: the interpolation against its formula, the choice of α, and a resumable sweep over two real runs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from contrastkit.adapt import wise_ft_run
from contrastkit.adapt.wise_ft import Point, above_chord, beats_both_ends, choose_alpha, interpolate, zero_shot_accuracy
from contrastkit.adapt.wise_ft_run import default_request, run_sweep
from contrastkit.cli import main
from contrastkit.config import load_config
from contrastkit.data.sources import open_source
from contrastkit.engine.trainer import train
from contrastkit.models.checkpoint import latest_checkpoint
from contrastkit.models.load import load_run
from helpers import TINY_TRAINING


def test_interpolation_follows_the_formula_and_refuses_models_that_do_not_mix():
    gen = torch.Generator().manual_seed(0)
    start = {"w": torch.randn(3, 4, generator=gen), "count": torch.tensor([2, 5])}
    tuned = {"w": torch.randn(3, 4, generator=gen), "count": torch.tensor([2, 5])}
    assert torch.equal(interpolate(start, tuned, 0.0)["w"], start["w"])
    assert torch.equal(interpolate(start, tuned, 1.0)["w"], tuned["w"])
    mixed = interpolate(start, tuned, 0.3)
    assert torch.allclose(mixed["w"], 0.7 * start["w"] + 0.3 * tuned["w"], atol=1e-7)
    assert mixed["w"].dtype == torch.float32 and torch.equal(mixed["count"], start["count"])
    with pytest.raises(ValueError, match="alpha must lie in"):
        interpolate(start, tuned, 1.5)
    with pytest.raises(ValueError, match="w: shape"):
        interpolate(start, {**tuned, "w": torch.zeros(4, 3)}, 0.5)
    with pytest.raises(ValueError, match="different weights \\(extra\\)"):
        interpolate(start, {**tuned, "extra": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match="count: integer tensors differ"):
        interpolate(start, {**tuned, "count": torch.tensor([2, 6])}, 0.5)


def point(alpha: float, source: float, target: float, split: str = "val") -> Point:
    return Point(alpha, split, {"mean": source}, {"mean": target})


def test_alpha_is_chosen_on_the_validation_split_and_the_outward_bend_is_found():
    points = [
        point(0.0, 0.9, 0.3),
        point(0.5, 0.8, 0.7),
        point(1.0, 0.5, 0.8),
        point(0.0, 0.9, 0.3, "test"),
        point(0.5, 0.2, 0.2, "test"),  # the test split never chooses
        point(1.0, 0.5, 0.8, "test"),
    ]
    assert choose_alpha(points, "mean", "mean", "val") == 0.5
    assert choose_alpha(points, "mean", "source", "val") == 0.0
    assert choose_alpha(points, "mean", "target", "val") == 1.0
    assert beats_both_ends(points, "mean", "val") == [0.5]
    assert beats_both_ends(points, "mean", "test") == []
    assert above_chord(points, "mean", "val") == [0.5]  # the chord gives 0.425 at source 0.8
    inward = [point(0.0, 0.9, 0.3), point(0.5, 0.8, 0.4), point(1.0, 0.5, 0.8)]
    assert beats_both_ends(inward, "mean", "val") == [0.5] and above_chord(inward, "mean", "val") == []
    with pytest.raises(ValueError, match="select must be one of"):
        choose_alpha(points, "mean", "best", "val")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A start trained on the shapes world and a model fine-tuned from it on the cluttered domain."""
    root = tmp_path_factory.mktemp("wise")
    tiny = TINY_TRAINING + ["data.train_size=32", "train.steps=3"]
    train(load_config("configs/demo.yaml", tiny), root / "start")
    tuned = tiny + ["data.source=synthetic:shapes-clutter", f"model.init_from={root / 'start'}", "train.lr=0.05"]
    train(load_config("configs/demo.yaml", tuned), root / "tuned")
    return root


def test_a_sweep_writes_the_chosen_model_the_curve_and_resumes_where_it_stopped(runs, tmp_path, monkeypatch):
    out = tmp_path / "wise"
    request = default_request(str(runs / "start"), str(runs / "tuned"), alphas=[0.5], max_records=16)
    assert (request.source, request.target) == ("synthetic:shapes", "synthetic:shapes-clutter")
    report = run_sweep(request, out, progress=False)
    assert sorted({p["alpha"] for p in report["points"]}) == [0.0, 0.5, 1.0]
    assert {p["split"] for p in report["points"]} == {"val", "test"}
    assert (out / "wise_ft.png").stat().st_size > 10_000 and "Chosen α" in (out / "report.md").read_text()

    # the chosen model is θ(α) of the formula, and a run directory the other commands load
    chosen = report["chosen_alpha"]
    start = load_file(str(latest_checkpoint(runs / "start") / "model.safetensors"))
    tuned = load_file(str(latest_checkpoint(runs / "tuned") / "model.safetensors"))
    written = load_file(str(latest_checkpoint(out) / "model.safetensors"))
    key = next(k for k in written if written[k].is_floating_point() and not torch.equal(start[k], tuned[k]))
    assert torch.allclose(written[key], (1 - chosen) * start[key] + chosen * tuned[key], atol=1e-6)
    model, cfg = load_run(out)
    assert torch.equal(model.state_dict()[key], written[key])

    # α = 0 measures the start model itself
    start_model, _ = load_run(runs / "start")
    source_val = open_source("synthetic:shapes", "val", cfg.data)
    at_zero = next(p for p in report["points"] if p["alpha"] == 0.0 and p["split"] == "val")
    assert at_zero["source"] == pytest.approx(zero_shot_accuracy(start_model, source_val, max_records=16))

    # kill after the first lines: a rerun measures only what is missing and ends with the same report
    lines = (out / "sweep.jsonl").read_text().splitlines()
    (out / "sweep.jsonl").write_text("\n".join(lines[:2]) + "\n")
    measured = []
    real = wise_ft_run.zero_shot_accuracy
    monkeypatch.setattr(wise_ft_run, "zero_shot_accuracy", lambda *a, **k: measured.append(1) or real(*a, **k))
    again = run_sweep(
        default_request(str(runs / "start"), str(runs / "tuned"), alphas=[0.5], max_records=16), out, progress=False
    )
    assert len(measured) == 2 * (len(lines) - 2)  # source and target of each missing (α, split)
    assert again["points"] == report["points"] and again["chosen_alpha"] == chosen

    other = default_request(str(runs / "start"), str(runs / "tuned"), alphas=[0.5], max_records=8)
    with pytest.raises(ValueError, match="holds results of other inputs"):
        run_sweep(other, out, progress=False)


def test_the_command_line_names_bad_inputs(runs, tmp_path, capsys):
    base = ["adapt", "wise-ft", "--start", str(runs / "start"), "--finetuned", str(runs / "tuned")]
    assert main([*base, "--out", str(tmp_path / "a"), "--alphas", "0.5,2"]) == 2
    assert "--alphas: every α must lie in [0, 1]" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--metric", "texture", "--max-records", "8"]) == 2
    assert "--metric 'texture'" in capsys.readouterr().err
    assert main(["adapt", "wise-ft", "--start", str(tmp_path), "--finetuned", str(runs / "tuned"), "--out", "x"]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "c"), "--alphas", "0.5", "--max-records", "8", "--no-progress"]) == 0
    assert "chosen alpha" in capsys.readouterr().out
    assert json.loads((tmp_path / "c" / "report.json").read_text())["request"]["alphas"] == [0.0, 0.5, 1.0]
