"""Embedders for evaluation: contrastkit runs, open_clip models, Hugging Face CLIP / SigLIP.

    from contrastkit.models.external import load_model
    model = load_model("open_clip:ViT-B-32", pretrained="weights/vit_b32.safetensors")
    model = load_model("hf:/models/clip-vit-base-patch32")           # CLIPModel / SiglipModel folder
    model = load_model("runs/demo")                                  # a contrastkit run directory
    model.embedder.embed_images([...]); model.embedder.embed_texts([...])

Model specs (``--model`` of ``contrastkit eval``):

- a contrastkit **run directory** (or ``run:DIR``): its latest checkpoint;
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

Every embedder is a :class:`~contrastkit.evaluate.embedder.PixelEmbedder`:
``preprocess`` (PIL -> C x H x W, the model's own eval transform),
``embed_pixels`` and ``embed_texts`` run the model under ``torch.inference_mode``
on ``device`` (``auto``: CUDA when available) at ``precision`` ``fp32`` or
``amp`` (autocast: float16 on CUDA, bfloat16 on CPU, as CLIP_benchmark's
``--amp``), and return L2-normalised float32 CPU rows.

:meth:`LoadedModel.fingerprint` is the feature-cache key of the model: a sha256
over the content of its weight files (or its state dict), the architecture,
the preprocessing, the precision and the library version.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

if TYPE_CHECKING:
    from ..evaluate.cache import FeatureCache

OPEN_CLIP_PREFIX = "open_clip:"
HF_PREFIX = "hf:"
RUN_PREFIX = "run:"
HF_MODEL_TYPES = ("clip", "siglip")
PRECISIONS = ("fp32", "amp")
HF_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TorchEmbedder:
    """Shared machinery: a model on a device, its preprocessing, its tokenizer, batched forwards."""

    def __init__(self, *, preprocess: Callable[[Image.Image], Tensor], tokenize: Callable[[list[str]], Any],
                 encode_image: Callable[[Tensor], Tensor], encode_text: Callable[[Any], Tensor],
                 module: nn.Module, device: torch.device, precision: str = "fp32", batch_size: int = 256) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.preprocess = preprocess
        self._tokenize = tokenize
        self._encode_image = encode_image
        self._encode_text = encode_text
        self.module = module
        self.device = device
        self.precision = precision
        self.batch_size = batch_size

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "amp":
            dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    @staticmethod
    def _finish(out: Tensor) -> Tensor:
        return F.normalize(out.float(), dim=-1).cpu()

    @torch.inference_mode()
    def embed_pixels(self, pixels: Tensor) -> Tensor:
        self.module.eval()
        with self._autocast():
            out = self._encode_image(pixels.to(self.device, non_blocking=True))
        return self._finish(out)

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> Tensor:
        parts = [self.embed_pixels(torch.stack([self.preprocess(im) for im in images[s:s + self.batch_size]]))
                 for s in range(0, len(images), self.batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, 0)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        self.module.eval()
        parts = []
        for s in range(0, len(texts), self.batch_size):
            tokens = self._tokenize(list(texts[s:s + self.batch_size]))
            tokens = {k: v.to(self.device) for k, v in tokens.items()} if isinstance(tokens, dict) \
                else tokens.to(self.device)
            with self._autocast():
                parts.append(self._finish(self._encode_text(tokens)))
        return torch.cat(parts) if parts else torch.empty(0, 0)


@dataclass
class LoadedModel:
    """A model ready for evaluation, with what its result JSON and the feature cache need.

    ``name`` / ``pretrained`` fill CLIP_benchmark's ``model`` / ``pretrained``
    fields; ``logit_scale`` (t = 1/tau) and ``logit_bias`` are the model's own.
    """

    embedder: TorchEmbedder
    kind: str  # "contrastkit" | "open_clip" | "hf"
    name: str
    pretrained: str | None
    logit_scale: float | None = None
    logit_bias: float | None = None
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able description (for the cache's model.json)
    config: Any = None  # a contrastkit run's Config (its data settings are the defaults for --data)
    _weights: Callable[["FeatureCache | None"], Any] | None = None
    _fingerprint: str | None = None

    @property
    def temperature(self) -> float | None:
        return None if not self.logit_scale else 1.0 / self.logit_scale

    def fingerprint(self, cache: "FeatureCache | None" = None) -> str:
        """sha256 identifying the model's weights, preprocessing and precision (feature-cache key)."""
        if self._fingerprint is None:
            from ..evaluate.cache import hash_json

            weights = self._weights(cache) if self._weights is not None else None
            self._fingerprint = hash_json({"kind": self.kind, "info": self.info, "weights": weights,
                                           "precision": self.embedder.precision})
        return self._fingerprint


