"""Every seed paper's claim on the built-in testbed, over several seeds, with a verdict.

    python benchmarks/recipes.py                        # every claim, seeds 0 1 2 (reuses finished runs)
    python benchmarks/recipes.py --claims NegCLIP,DeGLA --seeds 0,1,2,3,4
    make base; python benchmarks/recipes.py --shard 0/2 & python benchmarks/recipes.py --shard 1/2; wait

Each claim (benchmarks/testbed_claims.py) compares a method arm with a control arm that differs only in
the method, at every seed; runs are cached in --runs-dir (testbed_runs.py: reused when their config is
unchanged, resumed after a kill, trained on the GPU when one is present). The report gives each arm's
mean +- sd, each claim's paired difference with its 95% interval and the verdict (reproduced / against /
within noise, contrastkit.evaluate.verdicts), and goes to benchmarks/RESULTS.md under "Claims on the
testbed". ``--shard i/n`` runs the i-th of n slices of the runs (the base model first: train it with
``make base``, or let shard 0 train it before the other shards start); the process that finds every run
finished writes the report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from contrastkit.evaluate.verdicts import (
    claim_verdict,
    condition_verdict,
    paired_difference,
    summarize,
)
from results_file import command_line, cpu_name, write_section
from testbed_claims import ARMS, CLAIMS, SCHEDULE, TOLERANCE, UNIFORMITY, Claim
from testbed_runs import Arm, RunResult, ensure_run, run_dir_of

SECTION = "Claims on the testbed"


def _arms_for(claims: list[Claim]) -> list[Arm]:
    names = {c.method for c in claims} | {c.control for c in claims}
    if any(n.startswith("temperature_t") for n in names):  # the whole sweep, for its plot
        names |= {n for n in ARMS if n.startswith("temperature_t")}
    arms = [ARMS[n] for n in ARMS if n in names]
    if any(a.start == "base" for a in arms) and "base" not in names:
        arms.insert(0, ARMS["base"])
    return arms


def _select(spec: str) -> list[Claim]:
    if not spec:
        return list(CLAIMS)
    wanted = {s.strip().lower() for s in spec.split(",") if s.strip()}
    chosen = [c for c in CLAIMS if any(w in c.paper.lower() or w in (c.method, c.control) for w in wanted)]
    if not chosen:
        raise SystemExit(f"--claims {spec!r} matches no claim; papers: {', '.join(sorted({c.paper for c in CLAIMS}))}")
    return chosen


def _fmt(values: list[float], pct: bool) -> str:
    s = summarize(values)
    return f"{100 * s.mean:.1f} ± {100 * s.sd:.1f}" if pct else f"{s.mean:.3g} ± {s.sd:.2g}"


def _is_pct(metric: str) -> bool:
    return "/geometry/" not in metric or metric.endswith("linear_separability")


def claim_rows(claims: list[Claim], results: dict[tuple[str, int], RunResult], seeds: list[int]) -> list[str]:
    """One Markdown row per claim condition, and the claim's verdict on its first row."""
    rows = []
    for claim in claims:
        verdicts, lines = [], []
        for cond in claim.conditions:
            method = [results[(claim.method, s)].metrics[cond.metric] for s in seeds]
            control = [results[(claim.control, s)].metrics[cond.metric] for s in seeds]
            diff = paired_difference(method, control)
            verdict = condition_verdict(diff, cond)
            verdicts.append(verdict)
            k = 100 if _is_pct(cond.metric) else 1
            margin = f" (margin {k * cond.margin:g})" if cond.margin else ""
            lines.append(
                [
                    f"`{cond.metric}` {cond.direction}{margin}",
                    _fmt(method, k == 100),
                    _fmt(control, k == 100),
                    f"{k * diff.mean:+.2f} [{k * diff.low:+.2f}, {k * diff.high:+.2f}]",
                    verdict,
                ]
            )
        overall = claim_verdict(verdicts)
        for i, line in enumerate(lines):
            head = [claim.paper, claim.claim, f"{claim.method} vs {claim.control}"] if i == 0 else ["", "", ""]
            rows.append("| " + " | ".join([*head, *line, f"**{overall}**" if i == 0 else ""]) + " |")
    return rows


