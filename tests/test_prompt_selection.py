"""Choosing a prompt learner's lr and steps on a split that is not scored: the argmax, ties, resume, refusals,
and a real run whose scored rows use what the other split chose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contrastkit.adapt.prompt_run import PromptRequest, run_prompts
from contrastkit.adapt.prompt_selection import Selection, choose_settings
from contrastkit.adapt.prompt_training import PromptSettings
from contrastkit.cli import main
from helpers import tiny_demo_run

SCORES = {  # (lr, steps) -> H of a made-up learner: best at lr 0.01, 200 steps; two trials tie below it
    (0.001, 100): 0.40, (0.001, 200): 0.50, (0.01, 100): 0.50, (0.01, 200): 0.70,
}  # fmt: skip


def fake_measure(calls: list[tuple[str, int, float, int]]):
    def measure(method: str, k: int, settings: PromptSettings, out: Path) -> dict[str, float]:
        calls.append((method, k, settings.lr, settings.steps))
        score = SCORES[(settings.lr, settings.steps)]
        if method == "cocoop" and (settings.lr, settings.steps) == (0.001, 100):
            score += 0.3  # CoCoOp's best trial is another one
        return {"base": score, "new": score, "harmonic": score}

    return measure


def test_the_best_trial_is_chosen_per_method_and_a_rerun_measures_nothing(tmp_path):
    selection = Selection("val", (0.001, 0.01), (100, 200))
    calls: list[tuple[str, int, float, int]] = []
    spec = {"run": "r", "seed": 0}
    chosen, trials = choose_settings(
        selection, ["coop", "cocoop"], [4], PromptSettings(), tmp_path, spec, fake_measure(calls)
    )
    assert len(calls) == 8 and len(trials) == 8
    assert (chosen[("coop", 4)].lr, chosen[("coop", 4)].steps) == (0.01, 200)
    assert (chosen[("cocoop", 4)].lr, chosen[("cocoop", 4)].steps) == (0.001, 100)  # 0.40 + 0.3 beats 0.70
    assert chosen[("coop", 4)].n_ctx == PromptSettings().n_ctx  # only lr and steps change
    stored = [json.loads(line) for line in (tmp_path / "selection" / "trials.jsonl").read_text().splitlines()]
    assert stored == trials
    again, _ = choose_settings(selection, ["coop"], [4], PromptSettings(), tmp_path, spec, fake_measure(calls))
    assert len(calls) == 8 and again[("coop", 4)] == chosen[("coop", 4)]
    with pytest.raises(ValueError, match="holds results of other inputs"):
        choose_settings(Selection("test", (0.001,), (100,)), ["coop"], [4], PromptSettings(), tmp_path, spec, None)


def test_ties_go_to_the_earlier_trial_of_the_grid(tmp_path):
    calls: list[tuple[str, int, float, int]] = []
    selection = Selection("val", (0.01, 0.001), (100, 200))  # (0.01, 100) and (0.001, 200) both score 0.50
    tied = {**SCORES, (0.01, 200): 0.1}
    chosen, _ = choose_settings(
        selection,
        ["coop"],
        [1],
        PromptSettings(),
        tmp_path,
        {},
        lambda m, k, s, out: calls.append(1) or {"all": tied[(s.lr, s.steps)]},
    )
    assert (chosen[("coop", 1)].lr, chosen[("coop", 1)].steps) == (0.01, 100)


def test_selection_refuses_the_scored_split_and_empty_grids():
    with pytest.raises(ValueError, match="--select-on 'test' is the scored split"):
        Selection("test").check("test")
    with pytest.raises(ValueError, match="--lr-grid"):
        Selection("val", (0.0,)).check("test")
    with pytest.raises(ValueError, match="--steps-grid"):
        Selection("val", (0.01,), ()).check("test")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_demo_run(tmp_path_factory.mktemp("selection"), 300)


def test_a_run_scores_every_seed_with_the_settings_chosen_on_the_other_split(run, tmp_path, capsys):
    settings = PromptSettings(n_ctx=2, ctx_init="a photo", steps=3, batch_size=8)
    request = PromptRequest(
        str(run), "synthetic:shapes", "colour", ["coop"], [2], [0, 1], max_records=40, eval_split="test",
        settings=settings,
    )  # fmt: skip
    selection = Selection("val", (1e-4, 0.05), (2, 4))
    report = run_prompts(request, tmp_path, data_overrides=["data.eval_size=40"], progress=False, selection=selection)
    trials = report["selection"]["trials"]
    assert len(trials) == 4 and report["selection"]["split"] == "val"
    best = max(trials, key=lambda t: t["score"])
    (chosen,) = report["selection"]["chosen"]
    assert (chosen["lr"], chosen["steps"]) in {(t["lr"], t["steps"]) for t in trials if t["score"] == best["score"]}
    coop_rows = [r for r in report["rows"] if r["method"] == "coop"]
    assert len(coop_rows) == 2 and all((r["lr"], r["steps"]) == (chosen["lr"], chosen["steps"]) for r in coop_rows)
    assert (tmp_path / "selection" / f"lr{chosen['lr']:g}-steps{chosen['steps']}" / "prompts").is_dir()
    assert "chosen by 4 trials on the val split (seed 0" in (tmp_path / "report.md").read_text()

    base = ["adapt", "prompt", str(run), "--set", "data.eval_size=40", "--max-records", "40", "--no-progress"]
    assert main([*base, "--select-on", "test", "--out", str(tmp_path / "b")]) == 2
    assert "--select-on 'test' is the scored split" in capsys.readouterr().err