def _file_hash(cache: "FeatureCache | None", path: Path) -> str:
    from ..evaluate.cache import sha256_file

    return cache.file_hash(path) if cache is not None else sha256_file(path)


def _scalar(param: Any) -> float | None:
    return float(param.detach().float().cpu()) if isinstance(param, Tensor) else None


# ----------------------------------------------------------------------------- contrastkit runs


def load_run_model(run_dir: str | Path, *, device: str | torch.device = "auto", precision: str = "fp32",
                   batch_size: int = 256) -> LoadedModel:
    """The latest checkpoint of a contrastkit run directory."""
    from .checkpoint import latest_checkpoint
    from .load import load_run

    run_dir = Path(run_dir)
    model, cfg, _ = load_run(run_dir)
    dev = resolve_device(device)
    model.to(dev).eval()
    ckpt = latest_checkpoint(run_dir)
    embedder = TorchEmbedder(preprocess=model.image_transform(train=False), tokenize=model.tokenize,
                             encode_image=model.encode_image, encode_text=model.encode_text, module=model,
                             device=dev, precision=precision, batch_size=batch_size)
    info = {"model": cfg.to_dict()["model"], "image_size": cfg.data.image_size}
    return LoadedModel(embedder, "contrastkit", str(run_dir), str(ckpt / "model.safetensors"),
                       logit_scale=float(model.logit_scale.detach()), logit_bias=_scalar(model.logit_bias),
                       info=info, config=cfg, _weights=lambda cache: _file_hash(cache, ckpt / "model.safetensors"))


# ----------------------------------------------------------------------------- open_clip


def load_open_clip_model(name: str, pretrained: str | Path | None = None, *, device: str | torch.device = "auto",
                         precision: str = "fp32", batch_size: int = 256) -> LoadedModel:
    """open_clip architecture ``name`` with weights from a local file (random weights without one)."""
    from .open_clip_towers import _require_open_clip

    open_clip = _require_open_clip()
    if name not in open_clip.list_models():
        raise ValueError(f"open_clip has no model {name!r}; see open_clip.list_models() "
                         f"(e.g. {', '.join(open_clip.list_models()[:5])}, ...)")
    if pretrained is not None and not Path(pretrained).is_file():
        raise FileNotFoundError(f"--pretrained: {pretrained} is not a file (give a local checkpoint file; "
                                "downloads are not attempted)")
    dev = resolve_device(device)
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(pretrained) if pretrained is not None else None, device=dev, weights_only=True,
        pretrained_text=False)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    if not hasattr(model, "encode_image") or not hasattr(model, "encode_text"):
        raise ValueError(f"open_clip model {name!r} is not a two-tower CLIP model")
    embedder = TorchEmbedder(preprocess=preprocess, tokenize=tokenizer,
                             encode_image=lambda x: model.encode_image(x), encode_text=lambda t: model.encode_text(t),
                             module=model, device=dev, precision=precision, batch_size=batch_size)
    info = {"name": name, "preprocess": repr(preprocess), "open_clip": getattr(open_clip, "__version__", "?")}

    def weights(cache: "FeatureCache | None") -> str:
        if pretrained is not None:
            return _file_hash(cache, Path(pretrained))
        from ..evaluate.cache import hash_state_dict

        return hash_state_dict(model.state_dict())

    return LoadedModel(embedder, "open_clip", OPEN_CLIP_PREFIX + name,
                       str(pretrained) if pretrained is not None else None,
                       logit_scale=float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else None,
                       logit_bias=_scalar(getattr(model, "logit_bias", None)), info=info, _weights=weights)


