"""On-disk cache of embeddings: each model embeds each dataset (and each text string) once.

Layout under the cache root (``--cache-dir``, else ``$CONTRASTKIT_CACHE``, else
``~/.cache/contrastkit/features``)::

    ROOT/file_hashes.json                  sha256 of weight files, memoised by (path, size, mtime)
    ROOT/<model key>/model.json            what the model is (kind, name, pretrained, weight hashes)
    ROOT/<model key>/images/<data key>.safetensors
                                           tensor "emb" (N x D float32, row i = image i of the data),
                                           metadata: model_key, data_key, version, n, dim
    ROOT/<model key>/images/<data key>.json
                                           what the data is (spec, split, record count, ...)
    ROOT/<model key>/texts/<shard>.safetensors + <shard>.json
                                           embeddings of text strings and the strings (row i = string i);
                                           a shard is written per batch of new strings, the .json last

The **model key** (:meth:`contrastkit.models.loaded.LoadedModel.fingerprint`) hashes
the weights' content (checkpoint / pretrained / safetensors files, or the state
dict) together with the architecture name, the preprocessing and the library
versions, so retraining, another pretrained file or another open_clip release
is a different key. The **data key** (:func:`records_key`) hashes the data
spec and split and every record's image identity: path, size and modification
time for files (plus a crop box, for ARO-style data), the encoded bytes for
records that carry them (webdataset shards, parquet / Hugging Face images), the
pixel bytes for in-memory images. Keys are sha256 hex digests; directory names use the first 24
characters and the full key is checked against the file's metadata on read.

Writes go to a temporary file renamed into place, so concurrent or killed
evaluations never leave a half-written entry that a later run would read.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..hashing import hash_json, sha256_file

CACHE_VERSION = 1
CACHE_ENV = "CONTRASTKIT_CACHE"
KEY_CHARS = 24


def default_cache_dir() -> Path:
    """``$CONTRASTKIT_CACHE`` or ``~/.cache/contrastkit/features``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "contrastkit" / "features"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _atomic_save_tensor(path: Path, tensor: Tensor, metadata: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    save_file({"emb": tensor.contiguous()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _read_tensor(path: Path) -> tuple[Tensor, dict[str, str]]:
    with safe_open(str(path), framework="pt") as fh:
        return fh.get_tensor("emb"), dict(fh.metadata() or {})


def image_identity(image: Image.Image | str | Path, box: Sequence[float] | None = None) -> list[Any]:
    """What identifies an image's content cheaply: path + size + mtime, or a hash of the pixels."""
    if isinstance(image, Image.Image):
        h = hashlib.sha1(f"{image.mode}|{image.size}|".encode())
        h.update(image.tobytes())
        ident: list[Any] = ["pixels", h.hexdigest()]
    else:
        path = Path(image)
        try:
            st = path.stat()
            ident = ["file", str(path.resolve()), st.st_size, st.st_mtime_ns]
        except OSError:
            ident = ["file", str(path.resolve()), None, None]  # missing: loading will name it
    if box is not None:
        ident.append([float(v) for v in box])
    return ident


def record_identity(record: Any) -> list[Any]:
    """:func:`image_identity` of a record's image; encoded bytes held by the record (shards, parquet) are hashed."""
    blob = getattr(record, "blob", None)
    if isinstance(blob, (bytes, bytearray)):
        return ["blob", hashlib.sha1(blob).hexdigest()]
    return image_identity(record.image)


def records_key(identities: Iterable[Any], spec: Mapping[str, Any]) -> str:
    """Data key: hash of the data ``spec`` (source, split, options) and every image identity."""
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "spec": spec}, sort_keys=True, default=str).encode())
    n = 0
    for ident in identities:
        h.update(json.dumps(ident, default=str).encode())
        h.update(b"\n")
        n += 1
    h.update(f"n={n}".encode())
    return h.hexdigest()


