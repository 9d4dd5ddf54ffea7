"""contrastkit adapt: adapt a trained model; one sub-command per method family.

contrastkit adapt wise-ft --start runs/base --finetuned runs/ft --out runs/ft-wise
    [--source synthetic:shapes] [--target synthetic:shapes-clutter] [--alphas 0,0.25,0.5,0.75,1]
contrastkit adapt few-shot runs/demo --task shape --shots 1,2,4,8,16 --out runs/demo-few-shot
contrastkit adapt text-only runs/demo --task shape --noise 0,0.05,0.1,0.2 --out runs/demo-text-only
contrastkit adapt text-caption runs/demo --noise 0,0.1,0.2 --out runs/demo-text-caption
contrastkit adapt residual runs/demo --from synthetic:shapes-dark --to synthetic:shapes --out runs/demo-dark
contrastkit adapt lora runs/demo --data synthetic:shapes-clutter --rank 8 --out runs/demo-lora
contrastkit adapt prompt runs/demo --task colour --methods coop,cocoop --shots 16 --out runs/demo-prompts
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .adapt_prompt import add_prompt
from .arg_types import ints, numbers
from .data_settings import add_data_settings, data_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="adapt a trained model (WiSE-FT, few-shot, prompt learning, text-only, residual directions, LoRA)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    methods = p.add_subparsers(dest="method", required=True)
    for add in (_add_wise_ft, _add_few_shot, add_prompt, _add_text_only, _add_text_caption, _add_residual, _add_lora):
        add(methods)


def _add_wise_ft(methods: argparse._SubParsersAction) -> None:
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
        type=numbers,
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


def _add_few_shot(methods: argparse._SubParsersAction) -> None:
    f = methods.add_parser(
        "few-shot",
        help="zero-shot head, linear probe, Tip-Adapter, LP-FT, FT and LoRA at k shots per class, over seeds",
        description="Embed the task's images of the train / val / test splits once; for every k and seed draw k "
        "shots per class from train, choose the probe's C and Tip-Adapter's alpha, beta on val, fine-tune the "
        "image tower from the probe's head (LP-FT) and from the zero-shot head (FT), and LoRA adapters on the image "
        "side from the zero-shot head; score on test. "
        "Writes ladder.jsonl (rerun to continue), report.md/json and few_shot.png.",
    )
    f.add_argument("run", metavar="RUN_DIR", help="the trained run to adapt")
    f.add_argument(
        "--data", default="synthetic:shapes", metavar="SPEC", help="labelled data (default synthetic:shapes)"
    )
    f.add_argument("--task", default="shape", help="the data's classification task (default: shape)")
    f.add_argument("--shots", type=ints, default=[1, 2, 4, 8, 16], help="shots per class (default 1,2,4,8,16)")
    f.add_argument("--seeds", type=ints, default=[0, 1, 2], help="seeds of the shot draws (default 0,1,2)")
    f.add_argument("--max-records", type=int, default=2000, help="images embedded per split (default 2000)")
    f.add_argument(
        "--finetune-steps",
        type=int,
        default=50,
        help="steps of LP-FT and FT (image tower + head on the shots) per k and seed; 0: skip them (default 50)",
    )
    f.add_argument("--finetune-lr", type=float, default=1e-4, help="their AdamW learning rate (default 1e-4)")
    f.add_argument(
        "--lora-rank", type=int, default=8, help="rank of the LoRA rung (alpha = 2 x rank); 0: skip it (default 8)"
    )
    f.add_argument("--lora-lr", type=float, default=1e-3, help="the LoRA rung's learning rate (default 1e-3)")
    add_data_settings(f, "data settings over the run's")
    f.add_argument("--out", required=True, metavar="DIR", help="output folder")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=run_few_shot)


def _add_text_only(methods: argparse._SubParsersAction) -> None:
    t = methods.add_parser(
        "text-only",
        help="train a classifier on caption embeddings only and test it on images (CLOSE / CapDec)",
        description="Embed the task's captions of the train split and fit a linear classifier to them with Gaussian "
        "noise of std w injected into every text embedding (and, in a second arm, the image-text mean shift "
        "measured on val pairs); score it on the test split's images. Writes sweep.jsonl (rerun to continue), "
        "report.md/json and text_only.png.",
    )
    t.add_argument("run", metavar="RUN_DIR", help="the trained run")
    t.add_argument(
        "--data", default="synthetic:shapes", metavar="SPEC", help="labelled data (default synthetic:shapes)"
    )
    t.add_argument("--task", default="shape", help="the data's classification task (default: shape)")
    t.add_argument(
        "--noise",
        type=numbers,
        default=[0.0, 0.02, 0.05, 0.1, 0.2, 0.4],
        help="noise levels w, comma-separated (default 0,0.02,0.05,0.1,0.2,0.4)",
    )
    t.add_argument("--seeds", type=ints, default=[0, 1, 2], help="seeds of the noise and batches (default 0,1,2)")
    t.add_argument("--steps", type=int, default=300, help="Adam steps of each classifier (default 300)")
    t.add_argument("--max-records", type=int, default=2000, help="records read per split (default 2000)")
    add_data_settings(t, "data settings over the run's")
    t.add_argument("--out", required=True, metavar="DIR", help="output folder")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=run_text_only)


def _add_text_caption(methods: argparse._SubParsersAction) -> None:
    t = methods.add_parser(
        "text-caption",
        help="train a caption decoder on caption embeddings only and caption images with it (CapDec)",
        description="Embed the train split's captions and train a small decoder to reproduce each caption from its "
        "embedding with Gaussian noise of std w injected (and, in a second arm, the image-text mean shift measured "
        "on val pairs); caption the test split's images from their embeddings and score BLEU-4 / CIDEr-D against "
        "their captions. Writes sweep.jsonl (rerun to continue), report.md/json and text_caption.png.",
    )
    t.add_argument("run", metavar="RUN_DIR", help="the trained run")
    t.add_argument(
        "--data", default="synthetic:shapes", metavar="SPEC", help="captioned data (default synthetic:shapes)"
    )
    t.add_argument("--noise", type=numbers, default=[0.0, 0.05, 0.1, 0.2, 0.4], help="noise levels w (0,0.05,...,0.4)")
    t.add_argument("--seeds", type=ints, default=[0, 1, 2], help="seeds (default 0,1,2)")
    t.add_argument("--steps", type=int, default=300, help="Adam steps of each decoder (default 300)")
    t.add_argument("--max-records", type=int, default=1000, help="records read per split (default 1000)")
    add_data_settings(t, "data settings over the run's")
    t.add_argument("--out", required=True, metavar="DIR", help="output folder")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=run_text_caption)


def run_text_caption(args: argparse.Namespace) -> int:
    from ..adapt.capdec import DecoderSettings
    from ..adapt.capdec_run import CaptionRequest, run_text_caption

    for name in ("max_records", "steps"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    request = CaptionRequest(
        args.run, args.data, args.noise, args.seeds, args.max_records, DecoderSettings(steps=args.steps)
    )
    run_text_caption(request, Path(args.out), data_overrides=data_overrides(args.set), progress=not args.no_progress)
    print((Path(args.out) / "report.md").read_text())
    return 0


def _add_residual(methods: argparse._SubParsersAction) -> None:
    r = methods.add_parser(
        "residual",
        help="the residual direction between two image sets (RAVE): what names it, how it ranks, a guided network",
        description="Fit v_res = normalize(v_to - v_from) on the train splits of two image sources, report the "
        "held-out AUC of cos(e, v_res), the words and captions closest to it, and (unless --guide-steps 0) train "
        "a small image-to-image network on the 'from' images with RAVE's guidance loss and show before / after "
        "pictures. Writes direction.safetensors, report.md/json and plots.",
    )
    r.add_argument("run", metavar="RUN_DIR", help="the trained run whose image encoder defines the space")
    r.add_argument("--from", dest="source_from", required=True, metavar="SPEC", help="the set the direction leaves")
    r.add_argument("--to", dest="source_to", required=True, metavar="SPEC", help="the set the direction points to")
    r.add_argument("--max-records", type=int, default=500, help="images per set and split (default 500)")
    r.add_argument("--guide-steps", type=int, default=300, help="steps of the guided network (0: none; default 300)")
    r.add_argument("--guide-lr", type=float, default=1e-3, help="its Adam learning rate (default 1e-3)")
    r.add_argument("--reconstruction-weight", type=float, default=1.0, help="weight of ||Φ(x) - x||² (default 1.0)")
    add_data_settings(r, "data settings over the run's")
    r.add_argument("--out", required=True, metavar="DIR", help="output folder")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=run_residual)


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
    if args.finetune_steps < 0 or args.finetune_lr <= 0:
        raise ValueError("--finetune-steps must be >= 0 and --finetune-lr > 0")
    request = LadderRequest(
        args.run, args.data, args.task, args.shots, args.seeds, args.max_records, args.finetune_steps, args.finetune_lr,
        args.lora_rank, args.lora_lr,
    )  # fmt: skip
    run_ladder(request, Path(args.out), data_overrides=data_overrides(args.set), progress=not args.no_progress)
    print((Path(args.out) / "report.md").read_text())
    return 0


def run_text_only(args: argparse.Namespace) -> int:
    from ..adapt.text_only_run import TextOnlyRequest, run_text_only

    for name in ("max_records", "steps"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    request = TextOnlyRequest(args.run, args.data, args.task, args.noise, args.seeds, args.max_records, args.steps)
    run_text_only(request, Path(args.out), data_overrides=data_overrides(args.set), progress=not args.no_progress)
    print((Path(args.out) / "report.md").read_text())
    return 0


def run_residual(args: argparse.Namespace) -> int:
    from ..adapt.residual_guide import GuideSettings
    from ..adapt.residual_run import ResidualRequest, run_residual

    if args.max_records <= 0:
        raise ValueError(f"--max-records must be positive, got {args.max_records}")
    if args.guide_steps < 0 or args.guide_lr <= 0 or args.reconstruction_weight < 0:
        raise ValueError("--guide-steps and --reconstruction-weight must be >= 0 and --guide-lr > 0")
    guide = GuideSettings(steps=args.guide_steps, lr=args.guide_lr, reconstruction_weight=args.reconstruction_weight)
    request = ResidualRequest(args.run, args.source_from, args.source_to, args.max_records, guide)
    run_residual(request, Path(args.out), data_overrides=data_overrides(args.set), progress=not args.no_progress)
    print((Path(args.out) / "report.md").read_text())
    return 0


def _add_lora(methods: argparse._SubParsersAction) -> None:
    lo = methods.add_parser(
        "lora",
        help="fine-tune a run with LoRA adapters (peft) on new data",
        description="Train the run's recipe again from its weights on --data with low-rank adapters on the target "
        "modules and every other parameter frozen (the recipe's lora section; contrastkit train runs any recipe "
        "with one). Writes a run directory (report, checkpoints, config.json, lora_adapter.safetensors); every "
        "command loads it with the adapters merged. Rerun to resume.",
    )
    lo.add_argument("run", metavar="RUN_DIR", help="the trained run to adapt")
    lo.add_argument("--data", required=True, metavar="SPEC", help="the data to adapt to")
    lo.add_argument("--rank", type=int, default=8, help="adapter rank r (default 8)")
    lo.add_argument("--alpha", type=int, default=16, help="scaling alpha; the update is (alpha / r) B A (default 16)")
    lo.add_argument(
        "--targets",
        default="self_attn,linear1,linear2",
        help="comma-separated module names (default: the built-in towers' attention and MLP)",
    )
    lo.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    lo.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    lo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any recipe setting (repeatable)")
    lo.add_argument("--out", required=True, metavar="DIR", help="output run directory")
    lo.add_argument("--no-progress", action="store_true", help="no progress bar")
    lo.set_defaults(func=run_lora)


def run_lora(args: argparse.Namespace) -> int:
    from ..adapt.lora_run import LoraRequest, run_lora
    from ..config import LoraConfig

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    request = LoraRequest(args.run, args.data, LoraConfig(args.rank, args.alpha, targets), args.steps, args.lr)
    run_lora(request, Path(args.out), overrides=args.set, progress=not args.no_progress)
    summary = (Path(args.out) / "lora_summary.json").read_text()
    print(f"LoRA run written to {args.out}; {summary}")
    return 0
