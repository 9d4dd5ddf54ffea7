"""Choosing a prompt learner's learning rate and step count on a split that is not the scored one.

Few-shot prompt learning is sensitive to both (CoOp's context barely moves at a small lr; many steps
over-fit the base classes), and choosing them on the scored split overstates every method. Here each
(method, k) tries every (lr, steps) of a grid at the first seed and is scored on a separate split
(the shapes worlds' ``val`` or ``test``, whichever is not scored): the harmonic mean H under base-to-new,
accuracy under ``all``. The best trial's settings are then used for every seed on the scored split,
the usual protocol of the prompt-learning literature (hyperparameters from validation, then test).

Trials are appended to ``OUT/selection/trials.jsonl`` as they are measured; a rerun measures only the
missing ones. Ties go to the earlier trial in grid order (smaller lr, then fewer steps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .prompt_training import PromptSettings
from .result_lines import ResultLines


@dataclass(frozen=True)
class Selection:
    """The grid tried per (method, k), and the split that scores it."""

    split: str
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    steps: tuple[int, ...] = (100, 200, 400)

    def check(self, eval_split: str) -> None:
        if self.split == eval_split:
            raise ValueError(
                f"--select-on {self.split!r} is the scored split (--eval-split): choose the learning rate and steps "
                "on another split (the shapes worlds have train, val and test)"
            )
        if not self.lrs or min(self.lrs) <= 0:
            raise ValueError(f"--lr-grid: give positive learning rates, got {list(self.lrs)}")
        if not self.steps or min(self.steps) < 1:
            raise ValueError(f"--steps-grid: give positive step counts, got {list(self.steps)}")


Measure = Callable[[str, int, PromptSettings, Path], Mapping[str, Any]]  # (method, k, settings, out) -> a row


def trial_score(row: Mapping[str, Any]) -> float:
    """What a trial is chosen by: H under base-to-new, accuracy under ``all``."""
    return float(row["harmonic"] if "harmonic" in row else row["all"])


def choose_settings(
    selection: Selection,
    methods: Sequence[str],
    shots: Sequence[int],
    settings: PromptSettings,
    out: Path,
    spec: Mapping[str, Any],
    measure: Measure,
) -> tuple[dict[tuple[str, int], PromptSettings], list[dict[str, Any]]]:
    """The chosen settings per (method, k) and every trial row (method, k, lr, steps, score)."""
    grid = {"split": selection.split, "lrs": list(selection.lrs), "steps": list(selection.steps)}  # as JSON reads back
    lines = ResultLines(out / "selection", "trials.jsonl", {**spec, "selection": grid}, free=("methods", "shots"))
    trials = lines.read()
    done = {(t["method"], t["k"], t["lr"], t["steps"]) for t in trials}
    chosen: dict[tuple[str, int], PromptSettings] = {}
    for method in methods:
        for k in shots:
            for lr in selection.lrs:
                for steps in selection.steps:
                    if (method, k, lr, steps) in done:
                        continue
                    trial_dir = out / "selection" / f"lr{lr:g}-steps{steps}"
                    row = measure(method, k, replace(settings, lr=lr, steps=steps), trial_dir)
                    trial = {"method": method, "k": k, "lr": lr, "steps": steps, "score": trial_score(row)}
                    lines.append(trial)
                    trials.append(trial)
            mine = [t for t in trials if t["method"] == method and t["k"] == k and _in_grid(t, selection)]
            best = max(mine, key=lambda t: (t["score"], -_grid_index(t, selection)))
            chosen[(method, k)] = replace(settings, lr=best["lr"], steps=best["steps"])
    return chosen, [t for t in trials if t["method"] in methods and t["k"] in shots and _in_grid(t, selection)]


def _in_grid(trial: Mapping[str, Any], selection: Selection) -> bool:
    return trial["lr"] in selection.lrs and trial["steps"] in selection.steps


def _grid_index(trial: Mapping[str, Any], selection: Selection) -> int:
    return selection.lrs.index(trial["lr"]) * len(selection.steps) + selection.steps.index(trial["steps"])
