"""Rebuild a trained model from a run directory (config.json + safetensors)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import Config, config_from_dict
from ..objectives import Objective, build
from .build import build_model
from .checkpoint import latest_checkpoint, load_module, read_run_config
from .dual_encoder import DualEncoder


def load_run(run_dir: str | Path) -> tuple[DualEncoder, Config, Objective]:
    """The newest checkpoint of ``run_dir`` as (model, config, objective), model in eval mode."""
    run_dir = Path(run_dir)
    cfg = config_from_dict(read_run_config(run_dir))
    objective = build(cfg.objective)
    # Weights come from the checkpoint: do not look for the original pretrained file.
    model_cfg = dataclasses.replace(cfg.model, pretrained=None, init_from=None)
    model = build_model(model_cfg, cfg.data.image_size, objective.model_defaults)
    ckpt = latest_checkpoint(run_dir)
    load_module(model, ckpt / "model.safetensors")
    if (ckpt / "objective.safetensors").exists():
        load_module(objective, ckpt / "objective.safetensors")
    model.eval()
    return model, cfg, objective