# ----------------------------------------------------------------------------- Hugging Face


def _features(out: Any) -> Tensor:
    """transformers < 5 returns the projected tensor; >= 5 a ModelOutput whose pooler_output is it."""
    if isinstance(out, Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, Tensor):
        return pooled
    raise TypeError(f"unexpected feature output {type(out).__name__} from a transformers model")


def load_hf_model(folder: str | Path, *, device: str | torch.device = "auto", precision: str = "fp32",
                  batch_size: int = 256) -> LoadedModel:
    """A transformers CLIPModel / SiglipModel from a local folder (tokenizer and image processor alongside)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"hf model: {folder} is not a local model folder with a config.json")
    config = json.loads((folder / "config.json").read_text())
    model_type = config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(f"hf model {folder}: model_type {model_type!r} is not supported for evaluation; "
                         f"supported: {', '.join(HF_MODEL_TYPES)}")
    try:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("hf models need transformers: pip install 'contrastkit[hf]'") from err

    has_safetensors = any(folder.glob("*.safetensors"))
    model = AutoModel.from_pretrained(str(folder), use_safetensors=True if has_safetensors else None,
                                      local_files_only=True)
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
        preprocess=preprocess, tokenize=tokenize,
        encode_image=lambda x: _features(model.get_image_features(pixel_values=x)),
        encode_text=lambda t: _features(model.get_text_features(**t)),
        module=model, device=dev, precision=precision, batch_size=batch_size)
    import transformers

    proc_cfg = folder / "preprocessor_config.json"
    info = {"model_type": model_type, "processor": proc_cfg.read_text() if proc_cfg.exists() else None,
            "padding": str(padding), "max_length": max_len, "transformers": transformers.__version__}

    def weights(cache: "FeatureCache | None") -> list[list[str]]:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in HF_FILE_SUFFIXES)
        return [[p.name, _file_hash(cache, p)] for p in files]

    scale = getattr(model, "logit_scale", None)
    return LoadedModel(embedder, "hf", HF_PREFIX + str(folder), None,
                       logit_scale=float(scale.detach().exp()) if isinstance(scale, Tensor) else None,
                       logit_bias=_scalar(getattr(model, "logit_bias", None)), info=info, _weights=weights)


# ----------------------------------------------------------------------------- dispatch


def load_model(spec: str, pretrained: str | Path | None = None, *, device: str | torch.device = "auto",
               precision: str = "fp32", batch_size: int = 256) -> LoadedModel:
    """A :class:`LoadedModel` from a model spec (see the module docstring)."""
    if spec.startswith(OPEN_CLIP_PREFIX):
        return load_open_clip_model(spec[len(OPEN_CLIP_PREFIX):], pretrained, device=device, precision=precision,
                                    batch_size=batch_size)
    if pretrained is not None:
        raise ValueError("--pretrained applies to open_clip:<name> models only")
    if spec.startswith(HF_PREFIX):
        return load_hf_model(spec[len(HF_PREFIX):], device=device, precision=precision, batch_size=batch_size)
    run_dir = spec[len(RUN_PREFIX):] if spec.startswith(RUN_PREFIX) else spec
    if Path(run_dir).is_dir():
        return load_run_model(run_dir, device=device, precision=precision, batch_size=batch_size)
    raise ValueError(f"--model: {spec!r} is not a run directory, open_clip:<name> or hf:<folder>")
