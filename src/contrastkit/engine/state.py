"""Save and restore everything a resumed run needs: weights, optimizer, teacher, RNG, data position."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..models.checkpoint import (
    latest_checkpoint,
    load_module,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)


def resume_step(run_dir: Path) -> tuple[int, dict[str, Any]]:
    """The step of the latest checkpoint and its JSON state."""
    state = json.loads((latest_checkpoint(run_dir) / "trainer.json").read_text())
    return int(state["step"]), state


def save_state(
    run_dir: Path,
    step: int,
    model: nn.Module,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    teacher: nn.Module | None,
    skipped: Counter[str],
    scaler: Any = None,
    clusters: nn.Module | None = None,
) -> None:
    tensors, meta = optimizer_to_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    extra: dict[str, Any] = {"optimizer": meta, "python_rng": list(random.getstate()), "skipped": dict(skipped)}
    if scaler is not None:
        extra["grad_scaler"] = {
            k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in scaler.state_dict().items()
        }
    modules = {name: module for name, module in (("teacher", teacher), ("clusters", clusters)) if module is not None}
    save_checkpoint(run_dir, step, model, objective, tensors, extra, extra_modules=modules)


def restore_state(
    run_dir: Path,
    state: dict[str, Any],
    model: nn.Module,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    teacher: nn.Module | None,
    scaler: Any = None,
    clusters: nn.Module | None = None,
) -> Counter[str]:
    """Load the latest checkpoint into the live objects; returns the skipped-record counts so far."""
    ckpt = latest_checkpoint(run_dir)
    load_module(model, ckpt / "model.safetensors")
    if (ckpt / "objective.safetensors").exists():
        load_module(objective, ckpt / "objective.safetensors")
    if teacher is not None:
        load_module(teacher, ckpt / "teacher.safetensors")
    if clusters is not None:
        load_module(clusters, ckpt / "clusters.safetensors")
    tensors = load_file(str(ckpt / "trainer.safetensors"))
    optimizer_from_tensors(optimizer, tensors, state["optimizer"])
    torch.set_rng_state(tensors["rng.torch"])
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    if scaler is not None and "grad_scaler" in state:
        scaler.load_state_dict(state["grad_scaler"])
    return Counter(state.get("skipped", {}))
