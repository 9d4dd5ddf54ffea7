"""Train every seed recipe on the synthetic world at equal steps and tabulate what each one changes.

    python benchmarks/recipes.py                      # all recipes, demo-sized runs (about an hour on 2 cores)
    python benchmarks/recipes.py --steps 300 --finetune-steps 150 --recipes siglip,negclip
    python benchmarks/recipes.py --reuse              # only recipes without a finished run of the same config

From-scratch recipes train for --steps like the plain CLIP baseline (configs/clip.yaml). Fine-tuning recipes
(model.init_from in the recipe) start from that baseline and train --finetune-steps; their control is the
baseline fine-tuned with plain CLIP on the same schedule ("clip (fine-tuned)"). The table goes to
benchmarks/RESULTS.md under "Recipes on synthetic:shapes".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from contrastkit.config import config_from_dict, load_config
from contrastkit.engine.trainer import train
from results_file import command_line, write_section

SCRATCH = ["siglip", "align", "mochi", "cl2l", "coca", "hq_clip", "lit", "cwcl_lit"]
FINETUNE = ["negclip", "degla", "gap_cua", "gap_cuaxu", "m2mix", "clip_refine", "meow"]
CATEGORIES = ["replace_attribute", "replace_object", "replace_relation", "swap_attributes", "swap_objects"]


def _row(name: str, report: dict, seconds: float) -> str:
    zs = report["zeroshot"]
    rt = report["retrieval"]
    comp = report["compositional"]["accuracy"]
    geo = report["geometry"]
    cells = [
        name,
        *(f"{100 * zs[t]['acc1']:.1f}" if t in zs else "—" for t in ("shape", "colour")),
        f"{100 * rt['image_retrieval_recall@1']:.1f}",
        f"{100 * rt['text_retrieval_recall@1']:.1f}",
        *(f"{100 * comp[c]:.1f}" if c in comp else "—" for c in CATEGORIES),
        f"{geo['modality_gap']:.3f}",
        f"{100 * geo['linear_separability']:.0f}",
        f"{seconds:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| recipe | zs shape | zs colour | T→I R@1 | I→T R@1 | repl. attr | repl. obj | repl. rel | swap attr "
    "| swap obj | gap | lin. sep. % | train s |\n|" + "---|" * 13
)


def run(name: str, config: str, out: Path, overrides: list[str], reuse: bool = False) -> tuple[dict, float]:
    cfg = load_config(config, overrides + ["train.progress=false"])
    done = out / "report.json"
    if reuse and done.exists():
        report = json.loads(done.read_text())
        if config_from_dict(report["config"]) == cfg:  # keys added since take their defaults
            print(f"{name}: reusing {done}", file=sys.stderr)
            return report, report["timing"]["train_seconds"]
    started = time.perf_counter()
    report = train(cfg, out)
    print(f"{name}: done in {time.perf_counter() - started:.0f}s (evaluation included)", file=sys.stderr)
    return report, report["timing"]["train_seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600, help="steps of from-scratch recipes and the baseline")
    parser.add_argument("--finetune-steps", type=int, default=300, help="steps of fine-tuning recipes")
    parser.add_argument("--recipes", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--runs-dir", default="runs/bench", help="where runs are written")
    parser.add_argument("--results", default="benchmarks/RESULTS.md", help="results file to update ('' to skip)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take a recipe's row from an earlier run in --runs-dir made with the same config",
    )
    args = parser.parse_args(argv)
    chosen = set(args.recipes.split(",")) if args.recipes else set(SCRATCH + FINETUNE)
    runs = Path(args.runs_dir)
    common = ["train.eval_every=0", "train.checkpoint_every=0"]
    scratch = common + [f"train.steps={args.steps}"]
    finetune = common + [f"train.steps={args.finetune_steps}"]

    rows = []
    base_report, base_s = run("clip", "configs/clip.yaml", runs / "clip", scratch, args.reuse)
    rows.append(_row("clip (baseline)", base_report, base_s))
    for name in SCRATCH:
        if name in chosen:
            report, seconds = run(name, f"configs/{name}.yaml", runs / name, scratch, args.reuse)
            rows.append(_row(name, report, seconds))
    if chosen & set(FINETUNE):
        tuned = finetune + [f"model.init_from={runs / 'clip'}", "train.lr=2e-4", "train.warmup_steps=20"]
        report, seconds = run("clip-ft", "configs/clip.yaml", runs / "clip-ft", tuned, args.reuse)
        rows.append(_row("clip (fine-tuned)", report, seconds))
        for name in FINETUNE:
            if name in chosen:
                report, seconds = run(
                    name,
                    f"configs/{name}.yaml",
                    runs / name,
                    finetune + [f"model.init_from={runs / 'clip'}"],
                    args.reuse,
                )
                rows.append(_row(f"{name} (fine-tuned)", report, seconds))

    command = command_line("recipes.py", argv)
    table = HEADER + "\n" + "\n".join(rows)
    body = (
        f"Command: `{command.strip()}` ({time.strftime('%Y-%m-%d')}, 2-core CPU). Test split of "
        f"synthetic:shapes (held-out shape–colour combinations), {base_report['n_images']} images; zero-shot on "
        "its single-object scenes; compositional = accuracy of the true caption over each hard negative; gap = "
        "centroid distance; lin. sep. = held-out accuracy of a linear image-vs-text classifier (50% = no "
        f"gap); train s = training time without evaluation.\n\n{table}\n"
    )
    print(table)
    if args.results:
        write_section(args.results, "Recipes on synthetic:shapes", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
