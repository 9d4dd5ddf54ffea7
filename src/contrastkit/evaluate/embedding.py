"""Chunked, checked and cached calls into an :class:`~contrastkit.models.embedder.Embedder`.

An Embedder is anything with ``embed_images`` and ``embed_texts`` returning
L2-normalised float32 CPU tensors (N x D). Evaluation never calls it
with more than ``batch_size`` items at a time, always under
``torch.inference_mode()``, and embeds each distinct text string at most once
per evaluation (:class:`TextEmbeddingCache`).

An embedder that also has ``preprocess(image) -> C x H x W`` and
``embed_pixels(B x C x H x W) -> B x D`` (:class:`PixelEmbedder`, e.g. the
model embedders of :mod:`contrastkit.models.embedder`) gets its images decoded
and preprocessed by a ``torch.utils.data.DataLoader`` with ``num_workers``
worker processes while the model runs, as CLIP_benchmark does.

A :class:`TextEmbeddingCache` may be backed by an on-disk
:class:`~contrastkit.evaluate.cache.TextStore`: strings embedded in an earlier
run of the same model are read back instead of recomputed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, cast

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from ..models.embedder import Embedder, PixelEmbedder

if TYPE_CHECKING:
    from .cache import TextStore

#: How far an embedding's L2 norm may be from 1 before we call it unnormalised.
NORM_TOLERANCE = 1e-2

TextFn = Callable[[Sequence[str]], Tensor]


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


ImageSource = Image.Image | Callable[[], Image.Image]


class _PixelSet(torch.utils.data.Dataset):
    """Decodes and preprocesses item i (in a DataLoader worker when num_workers > 0)."""

    def __init__(self, images: Sequence[ImageSource], preprocess: Callable[[Image.Image], Tensor]) -> None:
        self.images = images
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        im = self.images[i]
        return self.preprocess(im if isinstance(im, Image.Image) else im())


def _embed_pixels_loader(
    embedder: PixelEmbedder,
    images: Sequence[ImageSource],
    batch_size: int,
    num_workers: int,
    bar: tqdm,
) -> list[Tensor]:
    loader = torch.utils.data.DataLoader(
        _PixelSet(images, embedder.preprocess),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=torch.stack,
        pin_memory=torch.cuda.is_available() and num_workers > 0,
        persistent_workers=False,
    )
    parts: list[Tensor] = []
    for pixels in loader:
        with torch.inference_mode():
            out = embedder.embed_pixels(pixels)
        parts.append(_check_output(out, pixels.shape[0], "embed_pixels"))
        bar.update(pixels.shape[0])
    return parts


def embed_images(
    embedder: Embedder,
    images: Sequence[ImageSource],
    *,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "embed images",
    num_workers: int = 0,
) -> Tensor:
    """Embed ``images`` in chunks of ``batch_size`` under inference mode; returns N x D.

    An item may be a PIL image or a zero-argument callable returning one (e.g.
    ``record.load_image``); callables are called chunk by chunk, so at most
    ``batch_size`` decoded images are held at once. A :class:`PixelEmbedder`
    gets its images loaded and preprocessed by a DataLoader with
    ``num_workers`` workers (0: in this process).
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parts: list[Tensor] = []
    pixel_path = callable(getattr(embedder, "preprocess", None)) and callable(getattr(embedder, "embed_pixels", None))
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress) as bar:
        if pixel_path and len(images):
            parts = _embed_pixels_loader(cast(PixelEmbedder, embedder), images, batch_size, num_workers, bar)
        for start, end in [] if pixel_path else _chunks(len(images), batch_size):
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
    With a ``store`` (:class:`~contrastkit.evaluate.cache.TextStore`, one per
    model), strings are first looked up on disk (``n_from_store`` counts
    them) and newly embedded ones are written back.
    """

    def __init__(
        self, embedder: Embedder, *, batch_size: int = 256, progress: bool = True, store: TextStore | None = None
    ) -> None:
        self.embedder = embedder
        self.batch_size = batch_size
        self.progress = progress
        self.store = store
        self._rows: dict[str, Tensor] = {}
        self.n_embedded = 0
        self.n_from_store = 0

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
        if self.store is not None:
            found = self.store.lookup(missing)
            self._rows.update(found)
            self.n_from_store += len(found)
            missing = [t for t in missing if t not in found]
            if not missing:
                return
        new_rows: list[Tensor] = []
        with tqdm(total=len(missing), desc=desc, unit="txt", disable=not self.progress) as bar:
            for start, end in _chunks(len(missing), self.batch_size):
                chunk = missing[start:end]
                with torch.inference_mode():
                    out = self.embedder.embed_texts(chunk)
                out = _check_output(out, len(chunk), "embed_texts").clone()
                for text, row in zip(chunk, out):
                    self._rows[text] = row
                new_rows.append(out)
                self.n_embedded += len(chunk)
                bar.update(len(chunk))
        if self.store is not None:
            self.store.add(missing, torch.cat(new_rows))

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
        return TextEmbeddingCache(cast(Embedder, source), batch_size=batch_size, progress=progress)
    if callable(source):
        return source
    raise TypeError(f"expected an Embedder or a callable texts -> Tensor, got {type(source).__name__}")
