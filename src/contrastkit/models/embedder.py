"""A model as something that embeds: images and texts to unit vectors in one space.

:class:`Embedder` is the interface evaluation, clustering and ``contrastkit embed`` use;
:class:`PixelEmbedder` one whose image path splits into per-image preprocessing and a batched
forward (so a DataLoader can preprocess while the model runs). :class:`TorchEmbedder`
implements both for any two-tower torch model (a contrastkit :class:`DualEncoder`, an
open_clip model, a Hugging Face CLIP): batched forwards under ``torch.inference_mode`` on
``device`` at ``precision`` ``fp32`` or ``amp`` (autocast: float16 on CUDA, bfloat16 on CPU,
as CLIP_benchmark's ``--amp``), returning L2-normalised float32 CPU rows. The module's
train/eval mode is restored after each call, so a model can be embedded in the middle of
training. :func:`dual_encoder_embedder` is the one embedder of a :class:`DualEncoder`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from .dual_encoder import DualEncoder

PRECISIONS = ("fp32", "amp")


@runtime_checkable
class Embedder(Protocol):
    """A model seen from evaluation: images and texts to unit vectors in one space."""

    def embed_images(self, images: Sequence[Image.Image]) -> Tensor:
        """N images -> N x D float32 CPU tensor, rows L2-normalised."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """N strings -> N x D float32 CPU tensor, rows L2-normalised."""
        ...


@runtime_checkable
class PixelEmbedder(Protocol):
    """An :class:`Embedder` whose image path splits into per-image preprocessing and a batched forward."""

    def preprocess(self, image: Image.Image) -> Tensor:
        """One PIL image -> C x H x W float tensor (the model's eval transform)."""
        ...

    def embed_pixels(self, pixels: Tensor) -> Tensor:
        """B x C x H x W -> B x D, rows L2-normalised (any device / dtype)."""
        ...


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TorchEmbedder:
    """A two-tower torch model on a device, its preprocessing, its tokenizer, batched forwards.

    ``normalize=False`` for encoders whose outputs are already unit rows (a DualEncoder).
    """

    def __init__(
        self,
        *,
        preprocess: Callable[[Image.Image], Tensor],
        tokenize: Callable[[list[str]], Any],
        encode_image: Callable[[Tensor], Tensor],
        encode_text: Callable[[Any], Tensor],
        module: nn.Module,
        device: torch.device,
        precision: str = "fp32",
        batch_size: int = 256,
        normalize: bool = True,
        encode_cells: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
    ) -> None:
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
        self.normalize = normalize
        self.encode_cells = encode_cells

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "amp":
            dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _eval_mode(self) -> Any:
        was_training = self.module.training
        self.module.eval()
        try:
            yield
        finally:
            self.module.train(was_training)

    def _finish(self, out: Tensor) -> Tensor:
        out = out.float()
        return (F.normalize(out, dim=-1) if self.normalize else out).cpu()

    @torch.inference_mode()
    def embed_pixels(self, pixels: Tensor) -> Tensor:
        with self._eval_mode(), self._autocast():
            return self._finish(self._encode_image(pixels.to(self.device, non_blocking=True)))

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> Tensor:
        parts = [
            self.embed_pixels(torch.stack([self.preprocess(im) for im in images[s : s + self.batch_size]]))
            for s in range(0, len(images), self.batch_size)
        ]
        return torch.cat(parts) if parts else torch.empty(0, 0)

    @torch.inference_mode()
    def embed_cells(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """B x C x H x W -> per-cell features (B x N x F) and joint-space cell embeddings (B x N x D), CPU float32.

        Only for models built with ``encode_cells`` (a DualEncoder whose image tower gives cell tokens).
        """
        if self.encode_cells is None:
            raise ValueError("this model's image tower gives no per-cell features (needed by the dense probe)")
        with self._eval_mode(), self._autocast():
            cells, joint = self.encode_cells(pixels.to(self.device, non_blocking=True))
        return cells.float().cpu(), joint.float().cpu()

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        parts = []
        with self._eval_mode():
            for s in range(0, len(texts), self.batch_size):
                tokens = self._tokenize(list(texts[s : s + self.batch_size]))
                tokens = (
                    {k: v.to(self.device) for k, v in tokens.items()}
                    if isinstance(tokens, dict)
                    else tokens.to(self.device)
                )
                with self._autocast():
                    parts.append(self._finish(self._encode_text(tokens)))
        return torch.cat(parts) if parts else torch.empty(0, 0)


def dual_encoder_embedder(model: DualEncoder, *, batch_size: int = 256, precision: str = "fp32") -> TorchEmbedder:
    """The embedder of a DualEncoder, on the device its parameters are on (eval transform, own tokenizer)."""
    return TorchEmbedder(
        preprocess=model.image_transform(train=False),
        tokenize=model.tokenize,
        encode_image=model.encode_image,
        encode_text=model.encode_text,
        module=model,
        device=model.log_logit_scale.device,
        precision=precision,
        batch_size=batch_size,
        normalize=False,
        encode_cells=model.encode_cells if model.has_cells else None,
    )
