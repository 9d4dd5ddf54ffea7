"""contrastkit eval: evaluate any model contrastkit can load, or compare two evaluations.

    contrastkit eval --checkpoint RUN_DIR [--split test]
    contrastkit eval --model open_clip:ViT-B-32 --pretrained vit_b32.safetensors \\
        --task zeroshot --data /data/imagenet/val --classnames imagenet_classes.txt --templates openai_imagenet
    contrastkit eval --model hf:/models/siglip-base --task compositional --sugarcrepe sugarcrepe/ --images val2017/
    contrastkit eval --model text:hf:minilm --task sts --sts builtin stsbenchmark-test.tsv
    contrastkit eval --compare RUN_A RUN_B
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .arg_types import column_triple
from .data_settings import add_data_settings, data_overrides

if TYPE_CHECKING:
    from ..config import Config, DataConfig
    from ..evaluate.cache import FeatureCache
    from ..evaluate.request import EvalRequest
    from ..models.loaded import LoadedModel

EPILOG = """\
tasks: zeroshot, retrieval, linear_probe, compositional, geometry; 'default' = all but linear_probe,
'all' = every image task (comma-separated or repeated --task); text models: sts, text_retrieval,
text_geometry (the default on pairs: data; --sts FILE adds STS sets). Data specs go to contrastkit.data.sources:
synthetic:shapes, folder:DIR (one sub-folder per class), csv:/tsv:/jsonl:/parquet: manifests, wds:
shards, hf: datasets (column names and splits via --set data.KEY=VALUE). Features are cached on disk
(see --cache-dir): a second evaluation of the same model on the same data reads them back.
Output: OUT/report.json, OUT/report.md, PNG plots, OUT/results/<task>_<dataset>.json (CLIP_benchmark format)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model (zero-shot, retrieval, linear probe, compositional, geometry)",
        description="Evaluate a contrastkit run, an open_clip model or a Hugging Face CLIP/SigLIP folder; "
        "write report.md/json, plots and one CLIP_benchmark-style JSON per task. "
        "With --compare, print two evaluations side by side.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", metavar="RUN_DIR", help="run directory of a trained contrastkit model")
    which.add_argument(
        "--model",
        metavar="SPEC",
        help="open_clip:<name> (with --pretrained FILE), hf:<local CLIP/SigLIP folder>, a run dir, "
        "or text:hf:<text encoder> (text:hf:minilm: texts only)",
    )
    which.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="compare two evaluations (report.json, its folder, or a run directory)",
    )
    p.add_argument("--pretrained", metavar="FILE", help="local weights file for an open_clip:<name> model")
    p.add_argument(
        "--task",
        action="append",
        metavar="TASKS",
        help="tasks to run, comma-separated (default: zeroshot,retrieval,compositional,geometry)",
    )
    _data_options(p.add_argument_group("data"))
    _probe_options(p.add_argument_group("linear probe"))
    _metric_options(p.add_argument_group("metrics"))
    _output_options(p.add_argument_group("speed and output"))
    p.set_defaults(func=run)


def _data_options(data: argparse._ArgumentGroup) -> None:
    data.add_argument("--data", metavar="SPEC", help="data spec (default for a run: its training source)")
    data.add_argument("--split", default="test", help="split to evaluate (default: test)")
    add_data_settings(
        data,
        "data setting for reading --data (e.g. data.label_column=label, data.val_fraction=0.1); "
        "for file sources the whole split is evaluated unless data.eval_size is set "
        "(webdataset shards: data.eval_size records)",
    )
    data.add_argument("--max-records", type=int, default=0, help="evaluate at most this many records (0: all)")
    data.add_argument("--classnames", metavar="FILE", help="class names, one per line (line i = class i)")
    data.add_argument(
        "--templates",
        metavar="FILE|NAME",
        help="zero-shot templates: a file (one per line, with {}) or openai_imagenet | simple",
    )
    data.add_argument(
        "--sugarcrepe", nargs="+", metavar="JSON", help="SugarCrepe JSON files or a folder of them (needs --images)"
    )
    data.add_argument("--aro", nargs="+", metavar="JSON", help="ARO-style JSON / JSONL sets (needs --images)")
    data.add_argument("--images", metavar="DIR", help="folder the image paths of --sugarcrepe / --aro are relative to")
    data.add_argument(
        "--sts", nargs="+", metavar="FILE", help="STS files of scored sentence pairs, or 'builtin' (the shapes world's)"
    )
    data.add_argument(
        "--sts-columns",
        type=column_triple,
        default=("sentence1", "sentence2", "score"),
        metavar="A,B,SCORE",
        help="the STS files' two text columns and gold-score column (default: sentence1,sentence2,score)",
    )


