"""Export a run with open_clip towers as open_clip's own checkpoint: ``<name>.json`` + ``open_clip_model.safetensors``.

The DualEncoder keeps open_clip's modules whole (``image_tower.visual`` is the model's ``visual``,
``text_tower.model`` the rest of the model), so the export renames keys only:

    image_tower.visual.<k>  ->  visual.<k>
    text_tower.model.<k>    ->  <k>
    log_logit_scale         ->  logit_scale      (open_clip also stores log t)
    logit_bias              ->  logit_bias       (the config then sets init_logit_bias so the model has one)

and writes the architecture's config under the model's name, so that

    open_clip.add_model_config(DIR)
    model, _, preprocess = open_clip.create_model_and_transforms(NAME, pretrained=DIR/open_clip_model.safetensors)

rebuilds the same model with open_clip's own factory. Runs whose projection to ``model.embed_dim`` is an
extra linear layer (an ``embed_dim`` other than the architecture's) have no open_clip equivalent and are
refused, as are runs with other towers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from ..config import Config
from ..models.build import OPEN_CLIP_PREFIX
from ..models.dual_encoder import DualEncoder

WEIGHTS = "open_clip_model.safetensors"


class ExportError(ValueError):
    """The run cannot be written in the asked format; the message says why."""


def open_clip_name(cfg: Config, fmt: str = "open_clip") -> str:
    """The open_clip architecture of a run whose two towers are one open_clip model, else :class:`ExportError`."""
    towers = (cfg.model.image_tower, cfg.model.text_tower)
    if not all(t.startswith(OPEN_CLIP_PREFIX) for t in towers) or towers[0] != towers[1]:
        raise ExportError(
            f"--format {fmt} needs both towers from one open_clip model; this run has image tower "
            f"{towers[0]!r} and text tower {towers[1]!r} (try --format onnx)"
        )
    return towers[0][len(OPEN_CLIP_PREFIX) :]


def open_clip_state(model: DualEncoder) -> dict[str, Tensor]:
    """The DualEncoder's weights under open_clip's ``CLIP`` keys."""
    if not (isinstance(model.image_proj, nn.Identity) and isinstance(model.text_proj, nn.Identity)):
        raise ExportError(
            "--format open_clip: this run projects the towers to model.embed_dim with extra linear layers "
            "(model.embed_dim differs from the architecture's embed_dim); open_clip has no place for them"
        )
    state: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("image_tower.visual."):
            state["visual." + key[len("image_tower.visual.") :]] = value
        elif key.startswith("text_tower.model."):
            state[key[len("text_tower.model.") :]] = value
        elif key == "log_logit_scale":
            state["logit_scale"] = value
        elif key == "logit_bias":
            state["logit_bias"] = value
        else:
            raise ExportError(f"--format open_clip: weight {key!r} has no place in an open_clip model")
    return {k: v.detach().contiguous().clone().cpu() for k, v in state.items()}


def architecture(name: str, has_bias: bool) -> dict[str, Any]:
    """open_clip's config of ``name`` (a bias makes ``init_logit_bias`` present, so the model holds one)."""
    import open_clip

    arch = open_clip.get_model_config(name)
    if arch is None:
        raise ExportError(f"open_clip does not know the architecture {name!r} (was its config registered?)")
    arch = json.loads(json.dumps(arch))
    if has_bias:
        arch.setdefault("init_logit_bias", 0.0)
    return arch


def export_open_clip(model: DualEncoder, cfg: Config, out: Path) -> dict[str, str]:
    """Write ``out/<name>.json`` and ``out/open_clip_model.safetensors``; the files written, by role."""
    name = open_clip_name(cfg)
    state = open_clip_state(model)
    arch = architecture(name, "logit_bias" in state)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(arch, indent=1))
    save_file(state, str(out / WEIGHTS))
    return {"config": f"{name}.json", "weights": WEIGHTS}


def load_exported(out: Path, name: str) -> tuple[Any, Any, Any]:
    """open_clip's own factory on an export: (model, preprocess, tokenizer), model in eval mode."""
    import open_clip

    open_clip.add_model_config(out)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(out / WEIGHTS))
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(name)


@torch.no_grad()
def verify_open_clip(model: DualEncoder, out: Path, name: str, texts: list[str], pixels: Tensor) -> float:
    """Max |difference| between the run's embeddings and those of open_clip's factory on the export."""
    loaded, _, tokenizer = load_exported(out, name)
    model.eval()
    ours = torch.cat([model.encode_image(pixels), model.encode_text(model.tokenize(texts))])
    theirs = torch.cat(
        [loaded.encode_image(pixels, normalize=True), loaded.encode_text(tokenizer(texts), normalize=True)]
    )
    return float((ours - theirs).abs().max())
