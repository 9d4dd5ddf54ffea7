"""contrastkit data: tools for data sources (export, ...)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data tools", description="Data tools.")
    dsub = p.add_subparsers(dest="data_command", required=True)
    e = dsub.add_parser("export", help="write a source's images and captions to a folder",
                        description="Write images (PNG) and captions.csv (captions, hard negatives, tags) "
                                    "so a person can look at a data source.")
    e.add_argument("spec", help="data spec, e.g. synthetic:shapes")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--split", default="train", choices=["train", "val", "test"], help="split to export")
    e.add_argument("--limit", type=int, default=200, help="export at most this many records (0: all)")
    e.add_argument("--seed", type=int, default=0, help="world seed of the synthetic source")
    e.set_defaults(func=export)


def export(args: argparse.Namespace) -> int:
    from ..config import DataConfig
    from ..data.export import export_dataset
    from ..data.sources import open_source

    cfg = DataConfig(source=args.spec, seed=args.seed)
    dataset = open_source(args.spec, args.split, cfg)
    path = export_dataset(dataset, Path(args.out), limit=args.limit or None)
    print(f"exported {min(len(dataset), args.limit or len(dataset))} records of {args.spec} ({args.split}) "
          f"to {path}")
    return 0
