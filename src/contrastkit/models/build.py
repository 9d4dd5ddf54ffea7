"""Build a DualEncoder from a ModelConfig (towers by name)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ..config import ModelConfig
from .dual_encoder import DualEncoder
from .hf_towers import HF_PREFIX, HFTextTower
from .tiny import TinyCNN, TinyTextTransformer
from .towers import ImageTower, NoImageTower, TextTower

OPEN_CLIP_PREFIX = "open_clip:"
DEFAULT_LOGIT_SCALE = 1 / 0.07
IMAGE_TOWERS = ("tiny_cnn", OPEN_CLIP_PREFIX + "<model-name>", "none")
TEXT_TOWERS = ("tiny_transformer", OPEN_CLIP_PREFIX + "<model-name>", "hf:minilm", "hf:<local-folder>")


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def build_model(
    cfg: ModelConfig, image_size: int = 64, objective_defaults: Mapping[str, float] | None = None
) -> DualEncoder:
    """Towers by name; temperature/bias from the config, else the objective's wish, else CLIP's."""
    defaults = dict(objective_defaults or {})
    image_tower: ImageTower
    text_tower: TextTower
    scale = defaults.get("logit_scale", DEFAULT_LOGIT_SCALE)
    bias = defaults.get("logit_bias")
    open_clip_names = {
        t[len(OPEN_CLIP_PREFIX) :] for t in (cfg.image_tower, cfg.text_tower) if t.startswith(OPEN_CLIP_PREFIX)
    }
    if len(open_clip_names) > 1:
        raise ValueError(
            f"model.image_tower and model.text_tower name different open_clip models "
            f"({', '.join(sorted(open_clip_names))}); use one architecture for both"
        )
    parts = None
    if open_clip_names:
        from .open_clip_towers import build_open_clip

        parts = build_open_clip(open_clip_names.pop(), cfg.pretrained)
        if cfg.pretrained is not None:
            scale = parts.logit_scale
            bias = parts.logit_bias if parts.logit_bias is not None else bias
    elif cfg.pretrained is not None:
        raise ValueError(
            "model.pretrained applies to open_clip towers; the tiny towers start from random weights "
            "(use `--resume` or `eval --checkpoint` for contrastkit checkpoints)"
        )

    if cfg.image_tower == "tiny_cnn":
        image_tower = TinyCNN(cfg.width, image_size)
    elif cfg.image_tower == "none":  # a text model: text pairs go through the text tower on both sides
        image_tower = NoImageTower(cfg.embed_dim)
    elif parts is not None and cfg.image_tower.startswith(OPEN_CLIP_PREFIX):
        image_tower = parts.image
    else:
        raise ValueError(f"model.image_tower: unknown tower {cfg.image_tower!r}; choose {' | '.join(IMAGE_TOWERS)}")

    if cfg.text_tower == "tiny_transformer":
        text_tower = TinyTextTransformer(
            cfg.width,
            cfg.text_layers,
            4,
            cfg.vocab_size,
            cfg.context_length,
            pooling=cfg.text_pooling,
            causal=cfg.text_causal,
        )
    elif parts is not None and cfg.text_tower.startswith(OPEN_CLIP_PREFIX):
        text_tower = parts.text
    elif cfg.text_tower.startswith(HF_PREFIX):
        text_tower = HFTextTower(cfg.text_tower[len(HF_PREFIX) :], cfg.context_length)
    else:
        raise ValueError(f"model.text_tower: unknown tower {cfg.text_tower!r}; choose {' | '.join(TEXT_TOWERS)}")

    if cfg.logit_scale_init is not None:
        scale = cfg.logit_scale_init
    if cfg.logit_bias_init is not None:
        bias = cfg.logit_bias_init
    model = DualEncoder(image_tower, text_tower, cfg.embed_dim, scale, bias, cfg.logit_scale_max, cfg.learn_logit_scale)
    # A locked tower whose width equals embed_dim keeps its pretrained space exactly (no projection): LiT.
    if cfg.lock_image:
        _freeze(model.image_tower)
        if model.image_tower.output_dim == cfg.embed_dim:
            model.image_proj = nn.Identity()
    if cfg.lock_text:
        _freeze(model.text_tower)
    # A locked text tower (LiT) or the text tower of a text model (as sentence-transformers) whose width
    # equals embed_dim keeps its pretrained space: no projection.
    if (cfg.lock_text or cfg.image_tower == "none") and model.text_tower.output_dim == cfg.embed_dim:
        model.text_proj = nn.Identity()
    return model
