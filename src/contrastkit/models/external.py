"""Models not trained by contrastkit, loaded for evaluation: open_clip and Hugging Face CLIP / SigLIP.

- ``open_clip:<name>`` with ``pretrained`` a **local** checkpoint file
  (``.safetensors`` preferred; other files go through
  ``torch.load(weights_only=True)``, never unpickling code); without
  ``pretrained`` the weights are random (useful for speed tests only);
- ``hf:<folder>``: a local ``transformers`` CLIP (``model_type: clip``) or
  SigLIP (``siglip``) folder with ``config.json``, weights, a tokenizer and an
  image-processor config (``preprocessor_config.json``). Nothing is downloaded.
  SigLIP texts are padded to ``max_length`` (as SigLIP was trained); CLIP texts
  to the longest in the batch (CLIP pools at the end-of-text token under a
  causal mask, so padding does not change the result).

Both come back as a :class:`~contrastkit.models.loaded.LoadedModel` whose embedder is a
:class:`~contrastkit.models.embedder.TorchEmbedder` (the model's own eval transform and
tokenizer). :func:`contrastkit.models.load.load_model` picks the loader from a model spec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ..hashing import hash_state_dict
from .embedder import TorchEmbedder, resolve_device
from .loaded import FileHasher, LoadedModel, file_hash, scalar

OPEN_CLIP_PREFIX = "open_clip:"
HF_PREFIX = "hf:"
HF_MODEL_TYPES = ("clip", "siglip")
DEFAULT_BATCH = 256  # images / texts per forward when the caller gives no batch size
HF_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


# ----------------------------------------------------------------------------- open_clip


def load_open_clip_model(
    name: str,
    pretrained: str | Path | None = None,
    *,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    batch_size: int | None = None,
) -> LoadedModel:
    """open_clip architecture ``name`` with weights from a local file (random weights without one)."""
    from .open_clip_towers import _require_open_clip

    open_clip = _require_open_clip()
    if name not in open_clip.list_models():
        raise ValueError(
            f"open_clip has no model {name!r}; see open_clip.list_models() "
            f"(e.g. {', '.join(open_clip.list_models()[:5])}, ...)"
        )
    if pretrained is not None and not Path(pretrained).is_file():
        raise FileNotFoundError(
            f"--pretrained: {pretrained} is not a file (give a local checkpoint file; downloads are not attempted)"
        )
    dev = resolve_device(device)
    model, _, preprocess = open_clip.create_model_and_transforms(
        name,
        pretrained=str(pretrained) if pretrained is not None else None,
        device=dev,
        weights_only=True,
        pretrained_text=False,
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    if not hasattr(model, "encode_image") or not hasattr(model, "encode_text"):
        raise ValueError(f"open_clip model {name!r} is not a two-tower CLIP model")
    embedder = TorchEmbedder(
        preprocess=preprocess,
        tokenize=tokenizer,
        encode_image=lambda x: model.encode_image(x),
        encode_text=lambda t: model.encode_text(t),
        module=model,
        device=dev,
        precision=precision,
        batch_size=batch_size or DEFAULT_BATCH,
    )
    info = {"name": name, "preprocess": repr(preprocess), "open_clip": getattr(open_clip, "__version__", "?")}

    def weights(cache: FileHasher | None) -> str:
        if pretrained is not None:
            return file_hash(cache, Path(pretrained))
        return hash_state_dict(model.state_dict())

    return LoadedModel(
        embedder,
        "open_clip",
        OPEN_CLIP_PREFIX + name,
        str(pretrained) if pretrained is not None else None,
        logit_scale=float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else None,
        logit_bias=scalar(getattr(model, "logit_bias", None)),
        info=info,
        weights_hash=weights,
        batch_size=batch_size or DEFAULT_BATCH,
    )


# ----------------------------------------------------------------------------- Hugging Face


def _features(out: Any) -> Tensor:
    """transformers < 5 returns the projected tensor; >= 5 a ModelOutput whose pooler_output is it."""
    if isinstance(out, Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, Tensor):
        return pooled
    raise TypeError(f"unexpected feature output {type(out).__name__} from a transformers model")


def load_hf_model(
    folder: str | Path,
    *,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    batch_size: int | None = None,
) -> LoadedModel:
    """A transformers CLIPModel / SiglipModel from a local folder (tokenizer and image processor alongside)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"hf model: {folder} is not a local model folder with a config.json")
    config = json.loads((folder / "config.json").read_text())
    model_type = config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(
            f"hf model {folder}: model_type {model_type!r} is not supported for evaluation; "
            f"supported: {', '.join(HF_MODEL_TYPES)}"
        )
    try:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("hf models need transformers: pip install 'contrastkit[hf]'") from err

    has_safetensors = any(folder.glob("*.safetensors"))
    model = AutoModel.from_pretrained(
        str(folder), use_safetensors=True if has_safetensors else None, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    dev = resolve_device(device)
    model.to(dev).eval()
    max_len = int(model.config.text_config.max_position_embeddings)
    padding = "max_length" if model_type == "siglip" else True

    def tokenize(texts: list[str]) -> dict[str, Tensor]:
        enc = tokenizer(texts, padding=padding, truncation=True, max_length=max_len, return_tensors="pt")
        keep = ("input_ids",) if model_type == "siglip" else ("input_ids", "attention_mask")
        return {k: enc[k] for k in keep if k in enc}

    def preprocess(image: Image.Image) -> Tensor:
        return processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    embedder = TorchEmbedder(
        preprocess=preprocess,
        tokenize=tokenize,
        encode_image=lambda x: _features(model.get_image_features(pixel_values=x)),
        encode_text=lambda t: _features(model.get_text_features(**t)),
        module=model,
        device=dev,
        precision=precision,
        batch_size=batch_size or DEFAULT_BATCH,
    )
    import transformers

    proc_cfg = folder / "preprocessor_config.json"
    info = {
        "model_type": model_type,
        "processor": proc_cfg.read_text() if proc_cfg.exists() else None,
        "padding": str(padding),
        "max_length": max_len,
        "transformers": transformers.__version__,
    }

    def weights(cache: FileHasher | None) -> list[list[str]]:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in HF_FILE_SUFFIXES)
        return [[p.name, file_hash(cache, p)] for p in files]

    scale = getattr(model, "logit_scale", None)
    return LoadedModel(
        embedder,
        "hf",
        HF_PREFIX + str(folder),
        None,
        logit_scale=float(scale.detach().exp()) if isinstance(scale, Tensor) else None,
        logit_bias=scalar(getattr(model, "logit_bias", None)),
        info=info,
        weights_hash=weights,
        batch_size=batch_size or DEFAULT_BATCH,
    )
