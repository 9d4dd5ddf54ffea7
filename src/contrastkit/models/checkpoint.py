"""Checkpoints: safetensors for every tensor, JSON for everything else.

Layout of a run directory::

    RUN_DIR/config.json              the full run config
    RUN_DIR/latest                   name of the newest complete checkpoint
    RUN_DIR/checkpoints/step-000500/ model.safetensors, objective.safetensors, teacher.safetensors
                                     (EMA teacher, when a term uses one), trainer.safetensors
                                     (optimizer moments, RNG), trainer.json
    RUN_DIR/reference.safetensors    the frozen initial model, when a term uses one

A checkpoint is written to a temporary folder and renamed into place, then
``latest`` is replaced atomically, so a run killed mid-write keeps its last
good checkpoint. Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

LATEST = "latest"


def _contiguous(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_module(module: nn.Module, path: Path) -> None:
    # clone() breaks storage sharing so safetensors accepts tied weights.
    save_file({k: v.clone() for k, v in _contiguous(module.state_dict()).items()}, str(path))


def load_module(module: nn.Module, path: Path) -> None:
    state = load_file(str(path))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]} (was it made with another config?)"
        )


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into tensors (safetensors) and JSON."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, slots in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(slots)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    objective: nn.Module | None = None,
    trainer_tensors: dict[str, Tensor] | None = None,
    trainer_meta: dict[str, Any] | None = None,
    keep: int = 2,
    extra_modules: dict[str, nn.Module] | None = None,
) -> Path:
    """Write ``checkpoints/step-NNNNNN`` atomically and point ``latest`` at it."""
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    final = ckpt_root / name
    tmp = ckpt_root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_module(model, tmp / "model.safetensors")
    if objective is not None and len(objective.state_dict()) > 0:
        save_module(objective, tmp / "objective.safetensors")
    for name_, module in (extra_modules or {}).items():
        save_module(module, tmp / f"{name_}.safetensors")
    if trainer_tensors is not None:
        save_file(_contiguous(trainer_tensors), str(tmp / "trainer.safetensors"))
    (tmp / "trainer.json").write_text(json.dumps({"step": step, **(trainer_meta or {})}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer_tmp = run_dir / f".{LATEST}.tmp"
    pointer_tmp.write_text(name)
    os.replace(pointer_tmp, run_dir / LATEST)
    old = sorted(p for p in ckpt_root.iterdir() if p.name.startswith("step-") and p.name != name)
    for stale in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path:
    pointer = run_dir / LATEST
    if not pointer.exists():
        raise FileNotFoundError(f"{run_dir} holds no checkpoint (no {LATEST} file); is it a contrastkit run directory?")
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"checkpoint {path} named by {pointer} is incomplete")
    return path


def read_run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no config.json; is it a contrastkit run directory?")
    return json.loads(path.read_text())
