"""What evaluation needs from a model, and chunked, cached calls into it.

An :class:`Embedder` is anything with ``embed_images`` and ``embed_texts``
returning L2-normalised float32 CPU tensors (N x D). Evaluation never calls it
with more than ``batch_size`` items at a time, always under
``torch.inference_mode()``, and embeds each distinct text string at most once
per evaluation (:class:`TextEmbeddingCache`).
"""
from __future__ import annotations

from typing import Callable, Iterable, Protocol, Sequence, Union, runtime_checkable

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

#: How far an embedding's L2 norm may be from 1 before we call it unnormalised.
NORM_TOLERANCE = 1e-2

TextFn = Callable[[Sequence[str]], Tensor]


@runtime_checkable
class Embedder(Protocol):
    """A model seen from evaluation: images and texts to unit vectors in one space."""

    def embed_images(self, images: Sequence[Image.Image]) -> Tensor:
        """N images -> N x D float32 CPU tensor, rows L2-normalised."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """N strings -> N x D float32 CPU tensor, rows L2-normalised."""
        ...


def _check_output(out: object, n: int, what: str) -> Tensor:
    """Validate one embedder reply and return it as a normalised float32 CPU tensor."""
    if not isinstance(out, Tensor):
        raise TypeError(f"{what} returned {type(out).__name__}, expected a torch.Tensor")
    if out.ndim != 2 or out.shape[0] != n:
        raise ValueError(f"{what} returned shape {tuple(out.shape)} for {n} inputs, expected ({n}, D)")
    out = out.detach().to(device="cpu", dtype=torch.float32)
    if not torch.isfinite(out).all():
        raise ValueError(f"{what} returned NaN or inf embeddings")
    norms = out.norm(dim=1)
    if n and (norms - 1.0).abs().max().item() > NORM_TOLERANCE:
        raise ValueError(
            f"{what} returned rows with L2 norm in [{norms.min().item():.4g}, {norms.max().item():.4g}]; "
            "an Embedder must return L2-normalised embeddings"
        )
    # Re-normalise in float32 so downstream cosines are exact even for fp16/bf16 models.
    return out / norms.clamp_min(1e-12).unsqueeze(1)


def _chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    for start in range(0, n, size):
        yield start, min(start + size, n)


ImageSource = Union[Image.Image, Callable[[], Image.Image]]


def embed_images(
    embedder: Embedder,
    images: Sequence[ImageSource],
    *,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "embed images",
) -> Tensor:
    """Embed ``images`` in chunks of ``batch_size`` under inference mode; returns N x D.

    An item may be a PIL image or a zero-argument callable returning one (e.g.
    ``record.load_image``); callables are called chunk by chunk, so at most
    ``batch_size`` decoded images are held at once.
    """
    parts: list[Tensor] = []
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress) as bar:
        for start, end in _chunks(len(images), batch_size):
            chunk = [im if isinstance(im, Image.Image) else im() for im in images[start:end]]
            with torch.inference_mode():
                out = embedder.embed_images(chunk)
            parts.append(_check_output(out, len(chunk), "embed_images"))
            bar.update(len(chunk))
    if not parts:
        raise ValueError("embed_images: no images to embed")
    return torch.cat(parts).clone()  # a normal (non-inference) tensor


class TextEmbeddingCache:
    """Embeds text strings through an :class:`Embedder`, each distinct string once.

    ``cache(texts)`` (or :meth:`embed`) returns ``len(texts) x D``; strings seen
    before are served from memory, new ones are embedded in chunks of
    ``batch_size``. ``n_embedded`` counts strings actually sent to the model.
    """

    def __init__(self, embedder: Embedder, *, batch_size: int = 256, progress: bool = True) -> None:
        self.embedder = embedder
        self.batch_size = batch_size
        self.progress = progress
        self._rows: dict[str, Tensor] = {}
        self.n_embedded = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, text: object) -> bool:
        return text in self._rows

    def prefetch(self, texts: Iterable[str], *, desc: str = "embed texts") -> None:
        """Embed every string of ``texts`` that is not cached yet."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._rows))
        if not missing:
            return
        for t in missing:
            if not isinstance(t, str):
                raise TypeError(f"texts must be str, got {type(t).__name__}: {t!r}")
        with tqdm(total=len(missing), desc=desc, unit="txt", disable=not self.progress) as bar:
            for start, end in _chunks(len(missing), self.batch_size):
                chunk = missing[start:end]
                with torch.inference_mode():
                    out = self.embedder.embed_texts(chunk)
                out = _check_output(out, len(chunk), "embed_texts").clone()
                for text, row in zip(chunk, out):
                    self._rows[text] = row
                self.n_embedded += len(chunk)
                bar.update(len(chunk))

    def embed(self, texts: Sequence[str]) -> Tensor:
        """``len(texts) x D`` embeddings of ``texts`` (embedding the uncached ones first)."""
        if len(texts) == 0:
            raise ValueError("embed: no texts to embed")
        self.prefetch(texts)
        return torch.stack([self._rows[t] for t in texts])

    __call__ = embed


def as_text_fn(source: Embedder | TextFn, *, batch_size: int = 256, progress: bool = True) -> TextFn:
    """A ``texts -> N x D`` function from an :class:`Embedder` (cached, chunked) or a callable."""
    if isinstance(source, TextEmbeddingCache):
        return source
    if hasattr(source, "embed_texts"):
        return TextEmbeddingCache(source, batch_size=batch_size, progress=progress)  # type: ignore[arg-type]
    if callable(source):
        return source
    raise TypeError(f"expected an Embedder or a callable texts -> Tensor, got {type(source).__name__}")
