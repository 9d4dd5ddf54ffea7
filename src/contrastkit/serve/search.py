"""Search an index directory: text -> images, image -> images, item -> similar items, text or image -> captions.

Queries are embedded with the run the index was built with (``index.json`` names it and the hash of its
weights, checked on open), then looked up in the faiss structures. ``source`` filters results to items of
one data source; the search then asks faiss for more candidates until ``k`` pass the filter or the
collection is exhausted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..models.embedder import dual_encoder_embedder
from ..models.load import load_run
from . import faiss_index
from .index_build import model_info
from .index_files import IndexFileError, IndexFiles

MAX_K = 200


@dataclass
class Hit:
    id: int
    score: float
    caption: str
    source: str
    thumbnail: str  # the URL path of the item's thumbnail


class Searcher:
    """Everything the service needs, loaded once: the model, the two faiss structures, the item table."""

    def __init__(self, index_dir: str | Path) -> None:
        self.files = IndexFiles(Path(index_dir))
        info = self.files.info
        if "search" not in info:
            raise IndexFileError(f"{index_dir}: the index was never completed; rerun `contrastkit index`")
        run_dir = Path(info["run"])
        if model_info(run_dir)["weights_sha256"] != info["weights_sha256"]:
            raise IndexFileError(f"{index_dir} was built with other weights than {run_dir} holds now; rebuild it")
        model, _ = load_run(run_dir)
        self.embedder = dual_encoder_embedder(model, batch_size=32)
        self.indexes = {}
        for which in ("images", "captions"):
            path = self.files.root / f"{which}.faiss"
            if not path.exists():
                raise IndexFileError(f"{path} is missing; rerun `contrastkit index` to rebuild it")
            try:
                self.indexes[which] = faiss_index.load(path, int(info["search"][which]["nprobe"]))
            except RuntimeError as err:
                raise IndexFileError(f"{path} cannot be read ({str(err).splitlines()[0]}); rebuild the index") from None
            if self.indexes[which].ntotal != len(self.files):
                raise IndexFileError(f"{path} holds {self.indexes[which].ntotal} vectors for {len(self.files)} items")
        self.sources = sorted({row[0] for row in self.files.db.execute("SELECT DISTINCT source FROM items")})
        self.count = len(self.files)  # the index does not change while it is served
        self.image_vectors = self.files.vectors("images")

    def __len__(self) -> int:
        return self.count

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Query vectors of ``texts`` (one forward pass; the service batches concurrent queries into it)."""
        return self.embedder.embed_texts(texts).numpy()

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.embedder.embed_images([image.convert("RGB") for image in images]).numpy()

    def images_near(self, vector: np.ndarray, k: int, source: str | None = None) -> list[Hit]:
        """Items whose image is nearest to a query vector."""
        return self._search("images", vector, k, self._keep(source))

    def captions_near(self, vector: np.ndarray, k: int, source: str | None = None) -> list[Hit]:
        """Items whose caption is nearest to a query vector (items without a caption never match)."""
        return self._search("captions", vector, k, self._keep(source, lambda item: bool(item.caption)))

    def _search(self, which: str, query: np.ndarray, k: int, keep: Callable[[Any], bool]) -> list[Hit]:
        index = self.indexes[which]
        fetch = min(len(self), k)
        while True:
            scores, ids = index.search(query.reshape(1, -1).astype(np.float32), fetch)
            found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
            items = self.files.items([i for i, _ in found])
            hits = [
                Hit(i, s, items[i].caption, items[i].source, f"/thumb/{i}")
                for i, s in found
                if i in items and keep(items[i])
            ]
            if len(hits) >= k or fetch >= len(self):
                return hits[:k]
            fetch = min(len(self), fetch * 4)

    def _keep(self, source: str | None, extra: Callable[[Any], bool] | None = None) -> Callable[[Any], bool]:
        return lambda item: (source is None or item.source == source) and (extra is None or extra(item))

    def by_text(self, text: str, k: int, source: str | None = None) -> list[Hit]:
        return self.images_near(self.embed_texts([text])[0], k, source)

    def by_image(self, image: Image.Image, k: int, source: str | None = None) -> list[Hit]:
        return self.images_near(self.embed_images([image])[0], k, source)

    def similar(self, item_id: int, k: int, source: str | None = None) -> list[Hit]:
        """Items nearest to item ``item_id`` (itself excluded); KeyError when there is no such item."""
        if not 0 <= item_id < len(self):
            raise KeyError(item_id)
        query = np.asarray(self.image_vectors[item_id])
        return self._search("images", query, k, self._keep(source, lambda item: item.id != item_id))

    def captions(self, query: str | Image.Image, k: int, source: str | None = None) -> list[Hit]:
        """Indexed captions nearest to a text or an image (items without a caption never match)."""
        vector = self.embed_texts([query])[0] if isinstance(query, str) else self.embed_images([query])[0]
        return self.captions_near(vector, k, source)

    def info(self) -> dict[str, Any]:
        return {
            "items": len(self),
            "skipped": self.files.skipped_count(),
            "sources": self.sources,
            "search": self.files.info["search"],
            "model": self.files.info["run"],
            "max_k": MAX_K,
        }


def as_json(hits: list[Hit]) -> list[dict[str, Any]]:
    return [asdict(hit) for hit in hits]
