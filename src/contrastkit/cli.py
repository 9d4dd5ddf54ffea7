"""The contrastkit command line.

    contrastkit train CONFIG [--set key=value]... [--out DIR] [--resume RUN_DIR]
    contrastkit eval --checkpoint RUN_DIR [--data SPEC] [--split test] [--out DIR]
    contrastkit embed --checkpoint RUN_DIR (--images PATH... | --texts FILE) --out FILE.npy
    contrastkit data export SPEC --out DIR [--split train] [--limit N]
    contrastkit objectives
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .config import ConfigError


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import config_from_dict, load_config
    from .engine.trainer import train
    from .models.checkpoint import read_run_config

    if args.resume:
        run_dir = Path(args.resume)
        if args.config or args.set:
            raise ConfigError("--resume continues a run with its own saved config; "
                              "drop CONFIG and --set (start a new run to change settings)")
        cfg = config_from_dict(read_run_config(run_dir))
    else:
        if not args.config:
            raise ConfigError("train needs a CONFIG file (e.g. configs/demo.yaml) or --resume RUN_DIR")
        cfg = load_config(args.config, args.set or [])
        run_dir = Path(args.out) if args.out else Path("runs") / cfg.name
    if args.no_progress:
        cfg.train.progress = False
    report = train(cfg, run_dir, resume=bool(args.resume))
    print(report["markdown_summary"] if "markdown_summary" in report else "")
    print(f"run directory: {run_dir}  (report.md, report.json, *.png, checkpoints/)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .data.sources import open_source
    from .engine.evaluation import evaluate_model
    from .models.load import load_run

    model, cfg, _ = load_run(args.checkpoint)
    spec = args.data or cfg.data.source
    dataset = open_source(spec, args.split, cfg.data)
    out = Path(args.out) if args.out else Path(args.checkpoint) / f"eval-{args.split}"
    result = evaluate_model(model, dataset, cfg, max_records=args.max_records or None, progress=not args.no_progress)
    report = result.write(out, config=cfg.to_dict(), timing=None, metrics_log=None)
    print(report.get("markdown_summary", ""))
    print(f"evaluation written to {out}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from .models.embedder import ModelEmbedder
    from .models.load import load_run

    model, _, _ = load_run(args.checkpoint)
    embedder = ModelEmbedder(model, batch_size=args.batch_size)
    if args.images:
        images = []
        for path in args.images:
            if not Path(path).exists():
                raise FileNotFoundError(f"--images: {path} does not exist")
            with Image.open(path) as img:
                images.append(img.convert("RGB"))
        emb = embedder.embed_images(images)
    else:
        path = Path(args.texts)
        if not path.exists():
            raise FileNotFoundError(f"--texts: {path} does not exist")
        texts = [line for line in path.read_text(encoding="utf-8").splitlines()]
        empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"--texts: {path} has empty lines ({', '.join(map(str, empty[:5]))}); "
                             "one caption per line, no blank lines")
        emb = embedder.embed_texts(texts)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, emb.numpy())
    print(f"wrote {tuple(emb.shape)} embeddings to {out}")
    return 0


def _cmd_data_export(args: argparse.Namespace) -> int:
    from .config import DataConfig
    from .data.export import export_dataset
    from .data.sources import open_source

    cfg = DataConfig(source=args.spec, seed=args.seed)
    dataset = open_source(args.spec, args.split, cfg)
    path = export_dataset(dataset, Path(args.out), limit=args.limit or None)
    print(f"exported {min(len(dataset), args.limit or len(dataset))} records of {args.spec} ({args.split}) "
          f"to {path}")
    return 0


def _cmd_objectives(args: argparse.Namespace) -> int:
    from .objectives import TERMS, term_parameters

    for name in TERMS.names():
        cls = TERMS.get(name)
        params = ", ".join(f"{k}={v!r}" for k, v in term_parameters(name).items()) or "-"
        needs = ", ".join(["image", "text", "logit_scale", *cls.requires])
        extra = []
        if cls.needs_teacher:
            extra.append("EMA teacher")
        if cls.needs_reference:
            extra.append("frozen reference model")
        print(f"{name}\n    {cls.description}\n    parameters: {params}\n    needs: {needs}"
              + (f" + {', '.join(extra)}" if extra else ""))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contrastkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML recipe",
                       description="Train a dual encoder from a YAML recipe; writes checkpoints, metrics.jsonl "
                                   "and the report (report.md/json, plots) into the run directory.")
    p.add_argument("config", nargs="?", help="recipe YAML file, e.g. configs/demo.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value by its dotted key, e.g. --set train.steps=200 (repeatable)")
    p.add_argument("--out", help="run directory (default: runs/<name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained model",
                       description="Zero-shot, retrieval, compositional and geometry metrics of a run's latest "
                                   "checkpoint on a dataset split; writes report.md/json and plots.")
    p.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="run directory of a trained model")
    p.add_argument("--data", metavar="SPEC", help="data spec (default: the run's training source)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to evaluate")
    p.add_argument("--max-records", type=int, default=0, help="evaluate at most this many records (0: all)")
    p.add_argument("--out", help="output directory (default: RUN_DIR/eval-SPLIT)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("embed", help="embed images or texts with a trained model",
                       description="Write L2-normalised embeddings (N x D float32) as a .npy file.")
    p.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="run directory of a trained model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", metavar="PATH", help="image files to embed")
    src.add_argument("--texts", metavar="FILE", help="UTF-8 text file, one caption per line")
    p.add_argument("--out", required=True, metavar="FILE.npy", help="output .npy file")
    p.add_argument("--batch-size", type=int, default=256, help="items per forward pass")
    p.set_defaults(func=_cmd_embed)

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
    e.set_defaults(func=_cmd_data_export)

    p = sub.add_parser("objectives", help="list objective terms, their parameters and inputs",
                       description="List every registered objective term with its description, parameters "
                                   "(defaults) and the inputs it needs.")
    p.set_defaults(func=_cmd_objectives)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"contrastkit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