def arm_rows(arms: list[Arm], results: dict[tuple[str, int], RunResult], seeds: list[int]) -> list[str]:
    keys = [
        "shapes-test/zeroshot/shape",
        "shapes-test/retrieval/image_retrieval_recall@1",
        "shapes-val/compositional/swap_attributes",
        "shapes-val/compositional/swap_objects",
        "shapes-test/geometry/linear_separability",
        "clutter-test/zeroshot/shape",
    ]
    rows = []
    for arm in arms:
        per_seed = [results[(arm.name, s)].metrics for s in seeds]
        cells = [_fmt([m[k] for m in per_seed], True) if k in per_seed[0] else "—" for k in keys]
        seen = f"{int(per_seed[0]['run/samples_seen']):,}"
        wall = summarize([m["run/train_seconds"] for m in per_seed]).mean
        rows.append(f"| {arm.name} | {arm.start} | {seen} | {wall:.0f} | " + " | ".join(cells) + " |")
    return rows


def report(
    claims: list[Claim],
    arms: list[Arm],
    results: dict[tuple[str, int], RunResult],
    seeds: list[int],
    argv: list[str] | None,
    wall_minutes: float,
) -> str:
    counts = {v: 0 for v in ("reproduced", "against", "within noise")}
    rows = claim_rows(claims, results, seeds)
    for row in rows:
        for verdict in counts:
            if f"**{verdict}**" in row:
                counts[verdict] += 1
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    return (
        "\n".join(
            [
                *_header(claims, seeds, argv, wall_minutes, summary),
                "Each row: the metric the claim is about, the method's and the control's mean ± sd over the seeds "
                "(accuracies in %), the paired difference method - control with its 95% t-interval, the verdict of "
                "that condition, and on the claim's first row the claim's verdict (all conditions reproduced -> "
                "reproduced; any against -> against).",
                "",
                "| paper | claim | arms | condition | method | control | difference [95% CI] | verdict | claim |",
                "|---|---|---|---|---|---|---|---|---|",
                *rows,
                "",
                "Arms (mean ± sd over the seeds; samples seen = steps x batch; train s = training wall time):",
                "",
                "| arm | start | samples seen | train s | zs shape (held-out) | T→I R@1 | swap attr (seen) | "
                "swap obj (seen) | lin. sep. | zs shape (clutter) |",
                "|---|---|---|---|---|---|---|---|---|---|",
                *arm_rows(arms, results, seeds),
                "",
                _captioning_line(arms, results, seeds),
            ]
        ).rstrip()
        + "\n"
    )


def _header(
    claims: list[Claim], seeds: list[int], argv: list[str] | None, wall_minutes: float, summary: str
) -> list[str]:
    return [
        f"Command: `{command_line('recipes.py', argv).strip()}` ({time.strftime('%Y-%m-%d')}; "
        f"CPU: {cpu_name()}; seeds {', '.join(map(str, seeds))}; "
        f"{wall_minutes:.0f} min for the runs this call made). {len(claims)} claims: **{summary}**.",
        "",
    ]


def _captioning_line(arms: list[Arm], results: dict[tuple[str, int], RunResult], seeds: list[int]) -> str:
    """CoCa's captioning scores, when a captioning arm ran."""
    scored = [results[(a.name, s)].metrics for a in arms for s in seeds]
    scored = [m for m in scored if "shapes-captions/captioning/cider" in m]
    if not scored:
        return ""
    return (
        "CoCa's greedy captions of the held-out test images (pycocoevalcap): BLEU-4 "
        f"{_fmt([m['shapes-captions/captioning/bleu4'] for m in scored], True)}, CIDEr-D "
        f"{_fmt([m['shapes-captions/captioning/cider'] for m in scored], False)}."
    )


