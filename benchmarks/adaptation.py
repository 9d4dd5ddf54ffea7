"""The adaptation benchmark: what each `contrastkit adapt` method does to the testbed's base model, over seeds.

    make base                                # the testbed's base model (runs/testbed/base)
    python benchmarks/recipes.py --claims "plain fine-tuning"   # the clutter fine-tuned runs, for WiSE-FT
    python benchmarks/adaptation.py          # every part below; reruns measure only what is missing

Parts (each writes its own output folder under --out, resumable; the report goes to RESULTS.md under
"Adaptation on the testbed"):

- ``few-shot``: the few-shot ladder on the held-out shape task (zero-shot head, linear probe,
  Tip-Adapter, LP-FT, FT, LoRA) and CoOp's k-shot curve (lr and steps chosen on val) at 1-16 shots per
  class, seeds 0-2;
- ``base-to-new``: CoOp, CoCoOp, the TOMM-style learner and GOPro against the zero-shot head on the cluttered
  domain (shots from its train split, scored on its val split), 16 shots, base / new / harmonic mean, seeds 0-4,
  at the base-to-new literature's context (M = 4 from "a photo of a") and at CoOp's own (M = 16, random start),
  each learner's lr and steps chosen on the cluttered test split (``--select-on``), never on the scored val split;
- ``text-only``: CLOSE / CapDec noise sweep (with and without the mean shift), seeds 0-2;
- ``text-caption``: CapDec's caption decoder trained on caption embeddings only, captioning test images (BLEU-4,
  CIDEr-D), over w with and without the mean shift, seeds 0-2;
- ``residual``: the RAVE direction from underexposed to plain images, its held-out AUC and the guided network;
- ``wise-ft``: WiSE-FT between the base and each seed's plain fine-tuning on the cluttered domain
  (``runs/testbed/clip_ft_clutter-s<seed>``, made by benchmarks/recipes.py); a part whose runs are
  missing is reported as missing, not skipped silently.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from contrastkit.adapt.capdec import DecoderSettings
from contrastkit.adapt.capdec_run import CaptionRequest, run_text_caption
from contrastkit.adapt.capdec_run import summary_table as caption_table
from contrastkit.adapt.few_shot_run import LadderRequest, run_ladder
from contrastkit.adapt.few_shot_run import summary_table as few_shot_table
from contrastkit.adapt.prompt_report import comparison_lines, selection_lines
from contrastkit.adapt.prompt_report import summary_table as prompt_table
from contrastkit.adapt.prompt_run import PromptRequest, run_prompts
from contrastkit.adapt.prompt_selection import Selection
from contrastkit.adapt.prompt_training import PromptSettings
from contrastkit.adapt.residual_guide import GuideSettings
from contrastkit.adapt.residual_run import ResidualRequest, run_residual
from contrastkit.adapt.text_only_run import TextOnlyRequest, run_text_only
from contrastkit.adapt.text_only_run import summary_table as text_only_table
from contrastkit.adapt.wise_ft_run import default_request, run_sweep
from contrastkit.evaluate.verdicts import summarize
from results_file import command_line, cpu_name, write_section

SECTION = "Adaptation on the testbed"
PARTS = ("few-shot", "base-to-new", "text-only", "text-caption", "residual", "wise-ft")


def few_shot(
    base: str, seeds: list[int], out: Path, records: int, selection: Selection, shots: list[int], steps: int
) -> list[str]:
    """The ladder (zero-shot head to full fine-tuning, LoRA among them) and CoOp's k-shot curve, one table.

    CoOp learns M = 4 context vectors from "a photo of a" on every class (``--protocol all``); its lr and
    steps are chosen per k at the first seed on the val split, as the ladder chooses its C and α, β there.
    """
    request = LadderRequest(base, "synthetic:shapes", "shape", shots, seeds, records, finetune_steps=steps)
    report = run_ladder(request, out / "few-shot", progress=True)
    prompts = PromptRequest(
        base, "synthetic:shapes", "shape", ["coop"], shots, seeds, protocol="all", max_records=records
    )  # fmt: skip
    coop = run_prompts(prompts, out / "few-shot-coop", selection=selection)
    cells = {e["k"]: f"{100 * e['all']['mean']:.1f} ± {100 * e['all']['sd']:.1f}" for e in coop["summary"]}
    chosen = {(c["method"], c["k"]): c for c in coop["selection"]["chosen"]} if coop.get("selection") else {}
    picks = ", ".join(f"k = {k}: lr {chosen[('coop', k)]['lr']:g} x {chosen[('coop', k)]['steps']}" for k in shots)
    lora = next(r["chosen"] for r in report["rows"] if r["method"] == "lora")
    return [
        "**Few-shot ladder and k-shot curves** (held-out shape combinations of the test split; shots from seen "
        f"combinations of the train split; test accuracy %, mean ± sd over seeds {', '.join(map(str, seeds))}; "
        f"LP-FT, FT and LoRA: {request.finetune_steps} AdamW steps, FT at lr {request.finetune_lr:g}, LoRA rank "
        f"{request.lora_rank} on the image side ({100 * lora['share']:.1f}% of the model's parameters) at lr "
        f'{request.lora_lr:g}; CoOp: M = 4 context vectors from "a photo of a", lr and steps chosen on the val '
        f"split at seed {seeds[0]} among lr {'/'.join(f'{x:g}' for x in selection.lrs)} x steps "
        f"{'/'.join(map(str, selection.steps))} — {picks}):",
        "",
        *few_shot_table(report),
        "| CoOp | " + " | ".join(cells.get(k, "-") for k in shots) + " |",
    ]


def base_to_new(
    base: str, seeds: list[int], out: Path, records: int, shots: int, selection: Selection, contexts: list[str]
) -> list[str]:
    """Two settings, all four learners: the literature's (M = 4 from "a photo of a") and CoOp's own (M = 16, random).

    Each learner's lr and steps are chosen on the cluttered domain's test split at the first seed
    (``selection``); every seed is then scored on the val split, which took no part in the choice.
    """
    settings = {
        "literature": (["coop", "cocoop", "tomm", "gopro"], PromptSettings()),
        "coop16": (["coop", "cocoop", "tomm", "gopro"], PromptSettings(n_ctx=16, ctx_init=None)),
    }
    unknown = sorted(set(contexts) - set(settings))
    if unknown:
        raise SystemExit(f"--prompt-contexts: unknown {', '.join(unknown)}; choose from {', '.join(settings)}")
    grid = f"lr {'/'.join(f'{lr:g}' for lr in selection.lrs)} x steps {'/'.join(map(str, selection.steps))}"
    lines = []
    for name in contexts:
        methods, setting = settings[name]
        request = PromptRequest(
            base, "synthetic:shapes-clutter", "shape", methods, [shots], seeds,
            max_records=records, eval_split="val", settings=setting,
        )  # fmt: skip
        report = run_prompts(
            request,
            out / f"base-to-new-{name}-selected",
            data_overrides=[f"data.eval_size={3 * records}"],
            selection=selection,
        )
        start = f"from {setting.ctx_init!r}" if setting.ctx_init else "random start"
        lines += [
            f"**Base-to-new prompt learning, M = {setting.n_ctx} context vectors, {start}** (cluttered domain, "
            f"shape task: 3 base and 3 new classes; {shots} shots per base class from the train split; Adam, each "
            f"learner's lr and steps chosen among {grid} on the {selection.split} split at seed {seeds[0]}; scored "
            f"on the val split; %, mean ± sd over seeds {', '.join(map(str, seeds))}):",
            "",
            *prompt_table(report),
            "",
            *selection_lines(report),
            "",
            *comparison_lines(report),
            "",
        ]
    return lines[:-1]


def text_only(base: str, seeds: list[int], out: Path, records: int, noise: list[float]) -> list[str]:
    report = run_text_only(TextOnlyRequest(base, "synthetic:shapes", "shape", noise, seeds, records), out / "text-only")
    lines = [
        "**Text-only transfer** (a classifier trained on caption embeddings only, scored on images; shape task, %):",
        "",
        *text_only_table(report),
    ]
    best = report["best"]["noise_only"]
    zero = report["rows"][0]["zero_shot"]
    lines += [
        "",
        f"Best w = {best['w']:g}: {100 * best['gain_over_w0']:+.1f} points over w = 0 (the zero-shot head on the same "
        f"images: {100 * zero:.1f}%).",
    ]
    return lines


def text_caption(base: str, seeds: list[int], out: Path, records: int, noise: list[float], steps: int) -> list[str]:
    request = CaptionRequest(base, "synthetic:shapes", noise, seeds, records, DecoderSettings(steps=steps))
    report = run_text_caption(request, out / "text-caption")
    return [
        "**Text-only captioning (CapDec)** (a decoder trained on caption embeddings only, captioning the test "
        f"split's images from their embeddings; mean ± sd over seeds {', '.join(map(str, seeds))}):",
        "",
        *caption_table(report),
    ]


def residual(base: str, out: Path, records: int, guide_steps: int) -> list[str]:
    request = ResidualRequest(base, "synthetic:shapes-dark", "synthetic:shapes", records, GuideSettings(guide_steps))
    report = run_residual(request, out / "residual")
    guided = report["guided"]
    return [
        f"**Residual direction** (underexposed -> plain, {records} images per set): held-out AUC "
        f"{report['test_auc']:.3f}; the guided network moves held-out underexposed images from "
        f"{guided['before']['mean']:.3f} to {guided['after']['mean']:.3f} along v_res (plain images: "
        f"{report['scores']['to']['mean']:.3f}). Pictures: `{out / 'residual' / 'residual_examples.png'}`.",
    ]


def wise_ft(base: str, seeds: list[int], out: Path, runs: Path, records: int) -> list[str]:
    tuned = {s: runs / f"clip_ft_clutter-s{s}" for s in seeds}
    missing = [str(p) for p in tuned.values() if not (p / "report.json").exists()]
    if missing:
        return [f"**WiSE-FT**: not measured, missing fine-tuned runs {', '.join(missing)} (benchmarks/recipes.py)."]
    reports: list[dict[str, Any]] = []
    for seed, run in tuned.items():
        request = default_request(base, str(run), alphas=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], max_records=records)
        reports.append(run_sweep(request, out / f"wise-ft-s{seed}", progress=True))
    alphas = sorted({p["alpha"] for p in reports[0]["points"]})
    lines = [
        "**WiSE-FT** (base -> plain fine-tuning on the cluttered domain; mean zero-shot accuracy over the tasks, "
        "test split, %, mean ± sd over seeds):",
        "",
        "| α | " + " | ".join(f"{a:g}" for a in alphas) + " |",
        "|---|" + "---|" * len(alphas),
    ]
    for role in ("source", "target"):
        cells = []
        for a in alphas:
            values = [p[role]["mean"] for r in reports for p in r["points"] if p["alpha"] == a and p["split"] == "test"]
            s = summarize(values)
            cells.append(f"{100 * s.mean:.1f} ± {100 * s.sd:.1f}")
        lines.append(f"| {role} | " + " | ".join(cells) + " |")
    bends = [len(r["beats_both_ends_at"]) > 0 for r in reports]
    chosen = [r["chosen_alpha"] for r in reports]
    lines += [
        "",
        f"Some α beats both end points (source above the fine-tuned model, target above the base) in "
        f"{sum(bends)} of {len(bends)} seeds; α chosen on validation: {', '.join(f'{a:g}' for a in chosen)} "
        f"(mean {np.mean(chosen):.2f}).",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="runs/testbed/base", help="the model to adapt (default: the testbed's base)")
    parser.add_argument("--runs-dir", default="runs/testbed", help="the testbed's runs (fine-tuned for WiSE-FT)")
    parser.add_argument("--out", default="runs/adaptation", help="output folders of the parts")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--seeds", default="0,1,2", help="seeds (default 0,1,2)")
    parser.add_argument("--base-to-new-seeds", default="0,1,2,3,4", help="seeds of base-to-new (default 0-4)")
    parser.add_argument("--max-records", type=int, default=1000, help="records per split (default 1000)")
    parser.add_argument("--shots", default="1,2,4,8,16", help="shots per class of the few-shot part")
    parser.add_argument("--finetune-steps", type=int, default=50, help="steps of LP-FT, FT and LoRA (few-shot)")
    parser.add_argument("--noise", default="0,0.05,0.1,0.2,0.4,0.6,0.8", help="text-only noise levels w")
    parser.add_argument("--prompt-shots", type=int, default=16, help="shots per base class (base-to-new)")
    parser.add_argument("--prompt-lrs", default="0.003,0.01,0.03", help="learning rates tried per prompt learner")
    parser.add_argument("--prompt-steps", default="100,300", help="step counts tried per prompt learner")
    parser.add_argument("--prompt-contexts", default="literature,coop16", help="base-to-new settings to run")
    parser.add_argument("--select-on", default="test", help="split that chooses them (base-to-new scores val)")
    parser.add_argument("--caption-noise", default="0,0.1,0.2,0.4", help="noise levels w of the text-caption part")
    parser.add_argument("--caption-steps", type=int, default=300, help="steps of each caption decoder")
    parser.add_argument("--guide-steps", type=int, default=300, help="steps of the residual part's guided network")
    parser.add_argument("--results", default="benchmarks/RESULTS.md", help="results file to update ('' to skip)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if not (Path(args.base) / "report.json").exists():
        raise SystemExit(f"{args.base} is not a finished run: train the testbed's base first (make base)")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    body = [f"Command: `{command_line('adaptation.py', argv)}` (CPU: {cpu_name()}); model: `{args.base}`.", ""]
    lrs, steps = (
        tuple(float(x) for x in args.prompt_lrs.split(",")),
        tuple(int(x) for x in args.prompt_steps.split(",")),
    )
    for part in parts:
        if part == "few-shot":
            shots = [int(x) for x in args.shots.split(",")]
            selection = Selection("val", lrs, steps)
            body += few_shot(args.base, seeds, out, args.max_records, selection, shots, args.finetune_steps)
        elif part == "base-to-new":
            selection = Selection(args.select_on, lrs, steps)
            contexts = [c.strip() for c in args.prompt_contexts.split(",") if c.strip()]
            prompt_seeds = [int(x) for x in args.base_to_new_seeds.split(",")]
            body += base_to_new(args.base, prompt_seeds, out, args.max_records, args.prompt_shots, selection, contexts)
        elif part == "text-only":
            body += text_only(args.base, seeds, out, args.max_records, [float(w) for w in args.noise.split(",")])
        elif part == "text-caption":
            noise = [float(w) for w in args.caption_noise.split(",")]
            body += text_caption(args.base, seeds, out, args.max_records, noise, args.caption_steps)
        elif part == "residual":
            body += residual(args.base, out, min(args.max_records, 500), args.guide_steps)
        else:
            body += wise_ft(args.base, seeds, out, Path(args.runs_dir), args.max_records)
        body.append("")
    text = "\n".join(body)
    print(text)
    if args.results:
        write_section(args.results, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
