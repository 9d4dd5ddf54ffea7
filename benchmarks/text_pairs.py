"""Text–text claims on the shapes world, over several seeds, with a verdict (issue 14).

    python benchmarks/text_pairs.py                 # seeds 0, 1, 2; finished runs in runs/text are reused
    python benchmarks/text_pairs.py --seeds 0,1,2,3,4 --results ''

Arms (MiniLM, ``hf:minilm``, 40 steps of 32; each run with ``train.seed`` = the seed):

- ``untuned``: the encoder as shipped (evaluated once: it has no seed);
- ``text_pairs``: configs/text_pairs.yaml, supervised SimCSE on the paraphrase pairs + HyCD distillation;
- ``text_pairs_no_hycd``: the same without HyCD (the control of the distillation);
- ``simcse`` / ``whitenedcse``: configs/simcse.yaml / configs/whitenedcse.yaml, unsupervised on single
  captions with dropout views, same steps, batch and learning rate.

Metrics (each run's report): Spearman of cosine with the built-in graded-similarity set (``shapes-sts``),
SimCSE's alignment (pairs of gold >= 4) and uniformity on that set, anisotropy and text-retrieval MRR@10
on the paraphrase pairs' test split. Claims are paired by seed (contrastkit.evaluate.verdicts) and go to
benchmarks/RESULTS.md under "Text pairs on the shapes world".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from contrastkit.engine.recipe import load_recipe
from contrastkit.engine.trainer import train
from contrastkit.evaluate.suite import EvalRequest, run_suite
from contrastkit.evaluate.text_suite import TEXT_TASKS
from contrastkit.evaluate.verdicts import Condition, claim_verdict, condition_verdict, paired_difference, summarize
from contrastkit.models.load import load_model
from results_file import command_line, cpu_name, write_section
from testbed_claims import Claim

SECTION = "Text pairs on the shapes world"
ARMS: dict[str, tuple[str, list[str]]] = {
    "text_pairs": ("configs/text_pairs.yaml", []),
    "text_pairs_no_hycd": ("configs/text_pairs.yaml", ["objective=[{name: simcse}]"]),
    "simcse": ("configs/simcse.yaml", []),
    "whitenedcse": ("configs/whitenedcse.yaml", []),
}
METRICS = {
    "sts": ("sts", "shapes-sts", "spearman_cosine"),
    "alignment": ("sts", "shapes-sts", "alignment"),
    "uniformity": ("sts", "shapes-sts", "uniformity"),
    "anisotropy": ("text_geometry", None, "anisotropy"),
    "mrr@10": ("text_retrieval", None, "cosine_mrr@10"),
}


CLAIMS = (
    Claim(
        "Issue 14 bar (SimCSE + HyCD)",
        "fine-tuning MiniLM on shapes paraphrase pairs raises the built-in STS",
        "text_pairs",
        "untuned",
        (Condition("sts", "higher"),),
    ),
    Claim(
        "CLIP-Refine's HyCD, on text",
        "distilling towards the start keeps graded similarity that contrastive fine-tuning flattens",
        "text_pairs",
        "text_pairs_no_hycd",
        (Condition("sts", "higher"),),
    ),
    Claim(
        "WhitenedCSE",
        "shuffled group whitening beats SimCSE on STS with more uniform embeddings",
        "whitenedcse",
        "simcse",
        (Condition("sts", "higher"), Condition("uniformity", "lower")),
    ),
)


def metric(report: dict[str, Any], name: str) -> float:
    task, key, field = METRICS[name]
    block = report.get(task) or {}
    block = block.get(key, {}) if key else block
    return float(block.get(field, float("nan")))


def run_arm(arm: str, seed: int, runs_dir: Path) -> tuple[dict[str, Any], float]:
    """The report of arm ``arm`` at ``seed`` (trained now, or read back) and its training seconds."""
    out = runs_dir / f"{arm}-s{seed}"
    if not (out / "report.json").exists():
        config, overrides = ARMS[arm]
        cfg = load_recipe(config, [*overrides, f"train.seed={seed}", "train.progress=false"])
        started = time.perf_counter()
        train(cfg, out, resume=False)
        print(f"{arm} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    report = json.loads((out / "report.json").read_text())
    return report, float(report["timing"]["train_seconds"])


def untuned_report(runs_dir: Path) -> dict[str, Any]:
    """MiniLM as shipped, on the same STS set and test split as the fine-tuned arms."""
    path = runs_dir / "untuned.json"
    if not path.exists():
        cfg = load_recipe(ARMS["text_pairs"][0])
        req = EvalRequest(
            tasks=list(TEXT_TASKS), data=cfg.data.source, data_config=cfg.data, split="test", progress=False
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run_suite(load_model("text:hf:minilm"), req).results, default=str))
    return json.loads(path.read_text())


def fmt(values: list[float]) -> str:
    """mean ± sd, or a dash where the arm has no such metric (retrieval on single sentences)."""
    if any(v != v for v in values):
        return "—"
    s = summarize(values)
    return f"{s.mean:.4f} ± {s.sd:.4f}"


def report_body(values: dict[str, dict[str, list[float]]], seconds: dict[str, list[float]], argv: list[str]) -> str:
    seeds = len(next(iter(seconds.values())))
    lines = [
        f"Command: `{command_line('text_pairs.py', argv)}` ({time.strftime('%Y-%m-%d')}; CPU: {cpu_name()}, "
        f"shared with other work: train seconds are not comparable; {seeds} seeds).",
        "",
        "| arm | STS Spearman | alignment | uniformity | anisotropy | MRR@10 (paraphrases) | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, by_metric in values.items():
        cells = [fmt(by_metric[m]) for m in METRICS]
        train_s = f"{summarize(seconds[arm]).mean:.0f}" if arm in seconds else "—"
        lines.append(f"| {arm} | {' | '.join(cells)} | {train_s} |")
    lines += [
        "",
        "| claim | method vs control | condition | difference [95% CI] | verdict | claim |",
        "|---|---|---|---|---|---|",
    ]
    for claim in CLAIMS:
        verdicts = []
        rows = []
        for cond in claim.conditions:
            diff = paired_difference(values[claim.method][cond.metric], values[claim.control][cond.metric])
            verdict = condition_verdict(diff, cond)
            verdicts.append(verdict)
            rows.append((cond, diff, verdict))
        overall = claim_verdict(verdicts)
        for i, (cond, diff, verdict) in enumerate(rows):
            head = f"{claim.paper}: {claim.claim}" if i == 0 else ""
            arms = f"{claim.method} vs {claim.control}" if i == 0 else ""
            interval = f"{diff.mean:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]"
            mark = f"**{overall}**" if i == 0 else ""
            lines.append(f"| {head} | {arms} | {cond.metric} {cond.direction} | {interval} | {verdict} | {mark} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, paired across arms")
    parser.add_argument("--arms", default=",".join(ARMS), help="arms to run (default: all)")
    parser.add_argument("--runs-dir", default="runs/text", help="where runs are cached")
    parser.add_argument("--results", default="benchmarks/RESULTS.md", help="results file ('' to skip)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs_dir = Path(args.runs_dir)
    base = untuned_report(runs_dir)
    values: dict[str, dict[str, list[float]]] = {"untuned": {m: [metric(base, m)] * len(seeds) for m in METRICS}}
    seconds: dict[str, list[float]] = {}
    for arm in [a for a in args.arms.split(",") if a]:
        if arm not in ARMS:
            raise SystemExit(f"--arms: unknown arm {arm!r}; known: {', '.join(ARMS)}")
        reports = [run_arm(arm, seed, runs_dir) for seed in seeds]
        values[arm] = {m: [metric(r, m) for r, _ in reports] for m in METRICS}
        seconds[arm] = [s for _, s in reports]
    body = report_body(values, seconds, sys.argv[1:] if argv is None else argv)
    print(body)
    if args.results and set(ARMS) <= set(values):
        write_section(args.results, SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