def _probe_options(probe: argparse._ArgumentGroup) -> None:
    probe.add_argument("--train-split", default="train", help="split the probe trains on (default: train)")
    probe.add_argument(
        "--val-split", default=None, help="split that chooses C (default: a stratified 20%% of the training split)"
    )
    probe.add_argument("--max-train-records", type=int, default=0, help="probe on at most this many (0: all)")
    probe.add_argument(
        "--fewshot",
        type=int,
        nargs="+",
        default=[],
        metavar="K",
        help="also probe with K examples per class (e.g. --fewshot 1 5 10)",
    )
    probe.add_argument("--probe-max-iter", type=int, default=1000, help="L-BFGS iterations per fit (default 1000)")


def _metric_options(metrics: argparse._ArgumentGroup) -> None:
    metrics.add_argument(
        "--recall-k",
        type=int,
        nargs="+",
        default=[1, 5, 10],
        metavar="K",
        help="retrieval recall@k values (default: 1 5 10)",
    )
    metrics.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="tau of the hardness diagnostics (default: the model's own, else 0.07)",
    )
    metrics.add_argument("--seed", type=int, default=0, help="seed of the probe and separability splits")


def _output_options(run_opts: argparse._ArgumentGroup) -> None:
    run_opts.add_argument(
        "--batch-size", type=int, default=0, help="images / texts per forward (0: 256, or the run's eval.batch_size)"
    )
    run_opts.add_argument("--workers", type=int, default=0, help="image-loading worker processes")
    run_opts.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    run_opts.add_argument("--precision", default="fp32", choices=["fp32", "amp"], help="fp32 or autocast")
    run_opts.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="feature cache (default: RUN_DIR/feature-cache for runs, else $CONTRASTKIT_CACHE "
        "or ~/.cache/contrastkit/features)",
    )
    run_opts.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    run_opts.add_argument("--no-plots", action="store_true", help="write JSON and Markdown only, no PNG plots")
    run_opts.add_argument("--detail", action="store_true", help="with --compare: include per-class values")
    run_opts.add_argument("--out", help="output folder (default: RUN_DIR/eval-SPLIT, else runs/eval-<model>)")
    run_opts.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _compare(args: argparse.Namespace) -> int:
    from ..evaluate.compare import format_comparison, load_report

    a, b = load_report(args.compare[0]), load_report(args.compare[1])
    print(format_comparison(a, b, detail=args.detail), end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(format_comparison(a, b, detail=args.detail, markdown=True))
        print(f"comparison written to {out / 'compare.md'}")
    return 0


def _data_config(cfg: Config | None, sets: list[str], spec: str | None, max_records: int | None) -> DataConfig:
    """The run's (or the default) DataConfig with ``--set data.KEY=VALUE`` applied and validated.

    File sources cap val / test at ``data.eval_size`` records; evaluation reads
    the whole split (or ``--max-records``) unless ``data.eval_size`` is set here.
    Webdataset shards are the exception: their evaluation split is a window
    held in memory (encoded images included), so it keeps ``data.eval_size``
    unless ``--max-records`` says otherwise.
    """
    import dataclasses

    from ..config import Config, apply_overrides, config_from_dict

    overrides = data_overrides(sets)
    data_cfg = config_from_dict(apply_overrides((cfg or Config()).to_dict(), overrides)).data
    from ..data.sources import is_generated

    if spec and not is_generated(spec) and not any(o.startswith("data.eval_size=") for o in overrides):
        if max_records:
            data_cfg = dataclasses.replace(data_cfg, eval_size=max_records)
        elif not _is_shards(spec):
            data_cfg = dataclasses.replace(data_cfg, eval_size=10**12)
    return data_cfg


def _is_shards(spec: str) -> bool:
    try:
        from ..data.sources import parse_spec

        return parse_spec(spec)[0] == "wds"
    except (ImportError, ValueError):
        return False


def _load(args: argparse.Namespace) -> LoadedModel:
    """The model to evaluate; a run's own eval.batch_size unless --batch-size is given."""
    from ..models.load import load_model, load_run_model

    if not args.checkpoint and not args.model:
        raise ValueError(
            "give a model: --checkpoint RUN_DIR, --model open_clip:NAME --pretrained FILE, "
            "or --model hf:DIR (or --compare A B)"
        )
    options = {"device": args.device, "precision": args.precision, "batch_size": args.batch_size or None}
    if args.checkpoint:
        if args.pretrained:
            raise ValueError("--pretrained applies to --model open_clip:<name>, not --checkpoint")
        return load_run_model(args.checkpoint, **options)
    return load_model(args.model, args.pretrained, **options)


def _cache(args: argparse.Namespace, model: LoadedModel) -> FeatureCache | None:
    from ..evaluate.cache import FeatureCache

    if args.no_cache:
        return None
    if args.cache_dir:
        return FeatureCache(args.cache_dir)
    if model.kind == "contrastkit" and Path(model.name).is_dir():  # a run directory
        return FeatureCache(Path(model.name) / "feature-cache")
    return FeatureCache()


def _request(args: argparse.Namespace, model: LoadedModel) -> EvalRequest:
    from ..evaluate.benchmark_files import read_classnames, read_templates
    from ..evaluate.suite import EvalRequest, parse_tasks

    cfg = model.config
    data = args.data or (cfg.data.source if cfg is not None else None)
    tasks = parse_tasks(args.task or ["default"])
    if not args.task and data is None:
        tasks = ["sts"] if args.sts else ["compositional"]  # only benchmark sets given
    return EvalRequest(
        tasks=tasks,
        data=data,
        split=args.split,
        data_config=_data_config(cfg, args.set, data, args.max_records or None),
        max_records=args.max_records or None,
        classnames=read_classnames(args.classnames) if args.classnames else None,
        templates=read_templates(args.templates) if args.templates else None,
        train_split=args.train_split,
        val_split=args.val_split,
        max_train_records=args.max_train_records or None,
        fewshot=args.fewshot,
        sugarcrepe=args.sugarcrepe or (),
        aro=args.aro or (),
        sts=args.sts or (),
        sts_columns=args.sts_columns,
        images=args.images,
        recall_ks=args.recall_k,
        temperature=args.temperature,
        batch_size=model.batch_size,
        num_workers=args.workers,
        progress=not args.no_progress,
        seed=args.seed,
        probe_max_iter=args.probe_max_iter,
        training_captions=_training_captions(model) if "zeroshot" in tasks else None,
    )


def _training_captions(model: LoadedModel, scan: int = 2000) -> list[str] | None:
    """The captions of the first ``scan`` training records of a contrastkit run (None: not a run, or streamed data)."""
    from ..data.sources import open_source

    cfg = model.config
    if model.kind != "contrastkit" or cfg is None or _is_shards(cfg.data.source):
        return None
    try:
        train = open_source(cfg.data.source, "train", cfg.data)
    except (OSError, ValueError) as err:  # the training data moved: evaluate without the check, and say so
        print(f"class names not checked against the training captions: {err}")
        return None
    return [c for i in range(min(scan, len(train))) for c in train[i].captions]


def _out_dir(args: argparse.Namespace, model: LoadedModel) -> Path:
    if args.out:
        return Path(args.out)
    if args.checkpoint:
        return Path(args.checkpoint) / f"eval-{args.split}"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model.name}").strip("_")[-60:]
    return Path("runs") / f"eval-{slug}"


def run(args: argparse.Namespace) -> int:
    if args.compare:
        return _compare(args)
    from ..evaluate.result_files import write_suite
    from ..evaluate.suite import run_suite
    from ..evaluate.summary import summarize_results

    model = _load(args)
    req = _request(args, model)
    output = run_suite(model, req, cache=_cache(args, model))
    out = _out_dir(args, model)
    config = {
        "model": model.name,
        "pretrained": model.pretrained,
        "data": req.data,
        "split": args.split,
        "tasks": list(req.tasks),
        "batch_size": req.batch_size,
        "precision": args.precision,
        "data_settings": args.set,
        "run_config": model.config.to_dict() if model.config is not None else None,
    }
    write_suite(out, output, config=config, plots=not args.no_plots)
    print(summarize_results(output.results, args.split if req.data else None))
    print(f"evaluation written to {out}")
    return 0
