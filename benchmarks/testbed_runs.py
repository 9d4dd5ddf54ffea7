"""The testbed's runs: one arm (a recipe with its overrides) at one seed, trained once, evaluated, cached.

A run lives in ``RUNS/<arm>-s<seed>/``. Its ``testbed.json`` holds the full config it was made with;
a later call reuses the run when the config is the same (``reuse``), resumes it from its latest
checkpoint when training was killed, and otherwise trains it anew. After training every run is
evaluated on the testbed's evaluation sets (the plain world's held-out test split and its seen-
combination val split, the shifted domain's test split); each evaluation is written to
``RUNS/<arm>-s<seed>/eval-<name>/`` and read back on reuse.

Metrics are flat keys ``<evaluation>/<task>/<name>``: ``shapes-test/zeroshot/shape``,
``shapes-val/compositional/swap_attributes``, ``clutter-test/geometry/linear_separability``,
``shapes-test/retrieval/image_retrieval_recall@1``; plus ``run/train_seconds`` and
``run/samples_seen``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contrastkit.config import Config, config_from_dict
from contrastkit.data.sources import open_source
from contrastkit.engine.recipe import load_recipe
from contrastkit.engine.trainer import train
from contrastkit.evaluate.captioning import evaluate_captioning
from contrastkit.evaluate.request import DEFAULT_TASKS, EvalRequest
from contrastkit.evaluate.result_files import write_suite
from contrastkit.evaluate.suite import run_suite
from contrastkit.models.checkpoint import latest_checkpoint, load_module
from contrastkit.models.load import load_run, load_run_model
from contrastkit.objectives import build

EVALUATIONS: dict[str, tuple[str, str]] = {  # name -> (data spec, split)
    "shapes-test": ("synthetic:shapes", "test"),  # held-out shape-colour combinations
    "shapes-val": ("synthetic:shapes", "val"),  # seen combinations, scenes not trained on
    "clutter-test": ("synthetic:shapes-clutter", "test"),  # the shifted domain
    "shapes-captions": ("synthetic:shapes", "test"),  # greedy captions of a caption decoder (CoCa)
    "shapes-dense": ("synthetic:shapes", "test"),  # the dense probe on frozen cells (probe trained on train)
}
EVALUATION_TASKS: dict[str, tuple[str, ...]] = {"shapes-dense": ("dense",)}  # others: the suite's defaults


@dataclass(frozen=True)
class Arm:
    """A recipe as the testbed runs it.

    ``start``: ``scratch`` (the testbed's from-scratch schedule), ``base`` (fine-tunes the base model on
    the fine-tuning schedule) or ``own`` (the recipe's own schedule, run once and shared by every seed:
    the base model). ``steps_factor`` scales the schedule's steps (equal-compute comparisons).
    """

    name: str
    config: str
    overrides: tuple[str, ...] = ()
    start: str = "scratch"
    steps_factor: float = 1.0
    evaluations: tuple[str, ...] = ("shapes-test", "shapes-val")


@dataclass(frozen=True)
class Schedule:
    """The settings every arm shares (``common``) and the two training schedules."""

    common: tuple[str, ...]
    scratch_steps: int
    scratch: tuple[str, ...]
    finetune_steps: int
    finetune: tuple[str, ...]


@dataclass
class RunResult:
    arm: str
    seed: int
    metrics: dict[str, float] = field(default_factory=dict)


def arm_config(arm: Arm, seed: int, schedule: Schedule, base_dir: Path) -> Config:
    """The full config of ``arm`` at ``seed``: the recipe, the testbed's common settings and schedule, the arm's own."""
    if arm.start == "own":
        return load_recipe(arm.config, [*schedule.common, *arm.overrides, "train.progress=false"])
    if arm.start == "base":
        steps, plan = schedule.finetune_steps, [*schedule.finetune, f"model.init_from={base_dir}"]
    else:
        steps, plan = schedule.scratch_steps, [*schedule.scratch, "model.init_from=null"]
    steps = max(1, round(steps * arm.steps_factor))
    overrides = [
        *schedule.common,
        *plan,
        *arm.overrides,
        f"train.steps={steps}",
        f"train.seed={seed}",
        "train.progress=false",
    ]
    return load_recipe(arm.config, overrides)


def _comparable(cfg: Config) -> dict[str, Any]:
    out = cfg.to_dict()
    out["train"].pop("progress", None)
    out["train"].pop("device", None)  # a run made on a GPU stands for the same run on a CPU
    out["model"].pop("logit_bias_init", None)  # filled in from the objective when the run starts
    return out


def _same_config(run_dir: Path, cfg: Config) -> bool:
    marker = run_dir / "testbed.json"
    if not marker.exists():
        return False
    return _comparable(config_from_dict(json.loads(marker.read_text()))) == _comparable(cfg)


def _flatten(prefix: str, results: dict[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for task, metrics in (results.get("zeroshot") or {}).items():
        flat[f"{prefix}/zeroshot/{task}"] = float(metrics["acc1"])
    for key, value in (results.get("retrieval") or {}).items():
        if isinstance(value, (int, float)):
            flat[f"{prefix}/retrieval/{key}"] = float(value)
    for key, value in ((results.get("compositional") or {}).get("accuracy") or {}).items():
        flat[f"{prefix}/compositional/{key}"] = float(value)
    for key, value in (results.get("geometry") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}/geometry/{key}"] = float(value)
    for attribute, metrics in (results.get("dense") or {}).items():
        if isinstance(metrics, dict) and "miou" in metrics:
            for key in ("miou", "object_cell_acc", "open_vocab_object_cell_acc"):
                flat[f"{prefix}/dense/{attribute}_{key}"] = float(metrics[key])
    return flat


def _captioning(run_dir: Path, cfg: Config, records_wanted: int, out: Path) -> None:
    """BLEU-4 / CIDEr of the run's caption decoder on the plain world's test images (report.json)."""
    model, _ = load_run(run_dir)
    objective = build(cfg.objective)
    load_module(objective, latest_checkpoint(run_dir) / "objective.safetensors")
    data = open_source("synthetic:shapes", "test", cfg.data)
    records = [data[i] for i in range(min(records_wanted, len(data)))]
    out.mkdir(parents=True, exist_ok=True)
    result = evaluate_captioning(model, objective, records, batch_size=cfg.eval.batch_size)
    (out / "report.json").write_text(json.dumps({"captioning": result}, indent=1))


def evaluate_run(run_dir: Path, cfg: Config, name: str, max_records: int, reuse: bool) -> dict[str, float]:
    """Metrics of the run's latest weights on evaluation set ``name`` (read back when already written)."""
    out = run_dir / f"eval-{name}"
    report = out / "report.json"
    if name == "shapes-captions":
        if not (reuse and report.exists()):
            _captioning(run_dir, cfg, max_records, out)
        scores = json.loads(report.read_text())["captioning"]
        return {f"{name}/captioning/{k}": float(scores[k]) for k in ("bleu4", "cider")}
    spec, split = EVALUATIONS[name]
    same_as_training = (spec, split) == (cfg.data.source, cfg.eval.split) and cfg.eval.max_records == max_records
    if same_as_training and name not in EVALUATION_TASKS:
        # the evaluation training ended with (same data, split, records and seed): read it, do not redo it
        return _flatten(name, json.loads((run_dir / "report.json").read_text()))
    if not (reuse and report.exists()):
        model = load_run_model(run_dir)
        req = EvalRequest(
            tasks=EVALUATION_TASKS.get(name, DEFAULT_TASKS),
            data=spec,
            split=split,
            data_config=cfg.data,
            max_records=max_records,
            progress=False,
            seed=cfg.train.seed,
            batch_size=cfg.eval.batch_size,
        )
        write_suite(out, run_suite(model, req), config={"data": spec, "split": split}, plots=False)
    return _flatten(name, json.loads(report.read_text()))


