"""``contrastkit adapt prompt``: prompt learning (CoOp, CoCoOp, TOMM-style, GOPro) over shots and seeds."""

from __future__ import annotations

import argparse
from pathlib import Path

from .arg_types import ints, numbers
from .data_settings import add_data_settings, data_overrides


def add_prompt(methods: argparse._SubParsersAction) -> None:
    p = methods.add_parser(
        "prompt",
        help="learn prompt context for a frozen model (CoOp, CoCoOp, TOMM-style, GOPro); base-to-new or k-shot",
        description="For every method, k and seed: draw k shots per class from the train split, learn the prompt "
        "context with the model frozen, save it (prompts/*.safetensors) and score it on the test split. "
        "--protocol base-to-new trains on the first half of the classes and reports base, new and their harmonic "
        "mean; --protocol all trains and scores on every class. Writes prompts.jsonl (rerun to continue), "
        "report.md/json and prompts.png.",
    )
    p.add_argument("run", metavar="RUN_DIR", help="the trained run to adapt")
    p.add_argument(
        "--data", default="synthetic:shapes", metavar="SPEC", help="labelled data (default synthetic:shapes)"
    )
    p.add_argument("--task", default="shape", help="the data's classification task (default: shape)")
    p.add_argument("--methods", default="coop,cocoop,tomm,gopro", help="comma-separated (default: all four)")
    p.add_argument("--protocol", default="base-to-new", choices=("base-to-new", "all"), help="default base-to-new")
    p.add_argument("--shots", type=ints, default=[16], help="shots per class, comma-separated (default 16)")
    p.add_argument("--seeds", type=ints, default=[0, 1, 2], help="seeds of the shot draws and inits (default 0,1,2)")
    p.add_argument("--classnames", metavar="FILE", help="the task's class names, one per line in class order")
    p.add_argument("--n-ctx", type=int, default=4, help="context vectors M (default 4)")
    p.add_argument("--class-position", default="end", choices=("end", "middle", "front"), help="class token (end)")
    p.add_argument(
        "--ctx-init", default="a photo of a", help="words the context starts from ('' for N(0, 0.02²); default "
        "'a photo of a')"
    )  # fmt: skip
    p.add_argument("--class-specific", action="store_true", help="CoOp: one context per class")
    p.add_argument("--steps", type=int, default=200, help="Adam steps per learner (default 200)")
    p.add_argument("--lr", type=float, default=0.003, help="Adam learning rate, cosine decay (default 0.003)")
    p.add_argument("--batch-size", type=int, default=32, help="shots per step (default 32)")
    p.add_argument("--views", type=int, default=4, help="augmented views per shot for GOPro (default 4)")
    p.add_argument("--view-augment", default="shapes_safe", help="augmentation preset of the views (shapes_safe)")
    p.add_argument("--max-records", type=int, default=1000, help="images of the task scored (default 1000)")
    p.add_argument(
        "--eval-split", default="test", help="split scored (default test; the shapes world's val split holds the "
        "training combinations, its test split held-out ones)"
    )  # fmt: skip
    p.add_argument(
        "--select-on", metavar="SPLIT", help="choose each method's --lr and --steps from the grids below by H (or "
        "accuracy) on this split at the first seed, then score every seed on --eval-split with them"
    )  # fmt: skip
    p.add_argument("--lr-grid", type=numbers, default=[1e-3, 3e-3, 1e-2], help="with --select-on (1e-3,3e-3,1e-2)")
    p.add_argument("--steps-grid", type=ints, default=[100, 200, 400], help="with --select-on (100,200,400)")
    add_data_settings(p, "data settings over the run's")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_prompt)


def run_prompt(args: argparse.Namespace) -> int:
    from ..adapt.prompt_run import PromptRequest, run_prompts
    from ..adapt.prompt_selection import Selection
    from ..adapt.prompt_training import PromptSettings

    for name in ("max_records", "steps", "batch_size", "n_ctx"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.lr <= 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    settings = PromptSettings(
        n_ctx=args.n_ctx,
        position=args.class_position,
        ctx_init=args.ctx_init or None,
        class_specific=args.class_specific,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
    )
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    request = PromptRequest(
        args.run, args.data, args.task, methods, args.shots, args.seeds, protocol=args.protocol,
        max_records=args.max_records, eval_split=args.eval_split, settings=settings, views=args.views,
        view_augment=args.view_augment, classnames=args.classnames,
    )  # fmt: skip
    selection = Selection(args.select_on, tuple(args.lr_grid), tuple(args.steps_grid)) if args.select_on else None
    run_prompts(
        request,
        Path(args.out),
        data_overrides=data_overrides(args.set),
        progress=not args.no_progress,
        selection=selection,
    )
    print((Path(args.out) / "report.md").read_text())
    return 0
