"""Towers built from any open_clip architecture.

``open_clip:<model-name>`` builds the architecture with open_clip (random
initialisation, or pretrained weights from a local file given as
``model.pretrained``: a ``.safetensors`` file is preferred; other files are
read with ``torch.load(weights_only=True)``, which never unpickles code). The
image tower is the model's ``visual`` module; the text tower is the rest, with
its own tokenizer. Both are already projected to the model's embedding size,
and the model's temperature and bias initialise the DualEncoder's.

Causal text towers run only on the batch's used positions: open_clip pads
every caption to the context length (77 for the OpenAI models) although
captions are usually much shorter. Under a causal mask a position never sees
later ones, and argmax/eos pooling reads the end-of-text position, so dropping
the trailing columns that are padding in every row gives the same features
(tested against ``encode_text`` on the full context) for a fraction of the text
compute. Towers with a padding mask, a class token or last-token pooling
(e.g. SigLIP's) always run on the full context.

Both towers' ``nn.MultiheadAttention`` modules become
:class:`~contrastkit.models.lean_attention.LeanSelfAttention` (same parameters and state-dict
keys, same function; fewer layout copies in training).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from .lean_attention import use_lean_attention
from .towers import ImageTower, TextTower

# open_clip ships no type information, and which attributes its modules have depends on the
# architecture (CLIP, CustomTextCLIP, timm / Hugging Face towers): its modules are typed Any here.
OpenClipModule = Any


def _require_open_clip():
    try:
        import open_clip
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("open_clip towers need open-clip-torch: pip install 'contrastkit[openclip]'") from err
    return open_clip


class OpenClipImageTower(ImageTower):
    projected = True

    def __init__(self, visual: OpenClipModule, name: str) -> None:
        super().__init__()
        self.visual = visual
        self.name = name
        self.output_dim = int(visual.output_dim)
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        size = getattr(visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        self.std = tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))

    def forward(self, pixels: Tensor) -> Tensor:
        return self.visual(pixels)

    def forward_tokens(self, pixels: Tensor) -> Tensor:
        """The ViT's patch tokens after its final LayerNorm, before ``proj`` (B x N x width).

        open_clip returns them beside the pooled output when ``output_tokens`` is set; other image towers
        (ModifiedResNet, timm) have no such switch and are refused with the reason.
        """
        if not hasattr(self.visual, "output_tokens"):
            raise ValueError(
                f"open_clip:{self.name}: its image tower ({type(self.visual).__name__}) gives no patch tokens; "
                "the dense terms and the dense probe need an open_clip ViT"
            )
        self.visual.output_tokens = True
        try:
            _, tokens = self.visual(pixels)
        finally:
            self.visual.output_tokens = False
        return tokens

    @property
    def grid(self) -> int | None:
        """G of the ViT's G x G patch grid (None for towers without patch tokens)."""
        size = getattr(self.visual, "grid_size", None)
        return int(size[0]) if size is not None else None

    def project_tokens(self, tokens: Tensor) -> Tensor:
        """Patch tokens into the joint space with the pooled output's own projection (MaskCLIP's reading)."""
        proj = getattr(self.visual, "proj", None)
        return tokens @ proj if proj is not None else tokens

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)

    def image_transform(self, train: bool) -> Callable[[Image.Image], Tensor]:
        open_clip = _require_open_clip()
        return open_clip.image_transform(self.image_size, is_train=train, mean=self.mean, std=self.std)


def _causal_text(model: nn.Module) -> tuple[nn.Module, str, int | None] | None:
    """(module, pool type, eos id) of an open_clip causal text transformer that may drop trailing pads, else None.

    ``CLIP`` keeps its text transformer on the model itself, ``CustomTextCLIP`` in ``.text``
    (a ``TextTransformer``; Hugging Face text encoders there are left alone).
    """
    text = getattr(model, "text", None)
    if text is None:
        module, pool, eos = model, getattr(model, "text_pool_type", None), getattr(model, "text_eos_id", None)
    else:
        if getattr(text, "cls_emb", None) is not None or getattr(text, "use_pad_mask", False):
            return None
        module, pool, eos = text, getattr(text, "pool_type", None), getattr(text, "eos_id", None)
    parts = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
    if pool not in ("argmax", "eos") or any(getattr(module, name, None) is None for name in parts):
        return None
    return module, pool, eos


