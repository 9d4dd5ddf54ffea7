"""A model's embeddings of image sets and text strings, read through the feature cache when there is one."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from ..data.records import Record
from ..models.loaded import LoadedModel
from .cache import FeatureCache, record_identity, records_key
from .embedding import TextEmbeddingCache, embed_images


class Features:
    """A model's embeddings of image sets and strings, through the feature cache when there is one."""

    def __init__(
        self, model: LoadedModel, cache: FeatureCache | None, *, batch_size: int, num_workers: int, progress: bool
    ) -> None:
        self.model = model
        self.cache = cache
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.progress = progress
        self._key: str | None = None
        store = cache.text_store(self.model_key) if cache is not None else None
        self.texts = TextEmbeddingCache(model.embedder, batch_size=batch_size, progress=progress, store=store)
        self.seconds = 0.0

    @property
    def model_key(self) -> str:
        if self._key is None:
            self._key = self.model.fingerprint(self.cache)
            if self.cache is not None:
                self.cache.describe_model(
                    self._key,
                    {
                        "kind": self.model.kind,
                        "name": self.model.name,
                        "pretrained": self.model.pretrained,
                        "info": self.model.info,
                    },
                )
        return self._key

    def images(
        self,
        loaders: Sequence[Callable[[], Any]],
        identities: Callable[[], Sequence[Any]],
        describe: dict[str, Any],
        desc: str = "embed images",
    ) -> Tensor:
        """Embeddings of the images ``loaders`` load; ``identities`` (asked only with a cache) name them."""
        t0 = time.perf_counter()

        def compute() -> Tensor:
            return embed_images(
                self.model.embedder,
                list(loaders),
                batch_size=self.batch_size,
                progress=self.progress,
                desc=desc,
                num_workers=self.num_workers,
            )

        if self.cache is None:
            emb = compute()
        else:
            key = records_key(identities(), {"kind": "images"})
            emb = self.cache.images(self.model_key, key, compute, describe={**describe, "n": len(loaders)})
        self.seconds += time.perf_counter() - t0
        return emb

    def record_images(self, records: Sequence[Record], describe: dict[str, Any]) -> Tensor:
        return self.images(
            [r.load_image for r in records],
            lambda: [record_identity(r) for r in records],
            describe,
            desc=f"embed {describe.get('split', '')} images".replace("  ", " "),
        )
