"""Small generated datasets in every supported format, for the tests and the data benchmark (test fixtures).

Images are flat-coloured squares with a disc of a second colour (PIL); the
caption names both colours, so a tiny model can learn something. Every
function is deterministic in its arguments.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 90, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 20),
}
NAMES = list(COLOURS)


def toy_item(index: int, size: int = 32, seed: int = 0) -> tuple[Image.Image, dict[str, Any]]:
    """Image ``index`` and its fields: caption, captions, neg_captions, tags, rewrites, label (= background)."""
    rng = random.Random(f"toy/{seed}/{index}")
    back, disc = rng.sample(NAMES, 2)
    image = Image.new("RGB", (size, size), COLOURS[back])
    r = rng.randint(size // 6, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    ImageDraw.Draw(image).ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLOURS[disc])
    other = rng.choice([c for c in NAMES if c not in (back, disc)])
    fields = {
        "caption": f"a {disc} disc on {back}",
        "captions": [f"a {disc} disc on {back}", f"{back} background with a {disc} circle"],
        "neg_captions": {"swap": [f"a {back} disc on {disc}"], "colour": [f"a {other} disc on {back}"]},
        "tags": [back, disc],
        "neg_tags": [other],
        "rewrites": [f"a {back} picture with a {disc} round disc", f"{disc} dot, {back} background"],
        "label": NAMES.index(back),
        "class": back,
    }
    return image, fields


def encode(image: Image.Image, fmt: str = "png") -> bytes:
    buf = io.BytesIO()
    image.save(
        buf,
        {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt.lower()],
        **({"quality": 90} if fmt.lower() in ("jpg", "jpeg") else {}),
    )
    return buf.getvalue()


def write_images(
    folder: Path, n: int, size: int = 32, seed: int = 0, fmt: str = "png", start: int = 0
) -> list[tuple[str, dict[str, Any]]]:
    """``folder/images/<i>.<fmt>`` for i in [start, start + n); returns (relative path, fields)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        image, fields = toy_item(i, size, seed)
        rel = f"images/{i:05d}.{fmt}"
        (folder / rel).write_bytes(encode(image, fmt))
        out.append((rel, fields))
    return out


def manifest_rows(items: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows with columns image, caption, caption2, hard_swap, hard_colour, tags, neg_tags, rewrites, label."""
    rows = []
    for rel, f in items:
        rows.append(
            {
                "image": rel,
                "caption": f["captions"][0],
                "caption2": f["captions"][1],
                "hard_swap": f["neg_captions"]["swap"],
                "hard_colour": f["neg_captions"]["colour"],
                "tags": f["tags"],
                "neg_tags": f["neg_tags"],
                "rewrites": f["rewrites"],
                "label": f["class"],
            }
        )
    return rows


def write_manifest(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows as CSV / TSV (lists joined by " || "), JSONL or parquet, by ``path``'s extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = path.suffix.lower().lstrip(".")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if kind in ("csv", "tsv"):
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, delimiter="\t" if kind == "tsv" else ",")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: " || ".join(v) if isinstance(v, list) else v for k, v in row.items()})
    elif kind == "jsonl":
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([dict(row) for row in rows]), path)
    else:
        raise ValueError(f"unknown manifest type {path.suffix!r}")
    return path


def write_folder(root: Path, per_class: int, size: int = 32, seed: int = 0, fmt: str = "png") -> list[str]:
    """``root/<colour>/<i>.<fmt>``: classes are background colours; returns the class folder names."""
    index = 0
    used: set[str] = set()
    for name in NAMES[:3]:
        (root / name).mkdir(parents=True, exist_ok=True)
    made = {name: 0 for name in NAMES[:3]}
    while min(made.values()) < per_class:
        image, fields = toy_item(index, size, seed)
        index += 1
        if fields["class"] in made and made[fields["class"]] < per_class:
            (root / fields["class"] / f"{index:05d}.{fmt}").write_bytes(encode(image, fmt))
            made[fields["class"]] += 1
            used.add(fields["class"])
    return sorted(used)


def write_shards(
    folder: Path,
    n: int,
    n_shards: int,
    size: int = 32,
    seed: int = 0,
    fmt: str = "jpg",
    prefix: str = "shard",
    with_json: bool = True,
    start: int = 0,
) -> list[Path]:
    """img2dataset-style shards ``folder/<prefix>-<k>.tar``: ``<key>.<fmt>``, ``<key>.txt``, ``<key>.json``.

    Sample ``i`` goes to shard ``i * n_shards // n`` (contiguous, near-equal shards); keys are ``%09d``.
    """
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}-{k:05d}.tar" for k in range(n_shards)]
    writers = [wds.TarWriter(str(p)) for p in paths]
    try:
        for i in range(start, start + n):
            image, f = toy_item(i, size, seed)
            sample = {"__key__": f"{i:09d}", fmt: encode(image, fmt), "txt": f["caption"].encode()}
            if with_json:
                meta = {k: f[k] for k in ("captions", "neg_captions", "tags", "neg_tags", "rewrites", "label")}
                meta["url"] = f"toy://{i}"
                sample["json"] = json.dumps(meta).encode()
            writers[(i - start) * n_shards // n].write(sample)
    finally:
        for w in writers:
            w.close()
    return paths