def _encode_first_positions(module: OpenClipModule, pool: str, eos: int | None, tokens: Tensor) -> Tensor:
    """open_clip's causal text forward on the first ``tokens.shape[1]`` positions only."""
    from open_clip.transformer import text_global_pool

    used = tokens.shape[1]
    cast = module.transformer.get_cast_dtype()
    x = module.token_embedding(tokens).to(cast) + module.positional_embedding[:used].to(cast)
    x = module.transformer(x, attn_mask=module.attn_mask[:used, :used])
    x = text_global_pool(module.ln_final(x), tokens, pool, eos_token_id=eos)
    projection = getattr(module, "text_projection", None)
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x if projection is None else x @ projection


class OpenClipTextTower(TextTower):
    projected = True

    def __init__(self, model: OpenClipModule, name: str, tokenizer: Callable[..., Tensor]) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self._tokenizer = tokenizer
        self.output_dim = int(
            getattr(model, "embed_dim", 0)
            or getattr(getattr(model, "text", None), "output_dim", 0)
            or model.text_projection.shape[-1]
        )
        self.pad_token_id = 0
        self._causal = _causal_text(model)

    def tokenize(self, texts: list[str]) -> Tensor:
        return self._tokenizer(list(texts))

    def forward(self, tokens: Tensor) -> Tensor:
        if self._causal is not None:
            columns = torch.nonzero((tokens != self.pad_token_id).any(dim=0))
            used = int(columns.max()) + 1 if len(columns) else tokens.shape[1]
            if used < tokens.shape[1]:
                return _encode_first_positions(*self._causal, tokens[:, :used])
        return self.model.encode_text(tokens)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        # CustomTextCLIP keeps its text encoder in .text (which has the switch); CLIP in .transformer.
        text = getattr(self.model, "text", None)
        if text is not None:
            text.set_grad_checkpointing(enable)
        else:
            self.model.transformer.grad_checkpointing = enable


@dataclass
class OpenClipParts:
    image: OpenClipImageTower
    text: OpenClipTextTower
    logit_scale: float  # t = exp(model.logit_scale)
    logit_bias: float | None


def build_open_clip(name: str, pretrained: str | None = None) -> OpenClipParts:
    """Build an open_clip model and split it into an image tower and a text tower."""
    open_clip = _require_open_clip()
    if name not in open_clip.list_models():
        raise ValueError(
            f"open_clip has no model {name!r}; see open_clip.list_models() "
            f"(e.g. {', '.join(open_clip.list_models()[:5])}, ...)"
        )
    if pretrained is not None:
        from pathlib import Path

        if not Path(pretrained).exists():
            raise FileNotFoundError(
                f"model.pretrained: {pretrained} does not exist "
                "(give a local checkpoint file; downloads are not attempted)"
            )
    model = open_clip.create_model(name, pretrained=pretrained, weights_only=True)
    if not hasattr(model, "visual") or not hasattr(model, "encode_text"):
        raise ValueError(f"open_clip model {name!r} is not a two-tower CLIP model")
    use_lean_attention(model)
    logit_scale = float(model.logit_scale.detach().exp())
    bias = getattr(model, "logit_bias", None)
    logit_bias = float(bias.detach()) if isinstance(bias, torch.Tensor) else None
    visual = model.visual
    model.visual = nn.Identity()
    # The DualEncoder owns temperature and bias; drop the copies so they are not unused parameters.
    for attr in ("logit_scale", "logit_bias"):
        if isinstance(getattr(model, attr, None), nn.Parameter):
            delattr(model, attr)
    tokenizer = open_clip.get_tokenizer(name)
    return OpenClipParts(
        OpenClipImageTower(visual, name), OpenClipTextTower(model, name, tokenizer), logit_scale, logit_bias
    )