class TextStore:
    """Embeddings of text strings for one model, in shards under ``folder`` (see module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._index: dict[str, tuple[str, int]] | None = None

    def _load_index(self) -> dict[str, tuple[str, int]]:
        if self._index is None:
            index: dict[str, tuple[str, int]] = {}
            if self.folder.is_dir():
                for meta in sorted(self.folder.glob("*.json")):
                    if not meta.with_suffix(".safetensors").exists():
                        continue
                    try:
                        strings = json.loads(meta.read_text(encoding="utf-8"))
                    except (OSError, json.JSONDecodeError):
                        continue
                    for row, text in enumerate(strings):
                        index.setdefault(text, (meta.stem, row))
            self._index = index
        return self._index

    def __len__(self) -> int:
        return len(self._load_index())

    def lookup(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """The stored rows of those ``texts`` that are in the store."""
        index = self._load_index()
        by_shard: dict[str, list[str]] = {}
        for t in texts:
            if t in index:
                by_shard.setdefault(index[t][0], []).append(t)
        out: dict[str, Tensor] = {}
        for shard, wanted in by_shard.items():
            try:
                emb, _ = _read_tensor(self.folder / f"{shard}.safetensors")
            except Exception:
                continue
            for t in wanted:
                row = index[t][1]
                if row < emb.shape[0]:
                    out[t] = emb[row].clone()
        return out

    def add(self, texts: Sequence[str], emb: Tensor) -> None:
        """Store ``emb[i]`` as the embedding of ``texts[i]`` (one new shard)."""
        if len(texts) == 0:
            return
        if emb.shape[0] != len(texts):
            raise ValueError(f"text store: {len(texts)} strings but {emb.shape[0]} rows")
        self.folder.mkdir(parents=True, exist_ok=True)
        shard = hash_json(list(texts))[:KEY_CHARS]
        _atomic_save_tensor(
            self.folder / f"{shard}.safetensors",
            emb.detach().cpu().float(),
            {"version": str(CACHE_VERSION), "n": str(len(texts))},
        )
        _atomic_write_bytes(self.folder / f"{shard}.json", json.dumps(list(texts)).encode("utf-8"))
        index = self._load_index()
        for row, t in enumerate(texts):
            index.setdefault(t, (shard, row))


class FeatureCache:
    """Image embeddings per (model, data) and text embeddings per (model, string), on disk."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    # ------------------------------------------------------------------ files

    def file_hash(self, path: str | Path) -> str:
        """sha256 of a file, memoised in ROOT/file_hashes.json by (resolved path, size, mtime)."""
        path = Path(path).resolve()
        st = path.stat()
        memo_path = self.root / "file_hashes.json"
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, json.JSONDecodeError):
            memo = {}
        entry = memo.get(str(path))
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            return str(entry["sha256"])
        digest = sha256_file(path)
        memo[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(memo_path, json.dumps(memo, indent=1).encode())
        return digest

    # ------------------------------------------------------------------ entries

    def model_dir(self, model_key: str) -> Path:
        return self.root / model_key[:KEY_CHARS]

    def describe_model(self, model_key: str, info: Mapping[str, Any]) -> None:
        folder = self.model_dir(model_key)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.json"
        if not path.exists():
            _atomic_write_bytes(path, json.dumps({"model_key": model_key, **info}, indent=1, default=str).encode())

    def image_path(self, model_key: str, data_key: str) -> Path:
        return self.model_dir(model_key) / "images" / f"{data_key[:KEY_CHARS]}.safetensors"

    def load_images(self, model_key: str, data_key: str) -> Tensor | None:
        path = self.image_path(model_key, data_key)
        if not path.exists():
            return None
        try:
            emb, meta = _read_tensor(path)
        except Exception:
            return None
        if meta.get("model_key") != model_key or meta.get("data_key") != data_key:
            return None
        return emb

    def save_images(
        self, model_key: str, data_key: str, emb: Tensor, describe: Mapping[str, Any] | None = None
    ) -> Path:
        path = self.image_path(model_key, data_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        emb = emb.detach().cpu().float()
        _atomic_save_tensor(
            path,
            emb,
            {
                "model_key": model_key,
                "data_key": data_key,
                "version": str(CACHE_VERSION),
                "n": str(emb.shape[0]),
                "dim": str(emb.shape[1] if emb.ndim == 2 else 0),
            },
        )
        if describe:
            _atomic_write_bytes(
                path.with_suffix(".json"),
                json.dumps({"data_key": data_key, **describe}, indent=1, default=str).encode(),
            )
        return path

    def images(
        self, model_key: str, data_key: str, compute: Callable[[], Tensor], describe: Mapping[str, Any] | None = None
    ) -> Tensor:
        """The cached image embeddings of (model, data), or ``compute()`` them and store them."""
        cached = self.load_images(model_key, data_key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        emb = compute()
        self.save_images(model_key, data_key, emb, describe)
        return emb

    def text_store(self, model_key: str) -> TextStore:
        return TextStore(self.model_dir(model_key) / "texts")
