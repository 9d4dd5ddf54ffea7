"""contrastkit adapt: adapt a trained model; one sub-command per method family.

contrastkit adapt wise-ft --start runs/base --finetuned runs/ft --out runs/ft-wise
    [--source synthetic:shapes] [--target synthetic:shapes-clutter] [--alphas 0,0.25,0.5,0.75,1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .data_settings import add_data_settings, data_overrides


def _alphas(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in [0, 1], got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="adapt a trained model (WiSE-FT, the few-shot ladder)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    methods = p.add_subparsers(dest="method", required=True)
    w = methods.add_parser(
        "wise-ft",
        help="weight-space ensembling of a fine-tuned run with its start",
        description="Interpolate θ(α) = (1-α) θ_start + α θ_finetuned for each α, measure zero-shot accuracy on "
        "the source and the target data (validation and test splits), choose α on validation and write that "
        "model as a run directory with report.md/json and wise_ft.png. Rerun with the same arguments to "
        "continue a killed sweep.",
    )
    w.add_argument("--start", required=True, metavar="RUN_DIR", help="run the fine-tuning started from")
    w.add_argument("--finetuned", required=True, metavar="RUN_DIR", help="the fine-tuned run")
    w.add_argument("--out", required=True, metavar="DIR", help="output run directory")
    w.add_argument("--source", metavar="SPEC", help="source data (default: the start run's data.source)")
    w.add_argument("--target", metavar="SPEC", help="target data (default: the fine-tuned run's data.source)")
    w.add_argument(
        "--alphas",
        type=_alphas,
        default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
        help="mixing coefficients, comma-separated (0 and 1 are always included; default: 0,0.1,...,1)",
    )
    w.add_argument("--metric", default="mean", help="zero-shot task that chooses α (default: mean over tasks)")
    w.add_argument(
        "--select",
        choices=("mean", "source", "target"),
        default="mean",
        help="choose α by the source, the target or their mean (default: mean)",
    )
    w.add_argument("--max-records", type=int, default=1000, help="records evaluated per split and data (default 1000)")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    w.set_defaults(func=run_wise_ft)
    f = methods.add_parser(
        "few-shot",
        help="zero-shot head, linear probe and Tip-Adapter at k shots per class, over seeds",
        description="Embed the task's images of the train / val / test splits once; for every k and seed draw k "
        "shots per class from train, choose the probe's C and Tip-Adapter's alpha, beta on val, score on test. "
        "Writes ladder.jsonl (rerun to continue), report.md/json and few_shot.png.",
    )
    f.add_argument("run", metavar="RUN_DIR", help="the trained run to adapt")
    f.add_argument(
        "--data", default="synthetic:shapes", metavar="SPEC", help="labelled data (default synthetic:shapes)"
    )
    f.add_argument("--task", default="shape", help="the data's classification task (default: shape)")
    f.add_argument("--shots", type=_ints, default=[1, 2, 4, 8, 16], help="shots per class (default 1,2,4,8,16)")
    f.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="seeds of the shot draws (default 0,1,2)")
    f.add_argument("--max-records", type=int, default=2000, help="images embedded per split (default 2000)")
    add_data_settings(f, "data settings over the run's")
    f.add_argument("--out", required=True, metavar="DIR", help="output folder")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=run_few_shot)


def run_wise_ft(args: argparse.Namespace) -> int:
    from ..adapt.wise_ft_run import default_request, run_sweep

    if args.max_records <= 0:
        raise ValueError(f"--max-records must be positive, got {args.max_records}")
    request = default_request(
        args.start,
        args.finetuned,
        source=args.source,
        target=args.target,
        alphas=args.alphas,
        metric=args.metric,
        select=args.select,
        max_records=args.max_records,
    )
    report = run_sweep(request, Path(args.out), progress=not args.no_progress)
    curve = {(p["alpha"], p["split"]): p for p in report["points"]}
    chosen = curve[report["chosen_alpha"], request.test_split]
    print(
        f"chosen alpha {report['chosen_alpha']:g}: {request.test_split} zero-shot ({request.metric}) "
        f"source {100 * chosen['source'][request.metric]:.1f}%, target {100 * chosen['target'][request.metric]:.1f}%"
    )
    print(f"report: {Path(args.out) / 'report.md'}, curve: {Path(args.out) / 'wise_ft.png'}")
    return 0


def run_few_shot(args: argparse.Namespace) -> int:
    from ..adapt.few_shot_run import LadderRequest, run_ladder

    if args.max_records <= 0:
        raise ValueError(f"--max-records must be positive, got {args.max_records}")
    request = LadderRequest(args.run, args.data, args.task, args.shots, args.seeds, args.max_records)
    run_ladder(request, Path(args.out), data_overrides=data_overrides(args.set), progress=not args.no_progress)
    print((Path(args.out) / "report.md").read_text())
    return 0
