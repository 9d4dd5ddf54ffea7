"""The files of an embedding index directory, and the one rule that keeps them consistent after a kill.

    INDEX/index.json        the model (run directory and weights hash), dimension, the faiss index kind
    INDEX/items.sqlite      one row per indexed image: id, key, source, split, caption (SQLite)
    INDEX/images.f32        image embeddings, row i = item id i (float32, L2-normalised, append-only)
    INDEX/captions.f32      caption embeddings of the same rows (zero rows where an image has no caption)
    INDEX/thumbs/<id>.jpg   a thumbnail of every item: the server shows these files and nothing else
    INDEX/images.faiss, INDEX/captions.faiss   the search structures (rebuilt from the .f32 files)

A batch is written in this order: thumbnails, then the vectors appended (and flushed), then the rows
committed in one SQLite transaction. The committed row count is the truth: on open, vector files
longer than it (a kill between the two writes) are cut back, so a rerun continues exactly where the
last committed batch ended.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    split TEXT NOT NULL,
    caption TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS skipped (key TEXT PRIMARY KEY, source TEXT NOT NULL, reason TEXT NOT NULL);
"""
VECTOR_FILES = ("images.f32", "captions.f32")


class IndexFileError(ValueError):
    """An index directory is missing, of another model, or damaged; the message says which file and what to do."""


@dataclass
class Item:
    id: int
    key: str
    source: str
    split: str
    caption: str


class IndexFiles:
    """Open (or create, with ``dim``) an index directory; see the module docstring for the layout."""

    def __init__(self, root: Path, dim: int | None = None, info: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        meta = self.root / "index.json"
        if meta.exists():
            try:
                self.info = json.loads(meta.read_text())
            except json.JSONDecodeError as err:
                raise IndexFileError(f"{meta} is not valid JSON ({err}); rebuild the index") from None
        elif dim is None:
            raise IndexFileError(f"{self.root} is not an index (no index.json); make one with `contrastkit index`")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "thumbs").mkdir(exist_ok=True)
            self.info = {"dim": dim, **(info or {})}
            meta.write_text(json.dumps(self.info, indent=1))
        self.dim = int(self.info["dim"])
        self.lock = threading.Lock()  # one SQLite connection, shared by the service's threads
        try:
            self.db = sqlite3.connect(self.root / "items.sqlite", check_same_thread=False)
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise IndexFileError(f"{self.root / 'items.sqlite'} is damaged ({err}); rebuild the index") from None
        self._cut_vectors_to_rows()

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def _cut_vectors_to_rows(self) -> None:
        size = len(self) * self.dim * 4
        for name in VECTOR_FILES:
            path = self.root / name
            if not path.exists():
                path.touch()
            if path.stat().st_size < size:
                raise IndexFileError(f"{path} holds fewer vectors than items.sqlite has rows; rebuild the index")
            if path.stat().st_size > size:
                os.truncate(path, size)

    def has_key(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM items WHERE key = ?", (key,)).fetchone() is not None

    def keys(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT key FROM items")}

    def skipped_keys(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT key FROM skipped")}

    def thumb_path(self, item_id: int) -> Path:
        return self.root / "thumbs" / f"{item_id}.jpg"

    def append(
        self,
        rows: Sequence[tuple[str, str, str, str]],
        images: np.ndarray,
        captions: np.ndarray,
        skipped: Sequence[tuple[str, str, str]] = (),
    ) -> list[int]:
        """Append ``rows`` (key, source, split, caption) with their vectors; record ``skipped`` (key, source,
        reason). Returns the new ids (thumbnails must already be written under them: see :meth:`next_ids`)."""
        start = len(self)
        ids = list(range(start, start + len(rows)))
        for name, vectors in zip(VECTOR_FILES, (images, captions)):
            with (self.root / name).open("ab") as fh:
                fh.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
                fh.flush()
                os.fsync(fh.fileno())
        with self.db:
            self.db.executemany(
                "INSERT INTO items (id, key, source, split, caption) VALUES (?, ?, ?, ?, ?)",
                [(i, *row) for i, row in zip(ids, rows)],
            )
            self.db.executemany("INSERT OR REPLACE INTO skipped (key, source, reason) VALUES (?, ?, ?)", skipped)
        return ids

    def next_ids(self, count: int) -> list[int]:
        start = len(self)
        return list(range(start, start + count))

    def vectors(self, which: str = "images") -> np.ndarray:
        """The ``images`` or ``captions`` vectors (N x dim float32, memory-mapped read-only)."""
        path = self.root / f"{which}.f32"
        if len(self) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(path, dtype=np.float32, mode="r", shape=(len(self), self.dim))

    def item(self, item_id: int) -> Item | None:
        row = self.db.execute("SELECT id, key, source, split, caption FROM items WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else Item(*row)

    def items(self, ids: Sequence[int]) -> dict[int, Item]:
        """The items of ``ids``; safe to call from several threads (the service's worker threads)."""
        marks = ",".join("?" * len(ids))
        with self.lock:
            rows = self.db.execute(
                f"SELECT id, key, source, split, caption FROM items WHERE id IN ({marks})", list(ids)
            ).fetchall()
        return {row[0]: Item(*row) for row in rows}

    def skipped_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM skipped").fetchone()[0])

    def close(self) -> None:
        self.db.close()
