"""``contrastkit index``: embed a data source with a trained run into an index directory, resumably.

Records are read from any data source (``contrastkit.data.sources``: folders, manifests, webdataset
shards, the shapes world), embedded in batches (images, and the first caption where there is one),
thumbnailed, and appended to :class:`~contrastkit.serve.index_files.IndexFiles`. An item's key is
``SPEC#SPLIT#N`` (N: the record's position), so a rerun after a kill, or with the same source, skips
what is already there, and a rerun with another source appends to the same index. A record whose
image cannot be read is skipped and counted (``skipped`` table, with the reason). At the end the faiss
structures are rebuilt over all items (:mod:`~contrastkit.serve.faiss_index`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..config import apply_overrides, config_from_dict
from ..data.sources import open_source
from ..hashing import sha256_file
from ..models.checkpoint import latest_checkpoint
from ..models.embedder import dual_encoder_embedder
from ..models.load import load_run
from . import faiss_index
from .index_files import IndexFileError, IndexFiles

THUMB_SIZE = 192


@dataclass
class IndexSummary:
    added: int
    skipped: int  # records of this source skipped in this run
    total: int  # items in the index now
    skipped_total: int
    images_index: dict[str, Any]
    captions_index: dict[str, Any]


def model_info(run_dir: Path) -> dict[str, str]:
    """Which model an index belongs to: the run directory and the sha256 of its latest weights."""
    return {"run": str(run_dir), "weights_sha256": sha256_file(latest_checkpoint(run_dir) / "model.safetensors")}


def open_for_model(out: Path, run_dir: Path, dim: int) -> IndexFiles:
    """The index at ``out`` (created when missing); refuse one built with other weights."""
    info = model_info(run_dir)
    files = IndexFiles(out, dim, info)
    if files.info.get("weights_sha256") != info["weights_sha256"]:
        raise IndexFileError(
            f"{out} was built with the model of {files.info.get('run')} (other weights); its vectors cannot be "
            "mixed with this model's: choose another --out"
        )
    return files


def thumbnail(image: Image.Image, path: Path) -> None:
    small = image.convert("RGB")
    small.thumbnail((THUMB_SIZE, THUMB_SIZE))
    small.save(path, format="JPEG", quality=88)


def build_index(
    run_dir: str | Path,
    spec: str,
    out: str | Path,
    *,
    split: str = "train",
    limit: int | None = None,
    batch_size: int = 64,
    memory_budget_bytes: int = 4 << 30,
    data_overrides: Sequence[str] = (),
    progress: bool = True,
) -> IndexSummary:
    """Add ``split`` of the data ``spec`` to the index at ``out`` (see the module docstring).

    ``data_overrides``: ``data.KEY=VALUE`` settings over the run's data config (e.g. the shapes world's
    ``data.eval_size``, a manifest's column names)."""
    run_dir, out = Path(run_dir), Path(out)
    model, cfg = load_run(run_dir)
    embedder = dual_encoder_embedder(model, batch_size=batch_size)
    settings = [f"data.source={spec}", "data.on_error=skip", *data_overrides]
    data_cfg = config_from_dict(apply_overrides(cfg.to_dict(), settings)).data
    dataset = open_source(spec, split, data_cfg, raw=True)
    files = open_for_model(out, run_dir, model.embed_dim)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    done = files.keys() | files.skipped_keys()
    todo = [i for i in range(count) if f"{spec}#{split}#{i}" not in done]
    bar = tqdm(total=count, initial=count - len(todo), desc="index", unit="img", disable=not progress)
    added = skipped = 0
    for start in range(0, len(todo), batch_size):
        rows, images, bad = [], [], []
        for i in todo[start : start + batch_size]:
            key = f"{spec}#{split}#{i}"
            try:
                record = dataset[i]
                image = record.load_image()
            except (OSError, ValueError) as err:
                bad.append((key, spec, str(err)))
                continue
            rows.append((key, spec, split, record.captions[0] if record.captions else ""))
            images.append(image)
        for item_id, image in zip(files.next_ids(len(rows)), images):
            thumbnail(image, files.thumb_path(item_id))
        image_vectors = embedder.embed_images(images).numpy() if images else np.zeros((0, files.dim), np.float32)
        caption_vectors = np.zeros_like(image_vectors)
        with_text = [j for j, row in enumerate(rows) if row[3]]
        if with_text:
            caption_vectors[with_text] = embedder.embed_texts([rows[j][3] for j in with_text]).numpy()
        files.append(rows, image_vectors, caption_vectors, bad)
        added, skipped = added + len(rows), skipped + len(bad)
        bar.update(len(rows) + len(bad))
        bar.set_postfix(skipped=skipped)
    bar.close()
    choices = rebuild_search(files, memory_budget_bytes)
    summary = IndexSummary(added, skipped, len(files), files.skipped_count(), *choices)
    files.close()
    return summary


def rebuild_search(files: IndexFiles, memory_budget_bytes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rebuild ``images.faiss`` and ``captions.faiss`` from the vector files; record the choices in index.json."""
    if len(files) == 0:
        raise IndexFileError(f"{files.root}: no image could be indexed (every record was skipped); see the errors")
    chosen = {}
    for which in ("images", "captions"):
        index, choice = faiss_index.build(np.asarray(files.vectors(which)), memory_budget_bytes)
        faiss_index.save(index, files.root / f"{which}.faiss")
        chosen[which] = dataclasses.asdict(choice)
    files.info.update({"search": chosen, "items": len(files)})
    (files.root / "index.json").write_text(json.dumps(files.info, indent=1))
    return chosen["images"], chosen["captions"]
