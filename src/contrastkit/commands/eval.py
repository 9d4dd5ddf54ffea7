"""contrastkit eval: evaluate a trained model on a dataset split."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a trained model",
                       description="Zero-shot, retrieval, compositional and geometry metrics of a run's latest "
                                   "checkpoint on a dataset split; writes report.md/json and plots.")
    p.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="run directory of a trained model")
    p.add_argument("--data", metavar="SPEC", help="data spec (default: the run's training source)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to evaluate")
    p.add_argument("--max-records", type=int, default=0, help="evaluate at most this many records (0: all)")
    p.add_argument("--out", help="output directory (default: RUN_DIR/eval-SPLIT)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.sources import open_source
    from ..engine.evaluation import evaluate_model
    from ..models.load import load_run

    model, cfg, _ = load_run(args.checkpoint)
    spec = args.data or cfg.data.source
    dataset = open_source(spec, args.split, cfg.data)
    out = Path(args.out) if args.out else Path(args.checkpoint) / f"eval-{args.split}"
    result = evaluate_model(model, dataset, cfg, max_records=args.max_records or None, progress=not args.no_progress)
    report = result.write(out, config=cfg.to_dict(), timing=None, metrics_log=None)
    print(report.get("markdown_summary", ""))
    print(f"evaluation written to {out}")
    return 0
