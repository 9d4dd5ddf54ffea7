"""``contrastkit adapt lora``: fine-tune a run with LoRA adapters (peft) on new data, as a training run.

The start run's recipe (objective, model, data settings) is trained again from its weights
(``model.init_from``) on ``--data``, for ``--steps`` at ``--lr``, with its ``lora`` section set to the
adapters asked for (rank r on the target modules, everything else frozen; :mod:`~contrastkit.models.lora`).
The same run follows from any recipe with ``model.init_from`` and a ``lora`` section through ``contrastkit
train``; this command fills them in from a run. The output is a run directory like any other (report, plots,
checkpoints, metrics.jsonl, config.json with the ``lora`` section) plus ``lora_adapter.safetensors`` (the
adapter weights alone) and ``lora_summary.json`` (trainable share). Every command loads it with the adapters
merged into the base weights; a killed run resumes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from ..config import LoraConfig, apply_overrides, config_from_dict
from ..engine.trainer import train
from ..models.build import build_model
from ..models.checkpoint import latest_checkpoint, load_module, read_run_config
from ..models.lora import adapter_state, add_lora, trainable_share


@dataclass
class LoraRequest:
    run: str
    data: str
    settings: LoraConfig
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
    if request.settings.rank < 1:
        raise ValueError(f"--rank must be >= 1, got {request.settings.rank}")
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
    data = {**start, "name": f"{start.get('name', 'run')}-lora", "lora": asdict(request.settings)}
    cfg = config_from_dict(apply_overrides(data, settings))
    out.mkdir(parents=True, exist_ok=True)
    resume = _has_checkpoint(out)
    if resume and read_run_config(out).get("lora") != asdict(cfg.lora):
        raise ValueError(f"{out} holds a run with other LoRA settings ({out / 'config.json'}); choose another --out")
    report = train(cfg, out, resume=resume)
    _save_adapter(out)
    return report


def _save_adapter(out: Path) -> None:
    """The adapter weights of the latest checkpoint, alone (``lora_adapter.safetensors``), and the trainable share."""
    cfg = config_from_dict(read_run_config(out))  # with the model facts the run recorded
    model = build_model(dataclasses.replace(cfg.model, pretrained=None, init_from=None), cfg.data.image_size)
    adapted = add_lora(model, cfg.lora)
    trainable, total = trainable_share(model)
    load_module(model, latest_checkpoint(out) / "model.safetensors")
    save_file(adapter_state(adapted), out / "lora_adapter.safetensors")
    summary = {"trainable": trainable, "total": total, "share": trainable / total, "settings": asdict(cfg.lora)}
    (out / "lora_summary.json").write_text(json.dumps(summary, indent=1))
