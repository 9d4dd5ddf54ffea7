"""Load what a model spec names: a contrastkit run directory, ``open_clip:<name>`` or ``hf:<folder>``.

    from contrastkit.models.load import load_model
    model = load_model("open_clip:ViT-B-32", pretrained="weights/vit_b32.safetensors")
    model = load_model("hf:/models/clip-vit-base-patch32")           # CLIPModel / SiglipModel folder
    model = load_model("runs/demo")                                  # a contrastkit run directory
    model = load_model("text:hf:minilm")                             # a text encoder (texts only)
    model.embedder.embed_images([...]); model.embedder.embed_texts([...])

A run directory (or ``run:DIR``) is rebuilt from its ``config.json`` and the safetensors of
its latest checkpoint: the config names the towers and the model facts the objective chose
at training time (initial temperature, whether there is a bias), so loading needs no
objective and runs no code from the run directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors import safe_open

from ..config import Config, LoraConfig, ModelConfig, config_from_dict
from .build import build_model
from .checkpoint import latest_checkpoint, load_module, read_run_config
from .dual_encoder import DualEncoder
from .embedder import resolve_device
from .external import HF_PREFIX, OPEN_CLIP_PREFIX, load_hf_model, load_open_clip_model
from .hf_towers import resolve_hf_path
from .loaded import LoadedModel, file_hash
from .lora import add_lora, merge_lora

RUN_PREFIX = "run:"
TEXT_PREFIX = "text:"


def _has_bias(weights: Path) -> bool:
    with safe_open(str(weights), framework="pt") as fh:
        return "logit_bias" in fh.keys()  # noqa: SIM118 - safe_open is not a mapping


def load_run(run_dir: str | Path) -> tuple[DualEncoder, Config]:
    """The newest checkpoint of ``run_dir`` as (model, config), model in eval mode.

    Runs written before config.json recorded ``model.logit_bias_init`` get their bias
    parameter from the checkpoint's keys. A LoRA run (``lora.rank`` > 0) is returned with its adapters merged
    and a config without them (``lora.rank`` 0), as a plain model.
    """
    run_dir = Path(run_dir)
    cfg = config_from_dict(read_run_config(run_dir))
    weights = latest_checkpoint(run_dir) / "model.safetensors"
    # Weights come from the checkpoint: do not look for the original pretrained file.
    model_cfg = dataclasses.replace(cfg.model, pretrained=None, init_from=None)
    if model_cfg.logit_bias_init is None and _has_bias(weights):
        model_cfg = dataclasses.replace(model_cfg, logit_bias_init=0.0)  # its value is in the checkpoint
    model = build_model(model_cfg, cfg.data.image_size)
    if not cfg.lora.rank:
        load_module(model, weights)
    else:  # a LoRA run: its checkpoint holds base weights + adapters; merge them into a plain model
        adapted = add_lora(model, cfg.lora)
        load_module(model, weights)
        model = merge_lora(adapted)
        cfg = dataclasses.replace(cfg, lora=LoraConfig())  # the config of the merged model: no adapters
    model.eval()
    return model, cfg


def load_run_model(
    run_dir: str | Path,
    *,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    batch_size: int | None = None,
) -> LoadedModel:
    """The latest checkpoint of a contrastkit run directory, ready for evaluation."""
    run_dir = Path(run_dir)
    model, cfg = load_run(run_dir)
    model.to(resolve_device(device)).eval()
    weights = latest_checkpoint(run_dir) / "model.safetensors"
    loaded = LoadedModel.of_dual_encoder(
        model,
        str(run_dir),
        batch_size=batch_size or cfg.eval.batch_size,
        precision=precision,
        config=cfg,
        info={"model": cfg.to_dict()["model"], "image_size": cfg.data.image_size},
        weights_hash=lambda hasher: file_hash(hasher, weights),
    )
    loaded.pretrained = str(weights)
    return loaded


def load_text_model(
    tower: str, *, device: str | torch.device = "auto", precision: str = "fp32", batch_size: int | None = None
) -> LoadedModel:
    """A text tower as it comes (``text:hf:minilm``, ``text:hf:<folder>``): a text model in the tower's own space."""
    if not tower.startswith(HF_PREFIX):
        raise ValueError(
            f"--model text:{tower}: name a Hugging Face text tower, e.g. text:hf:minilm or text:hf:<folder>"
        )
    from transformers import AutoConfig

    folder = resolve_hf_path(tower[len(HF_PREFIX) :])
    width = int(AutoConfig.from_pretrained(str(folder)).hidden_size)
    model = build_model(ModelConfig(image_tower="none", text_tower=tower, embed_dim=width, context_length=64))
    model.to(resolve_device(device)).eval()
    weights = sorted(folder.glob("*.safetensors"))
    return LoadedModel.of_dual_encoder(
        model,
        f"text:{tower}",
        batch_size=batch_size or 256,
        precision=precision,
        info={"text_tower": tower, "context_length": 64},
        weights_hash=lambda hasher: ",".join(file_hash(hasher, w) for w in weights),
    )


def load_model(
    spec: str,
    pretrained: str | Path | None = None,
    *,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    batch_size: int | None = None,
) -> LoadedModel:
    """A :class:`LoadedModel` from a model spec (see the module docstring)."""
    if spec.startswith(OPEN_CLIP_PREFIX):
        return load_open_clip_model(
            spec[len(OPEN_CLIP_PREFIX) :], pretrained, device=device, precision=precision, batch_size=batch_size
        )
    if pretrained is not None:
        raise ValueError("--pretrained applies to open_clip:<name> models only")
    if spec.startswith(HF_PREFIX):
        return load_hf_model(spec[len(HF_PREFIX) :], device=device, precision=precision, batch_size=batch_size)
    if spec.startswith(TEXT_PREFIX):
        return load_text_model(spec[len(TEXT_PREFIX) :], device=device, precision=precision, batch_size=batch_size)
    run_dir = spec[len(RUN_PREFIX) :] if spec.startswith(RUN_PREFIX) else spec
    if Path(run_dir).is_dir():
        return load_run_model(run_dir, device=device, precision=precision, batch_size=batch_size)
    raise ValueError(f"--model: {spec!r} is not a run directory, open_clip:<name>, hf:<folder> or text:<text tower>")