def temperature_plot(results: dict[tuple[str, int], RunResult], seeds: list[int], path: Path) -> Path | None:
    """Uniformity and tolerance of the image embeddings against the fixed logit scale t (mean ± sd over seeds)."""
    sweep = sorted((float(a.split("_t")[1]), a) for a, _ in results if a.startswith("temperature_t"))
    sweep = list(dict.fromkeys(sweep))
    if len(sweep) < 2:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3))
    for ax, key, label in zip(
        fig.subplots(1, 2),
        (UNIFORMITY, TOLERANCE),
        ("uniformity (lower = more uniform)", "tolerance (same-class cosine)"),
    ):
        stats = [summarize([results[(arm, s)].metrics[key] for s in seeds]) for _, arm in sweep]
        ax.errorbar([t for t, _ in sweep], [s.mean for s in stats], yerr=[s.sd for s in stats], marker="o", capsize=3)
        ax.set_xscale("log")
        ax.set_xlabel("fixed logit scale t = 1/tau")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", default="", help="comma-separated papers or arm names (default: every claim)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, paired across arms (default 0,1,2)")
    parser.add_argument("--runs-dir", default="runs/testbed", help="where runs are cached")
    parser.add_argument("--shard", default="0/1", help="i/n: run the i-th of n slices of the runs")
    parser.add_argument(
        "--reuse",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reuse finished runs with an unchanged config and resume killed ones (default: on)",
    )
    parser.add_argument("--max-records", type=int, default=1000, help="records per evaluation set")
    parser.add_argument("--results", default="benchmarks/RESULTS.md", help="results file to update ('' to skip)")
    parser.add_argument("--base", action="store_true", help="only train and evaluate the base model (make base)")
    args = parser.parse_args(argv)
    if args.base:
        ensure_run(ARMS["base"], 0, Path(args.runs_dir), SCHEDULE, args.max_records, reuse=args.reuse)
        return 0
    seeds = [int(s) for s in args.seeds.split(",")]
    index, count = (int(x) for x in args.shard.split("/"))
    claims = _select(args.claims)
    arms = _arms_for(claims)
    runs_dir = Path(args.runs_dir)
    plan = [(arm, seed) for arm in arms for seed in (seeds[:1] if arm.start == "own" else seeds)]
    started = time.perf_counter()
    results: dict[tuple[str, int], RunResult] = {}
    for k, (arm, seed) in enumerate(plan):
        mine = index == 0 if arm.start == "own" else k % count == index  # shard 0 trains the base
        if arm.start == "base" and not (run_dir_of(ARMS["base"], 0, runs_dir) / "report.json").exists():
            raise SystemExit("the base model is missing: train it first (make base, or this script with --shard 0/n)")
        if mine or (run_dir_of(arm, seed, runs_dir) / "report.json").exists():
            results[(arm.name, seed)] = ensure_run(arm, seed, runs_dir, SCHEDULE, args.max_records, reuse=args.reuse)
    for arm in arms:
        if arm.start == "own":
            for seed in seeds:
                results[(arm.name, seed)] = results[(arm.name, seeds[0])]
    missing = [f"{a.name}-s{s}" for a in arms for s in seeds if (a.name, s) not in results]
    if missing:
        print(f"shard {args.shard} done; waiting for other shards: {', '.join(missing)}")
        return 0
    text = report(claims, arms, results, seeds, argv, (time.perf_counter() - started) / 60)
    if args.results:
        plot = temperature_plot(results, seeds, Path(args.results).parent / "temperature_sweep.png")
        if plot is not None:
            text += f"\n![uniformity and tolerance against the fixed logit scale t]({plot.name})\n"
    print(text)
    if args.results:
        write_section(args.results, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
