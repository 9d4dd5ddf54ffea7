"""contrastkit data: tools for data sources (export, check, convert)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SPEC_HELP = (
    "data spec, e.g. synthetic:shapes, csv:data/train.csv, folder:images/, "
    "wds:shards/{00000..00009}.tar, hf:saved_dataset/ (see contrastkit.data.sources)"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data tools", description="Data tools: look at, check and convert sources.")
    dsub = p.add_subparsers(dest="data_command", required=True)
    e = dsub.add_parser(
        "export",
        help="write a source's images and captions to a folder",
        description="Write images (PNG) and captions.csv (captions, hard negatives, tags) "
        "so a person can look at a data source.",
    )
    e.add_argument("spec", help=SPEC_HELP)
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--split", default="train", choices=["train", "val", "test"], help="split to export")
    e.add_argument("--limit", type=int, default=200, help="export at most this many records (0: all)")
    e.add_argument("--seed", type=int, default=0, help="world seed of the synthetic source")
    e.set_defaults(func=export)

    c = dsub.add_parser(
        "check",
        help="scan a source and list its bad records by reason",
        description="Read every record of a split as training would (images decoded) and print "
        "a table of problems by reason with the first examples. Exits 1 when any "
        "problem is found, 0 otherwise.",
    )
    c.add_argument("spec", help=SPEC_HELP)
    _data_options(c)
    c.add_argument("--limit", type=int, default=0, help="check at most this many records (0: all)")
    c.add_argument("--examples", type=int, default=3, help="examples shown per reason")
    c.add_argument(
        "--context-length",
        type=int,
        default=None,
        help="text context in tokens for the over-long caption check (default: the recipe's "
        "model.context_length, 24 without --config; 0 disables)",
    )
    c.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    c.set_defaults(func=check)

    v = dsub.add_parser(
        "convert",
        help="write a source as webdataset tar shards",
        description="Write splits of any source as webdataset shards (img2dataset layout: "
        "<key>.jpg/png/webp, <key>.txt, <key>.json) plus DIR/dataset.json; the "
        "shards are read back and their sample count checked. Read them with "
        "data.source=wds:DIR.",
    )
    v.add_argument("spec", help=SPEC_HELP)
    _data_options(v, split_choices=True)
    v.add_argument("--out", required=True, help="output folder for the shards and dataset.json")
    v.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    v.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    v.set_defaults(func=convert)


def _data_options(p: argparse.ArgumentParser, split_choices: bool = False) -> None:
    if split_choices:
        p.add_argument("--splits", default="train", help="comma-separated splits to convert (default: train)")
    else:
        p.add_argument("--split", default="train", choices=["train", "val", "test"], help="split to read")
    p.add_argument("--config", help="recipe YAML whose data section (columns, splits, on_error) applies")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="data setting, e.g. --set caption_columns=title or data.on_error=skip (repeatable)",
    )


def _load(args: argparse.Namespace):
    from ..config import load_config

    sets = [s if s.split("=", 1)[0].count(".") else f"data.{s}" for s in args.set]
    return load_config(args.config, [*sets, f"data.source={args.spec}"])


def export(args: argparse.Namespace) -> int:
    from ..config import DataConfig
    from ..data.export import export_dataset
    from ..data.sources import open_source

    cfg = DataConfig(source=args.spec, seed=args.seed)
    dataset = open_source(args.spec, args.split, cfg)
    path = export_dataset(dataset, Path(args.out), limit=args.limit or None)
    print(f"exported {min(len(dataset), args.limit or len(dataset))} records of {args.spec} ({args.split}) to {path}")
    return 0


def check(args: argparse.Namespace) -> int:
    from ..data.check import check_source
    from ..data.sources import open_source

    cfg = _load(args)
    cfg.data.on_error = "skip"  # a scan lists every problem instead of stopping at the first
    context = cfg.model.context_length if args.context_length is None else args.context_length
    dataset = open_source(args.spec, args.split, cfg.data, raw=True)
    report = check_source(
        dataset, context_length=context, limit=args.limit or None, examples=args.examples, progress=not args.no_progress
    )
    print(report.table())
    return 0 if report.ok else 1


def convert(args: argparse.Namespace) -> int:
    from ..data.convert import CountMismatch
    from ..data.convert import convert as convert_source

    cfg = _load(args)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    bad = [s for s in splits if s not in ("train", "val", "test")]
    if bad:
        print(
            f"contrastkit data convert: unknown split(s) {', '.join(bad)}; choose from train, val, test",
            file=sys.stderr,
        )
        return 2
    try:
        results = convert_source(args.spec, args.out, cfg.data, splits, args.shard_size, progress=not args.no_progress)
    except CountMismatch as err:
        print(f"contrastkit data convert: count check failed: {err}", file=sys.stderr)
        return 1
    for r in results:
        skipped = f", skipped {dict(r.skipped)}" if r.skipped else ""
        print(
            f"{r.split}: wrote {r.written} samples in {len(r.shards)} shards, read back {r.read_back} "
            f"(count check passed){skipped}"
        )
    print(f"read them with: --set data.source=wds:{args.out}")
    return 0
