"""Export a dataset to PNG files and a ``captions.csv`` a person can read.

``export_dataset`` writes ``out_dir/images/<key>.png`` and
``out_dir/captions.csv`` with one row per record: ``image`` (the PNG path
relative to the CSV), ``caption`` (``captions[0]``), ``all_captions``, one
column per hard-negative category found in the exported records (in order of
first appearance) and ``tags``. Lists inside a cell are joined by " || ".
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from .records import Dataset

JOIN = " || "


def _file_stem(key: str, index: int, used: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")
    if not stem or stem in used:
        stem = f"{index:06d}" + (f"_{stem}" if stem else "")
    used.add(stem)
    return stem


def export_dataset(dataset: Dataset, out_dir: Path, limit: int | None = None) -> Path:
    """Write the first ``limit`` records (all if None) of ``dataset``; return the CSV's path."""
    if limit is not None and limit < 0:
        raise ValueError(f"export: limit must be non-negative, got {limit}")
    out_dir = Path(out_dir)
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    rows: list[dict[str, str]] = []
    categories: dict[str, None] = {}
    used: set[str] = set()
    for index in range(count):
        record = dataset[index]
        path = images / f"{_file_stem(record.key, index, used)}.png"
        record.load_image().convert("RGB").save(path)
        row = {
            "image": path.relative_to(out_dir).as_posix(),
            "caption": record.captions[0],
            "all_captions": JOIN.join(record.captions),
            "tags": JOIN.join(record.tags),
        }
        for category, negatives in record.neg_captions.items():
            categories.setdefault(category)
            row[category] = JOIN.join(negatives)
        rows.append(row)
    csv_path = out_dir / "captions.csv"
    columns = ["image", "caption", "all_captions", *categories, "tags"]
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
