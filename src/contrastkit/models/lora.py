r"""LoRA adapters on a dual encoder's towers (Hu et al. 2021, "LoRA: Low-Rank Adaptation"), through peft.

A target layer with weight W gets a trainable low-rank update: W' = W + (alpha / r) B A, A (r x d_in)
random, B (d_out x r) zero at the start, so the adapted model starts as the model itself. Every other
parameter is frozen. After training, ``merge_lora`` folds B A into W and puts the plain layers back: the
merged model has the original architecture and state-dict keys (any contrastkit command, export or
open_clip reads it) and the same embeddings as the adapted one.

A recipe asks for adapters in its ``lora`` section (``lora.rank`` > 0, with ``model.init_from`` naming the run to
adapt); training then adapts the model before its first step and the run's checkpoints hold the base weights and
the adapters, so it resumes as any run does, and :func:`~contrastkit.models.load.load_run` merges them on loading:
every command reads a LoRA run as a plain model.

Targets are module names as peft matches them (the last part of the module path): for the built-in towers
``self_attn`` (attention in- and out-projections), ``linear1``, ``linear2`` (the MLP), ``image_proj``,
``text_proj``; for open_clip towers e.g. ``c_fc``, ``c_proj``, ``out_proj``. ``re:EXPR`` is a regular
expression over full module names, e.g. ``re:image_tower\.body\.\d+\.0`` for the tiny CNN's convolutions
(peft adapts Conv2d layers too).
"""

from __future__ import annotations

import re
from typing import Any

import torch.nn as nn
import torch.nn.functional as F

from ..config import LoraConfig
from .dual_encoder import DualEncoder


def add_lora(model: DualEncoder, settings: LoraConfig) -> nn.Module:
    """Adds LoRA adapters to the target modules of ``model`` in place and freezes all else; returns peft's
    wrapper, whose ``.model`` is ``model`` (train and save ``model`` as before; merge through the wrapper)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft.tuners.lora import LoraModel

    if settings.rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {settings.rank}")
    if not settings.targets:
        raise ValueError("LoRA needs at least one target module name")
    names = [name for name, _ in model.named_modules() if name]
    patterns = {t: _target_pattern(t) for t in settings.targets}
    missing = [t for t, p in patterns.items() if not any(re.fullmatch(p, n) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names if not n.rsplit(".", 1)[-1].isdigit()})
        raise ValueError(
            f"LoRA targets {', '.join(missing)} match no module of this model; its module names include "
            f"{', '.join(leaves[:20])} (or give a regular expression over full names: re:image_tower\\.body\\..*)"
        )
    config = PeftLoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules="|".join(f"(?:{p})" for p in patterns.values()),  # peft full-matches a string
    )
    wrapper = LoraModel(model, config, "default")
    # nn.TransformerEncoderLayer's inference fast path reads the attention and MLP weights directly and would
    # skip the adapters in eval mode; a layer whose activation_relu_or_gelu is 0 always takes the module path.
    for module in model.modules():
        if isinstance(module, nn.TransformerEncoderLayer):
            module.activation_relu_or_gelu = 0
    return wrapper


def image_side_targets(model: DualEncoder) -> list[str]:
    """Every adaptable layer that embeds an image, as full-name targets: the image tower's attention blocks
    (nn.MultiheadAttention, which reads its projections' weights directly, so it is adapted as one module),
    its other Linear and Conv2d layers, and the image projection."""
    attention = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    names = [
        name
        for name, module in model.named_modules()
        if (name.startswith("image_tower.") or name == "image_proj")
        and (isinstance(module, (nn.Linear, nn.Conv2d, nn.MultiheadAttention)))
        and not any(name.startswith(f"{a}.") for a in attention)
    ]
    if not names:
        raise ValueError("the image tower has no Linear, Conv2d or attention layer to adapt with LoRA")
    return [f"re:{re.escape(name)}" for name in names]


def _target_pattern(target: str) -> str:
    """A target as a regular expression over full module names: ``re:EXPR`` as given, a plain name as the last part."""
    if target.startswith("re:"):
        return target[3:]
    return rf"(?:.*\.)?{re.escape(target)}"


def merge_lora(adapted: nn.Module) -> DualEncoder:
    """Fold every adapter into its base weights and return the plain model (same embeddings)."""
    merged = adapted.merge_and_unload()  # type: ignore[operator]  # peft's LoraModel method
    for module in merged.modules():
        if isinstance(module, nn.TransformerEncoderLayer):
            module.activation_relu_or_gelu = _fast_path_code(module)
    for param in merged.parameters():
        param.requires_grad_(True)
    return merged


def _fast_path_code(layer: nn.TransformerEncoderLayer) -> int:
    """What nn.TransformerEncoderLayer sets activation_relu_or_gelu to: 1 relu, 2 gelu, 0 other."""
    act = layer.activation
    if act is F.relu or isinstance(act, nn.ReLU):
        return 1
    if act is F.gelu or isinstance(act, nn.GELU):
        return 2
    return 0


def adapter_state(adapted: nn.Module) -> dict[str, Any]:
    """The adapter weights only (``lora_`` parameters), for saving next to the merged model."""
    return {k: v.detach().contiguous() for k, v in adapted.state_dict().items() if "lora_" in k}


def trainable_share(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters) of ``model``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