def run_dir_of(arm: Arm, seed: int, runs_dir: Path) -> Path:
    """Where ``arm`` at ``seed`` is written (an ``own``-schedule arm has one run for every seed)."""
    return runs_dir / (arm.name if arm.start == "own" else f"{arm.name}-s{seed}")


def ensure_run(
    arm: Arm, seed: int, runs_dir: Path, schedule: Schedule, max_records: int, reuse: bool = True
) -> RunResult:
    """Train (or reuse, or resume) ``arm`` at ``seed`` and evaluate it; its metrics."""
    base_dir = runs_dir / "base"
    cfg = arm_config(arm, seed, schedule, base_dir)
    run_dir = run_dir_of(arm, seed, runs_dir)
    finished = reuse and _same_config(run_dir, cfg) and (run_dir / "report.json").exists()
    if not finished:
        resume = reuse and _same_config(run_dir, cfg) and _has_checkpoint(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "testbed.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        started = time.perf_counter()
        train(cfg, run_dir, resume=resume)
        print(f"{arm.name} seed {seed}: trained in {time.perf_counter() - started:.0f}s", flush=True)
    report = json.loads((run_dir / "report.json").read_text())
    metrics = {
        "run/train_seconds": float(report["timing"]["train_seconds"]),
        "run/samples_seen": float(cfg.train.steps * cfg.train.batch_size),
    }
    for name in arm.evaluations:
        metrics.update(evaluate_run(run_dir, cfg, name, max_records, reuse and finished))
    return RunResult(arm.name, seed, metrics)


def _has_checkpoint(run_dir: Path) -> bool:
    try:
        latest_checkpoint(run_dir)
    except (FileNotFoundError, ValueError):
        return False
    return True
