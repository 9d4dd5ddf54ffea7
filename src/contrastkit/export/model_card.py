"""The model card every export writes (README.md): what the model is, what it saw, how it scores, its limits.

Its sections follow the Hugging Face model-card layout (Mitchell et al., "Model Cards for Model Reporting",
FAT* 2019): model details, training data and recipe, evaluation results from the run's ``report.json``,
limitations, and the commands that made the model and the export. Only facts the run directory records
are stated; a missing report says so instead of inventing numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..evaluate.summary import headline_metrics

SYNTHETIC_LIMITS = (
    "Trained on a synthetic world of rendered shapes: it knows the world's 6 shapes, 8 colours, 2 sizes and "
    "4 relations and nothing of natural images or free text."
)


def _report(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "report.json"
    return json.loads(path.read_text()) if path.exists() else None


def _metrics_table(report: Mapping[str, Any]) -> list[str]:
    rows = headline_metrics(report, prefix="")
    lines = ["| metric | value |", "|---|---|"]
    for key, value in rows.items():
        name = key.lstrip("/")
        shown = f"{value:.3f}" if "gap" in name else f"{100 * value:.1f}%"
        lines.append(f"| {name} | {shown} |")
    for category, value in report.get("compositional", {}).get("accuracy", {}).items():
        lines.append(f"| compositional {category} (chance 50%) | {100 * value:.1f}% |")
    return lines


def write_model_card(
    run_dir: Path,
    cfg: Mapping[str, Any],
    out: Path,
    *,
    export_format: str,
    files: Mapping[str, str],
    max_abs_diff: float,
    checked_with: str,
    command: str,
    parameters: int,
) -> Path:
    """Write ``out/README.md`` for an export of ``run_dir`` (``cfg``: the run's config as a dict)."""
    model, data, train = cfg["model"], cfg["data"], cfg["train"]
    terms = ", ".join(f"{t['name']} (weight {t.get('weight', 1.0)})" for t in cfg["objective"])
    report = _report(run_dir)
    lines = [
        "---",
        "library_name: contrastkit",
        "tags: [contrastive, clip, image-text, dual-encoder]",
        "---",
        f"# {cfg.get('name', 'run')} — a contrastkit dual encoder ({export_format} export)",
        "",
        "## Model",
        f"- image tower `{model['image_tower']}`, text tower `{model['text_tower']}`, joint embedding "
        f"{model['embed_dim']}-d, {parameters:,} parameters",
        f"- exported files: {', '.join(f'`{name}` ({role})' for role, name in files.items())}",
        f"- checked: embeddings of the export vs contrastkit's, max |difference| {max_abs_diff:.2e} ({checked_with})",
        "",
        "## Training data and recipe",
        f"- data `{data['source']}` at {data['image_size']} px"
        + (f", {data['train_size']} training records" if str(data["source"]).startswith("synthetic:") else ""),
        f"- objective: {terms}",
        f"- {train['steps']} steps at batch {train['batch_size']}, AdamW lr {train['lr']}, warmup "
        f"{train['warmup_steps']} then cosine, seed {train['seed']}"
        + (f"; started from `{model['init_from']}`" if model.get("init_from") else ""),
        "",
        "## Evaluation",
    ]
    if report is None:
        lines.append("The run directory holds no report.json: the model was not evaluated.")
    else:
        lines += [
            f"On the `{report.get('split', '?')}` split of `{report.get('dataset', data['source'])}`, "
            f"{report.get('n_images', '?')} images, at the model's own temperature:",
            "",
            *_metrics_table(report),
        ]
    lines += [
        "",
        "## Limitations",
        "- "
        + (
            SYNTHETIC_LIMITS
            if str(data["source"]).startswith("synthetic:")
            else "Knows only what its training data shows; evaluate it on your own data before relying on it."
        ),
        "- Contrastive dual encoders often ignore word order: the compositional swap scores above (50% is "
        "chance) say how well this one binds attributes to objects; check them where word order matters.",
        "",
        "## How it was made",
        "```bash",
        f"contrastkit train {run_dir}/config.json --out {run_dir}   # the recipe (config.json is the full config)",
        command,
        "```",
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
