"""contrastkit train: train a dual encoder from a YAML recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML recipe",
        description="Train a dual encoder from a YAML recipe; writes checkpoints, metrics.jsonl "
        "and the report (report.md/json, plots) into the run directory.",
    )
    p.add_argument("config", nargs="?", help="recipe YAML file, e.g. configs/demo.yaml")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value by its dotted key, e.g. --set train.steps=200 (repeatable)",
    )
    p.add_argument("--out", help="run directory (default: runs/<name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import config_from_dict
    from ..engine.recipe import check_recipe, load_recipe
    from ..engine.trainer import train
    from ..models.checkpoint import read_run_config

    if args.resume:
        run_dir = Path(args.resume)
        if args.config or args.set:
            raise ConfigError(
                "--resume continues a run with its own saved config; "
                "drop CONFIG and --set (start a new run to change settings)"
            )
        cfg = config_from_dict(read_run_config(run_dir))
        check_recipe(cfg)
    else:
        if not args.config:
            raise ConfigError("train needs a CONFIG file (e.g. configs/demo.yaml) or --resume RUN_DIR")
        cfg = load_recipe(args.config, args.set or [])
        run_dir = Path(args.out) if args.out else Path("runs") / cfg.name
    if args.no_progress:
        cfg.train.progress = False
    report = train(cfg, run_dir, resume=bool(args.resume))
    print(report.get("markdown_summary", ""))
    print(f"run directory: {run_dir}  (report.md, report.json, *.png, checkpoints/)")
    return 0
