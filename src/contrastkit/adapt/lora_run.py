"""``contrastkit adapt lora``: fine-tune a run with LoRA adapters (peft) on new data, as a training run.

The start run's recipe (objective, model, data settings) is trained again from its weights
(``model.init_from``) on ``--data``, for ``--steps`` at ``--lr``, with adapters of rank r on the target
modules and everything else frozen (:mod:`~contrastkit.models.lora`). The output is a run directory like
any other (report, plots, checkpoints, metrics.jsonl) plus ``lora.json`` (the settings),
``lora_adapter.safetensors`` (the adapter weights alone) and ``lora_summary.json`` (trainable share).
Every command loads it with the adapters merged into the base weights; a killed run resumes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from ..config import apply_overrides, config_from_dict
from ..engine.trainer import train
from ..models.build import build_model
from ..models.checkpoint import latest_checkpoint, load_module, read_run_config
from ..models.dual_encoder import DualEncoder
from ..models.lora import LoraSettings, adapter_state, add_lora, trainable_share, write_lora_settings


@dataclass
class LoraRequest:
    run: str
    data: str
    settings: LoraSettings
    steps: int = 300
    lr: float = 1e-3


def _has_checkpoint(out: Path) -> bool:
    try:
        latest_checkpoint(out)
    except (FileNotFoundError, ValueError):
        return False
    return True


def run_lora(
    request: LoraRequest, out: Path, *, overrides: Sequence[str] = (), progress: bool = True
) -> dict[str, Any]:
    """Train (or resume) the LoRA run in ``out``; returns its report."""
    request.settings.check()
    if request.steps < 1 or request.lr <= 0:
        raise ValueError(f"--steps must be >= 1 and --lr > 0, got {request.steps} and {request.lr}")
    start = read_run_config(Path(request.run))
    settings = [
        f"model.init_from={request.run}",
        f"data.source={request.data}",
        f"train.steps={request.steps}",
        f"train.lr={request.lr}",
        f"train.progress={str(progress).lower()}",
        *overrides,
    ]
    cfg = config_from_dict(apply_overrides({**start, "name": f"{start.get('name', 'run')}-lora"}, settings))
    out.mkdir(parents=True, exist_ok=True)
    resume = _has_checkpoint(out)
    if (
        resume
        and (out / "lora.json").exists()
        and json.loads((out / "lora.json").read_text()) != request.settings.to_dict()
    ):
        raise ValueError(f"{out} holds a LoRA run with other settings ({out / 'lora.json'}); choose another --out")
    write_lora_settings(out, request.settings)
    counts: dict[str, int] = {}

    def hook(model: DualEncoder) -> DualEncoder:
        add_lora(model, request.settings)
        counts["trainable"], counts["total"] = trainable_share(model)
        return model

    report = train(cfg, out, resume=resume, model_hook=hook)
    _save_adapter(out, request.settings)
    summary = {**counts, "share": counts["trainable"] / counts["total"], "settings": request.settings.to_dict()}
    (out / "lora_summary.json").write_text(json.dumps(summary, indent=1))
    return report


def _save_adapter(out: Path, settings: LoraSettings) -> None:
    """The adapter weights of the latest checkpoint, alone (``lora_adapter.safetensors``)."""
    cfg = config_from_dict(read_run_config(out))  # with the model facts the run recorded
    model = build_model(dataclasses.replace(cfg.model, pretrained=None, init_from=None), cfg.data.image_size)
    adapted = add_lora(model, settings)
    load_module(model, latest_checkpoint(out) / "model.safetensors")
    save_file(adapter_state(adapted), out / "lora_adapter.safetensors")
