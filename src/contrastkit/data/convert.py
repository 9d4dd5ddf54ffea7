"""Write any source as webdataset shards (``contrastkit data convert SPEC --out DIR``).

Each split becomes ``DIR/<split>-000000.tar, ...`` in the img2dataset layout:
``<key>.<jpg|png|webp>`` (the original encoded bytes when the file already is
one of these, else PNG), ``<key>.txt`` (the first caption) and ``<key>.json``
(``captions``, ``neg_captions``, ``tags``, ``neg_tags``, ``rewrites``,
``label``, ``source_key``). ``DIR/dataset.json`` lists each split's shards
and record count, and the class names and templates of the source's zero-shot
task, so ``wds:DIR`` reads the result back with its splits and tasks.

Bad records follow ``data.on_error``: ``raise`` stops naming the record, ``skip``
leaves them out and counts them. After writing, the shards are read back and
their sample count must equal the records written (:class:`CountMismatch` if not).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from .problems import DataError, Problem, SourceRecord, StreamingSource
from .records import Dataset, Record


class CountMismatch(RuntimeError):
    """The shards read back hold a different number of samples than were written."""


@dataclass
class SplitResult:
    split: str
    written: int
    read_back: int
    shards: list[str]
    skipped: Counter[str] = field(default_factory=Counter)


def iter_source(dataset: Dataset) -> Iterator[Record | Problem]:
    """Every record of a source in order (the whole stream for shards), problems as :class:`Problem`."""
    if getattr(dataset, "streaming", False):
        yield from cast(StreamingSource, dataset).iter_records()
        return
    for i in range(len(dataset)):
        try:
            record = dataset[i]
        except DataError as err:
            yield Problem.of(err)
            continue
        problem = getattr(record, "problem", None)
        yield problem if problem is not None else record


def _image_bytes(record: Record) -> tuple[bytes, str]:
    if isinstance(record, SourceRecord):
        record.load_image()  # validates (decodes) before the bytes are copied
        return record.image_bytes()
    image = record.load_image()
    return SourceRecord(image=image, captions=record.captions).image_bytes()


def convert_split(
    dataset: Dataset, out_dir: Path, split: str, shard_size: int = 1000, on_error: str = "raise", progress: bool = True
) -> SplitResult:
    import webdataset as wds
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{split}-*.tar"):
        old.unlink()
    pattern = str(out_dir / f"{split}-%06d.tar")
    skipped: Counter[str] = Counter()
    written = 0
    total = None if getattr(dataset, "streaming", False) else len(dataset)
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
        for item in tqdm(
            iter_source(dataset), total=total, desc=f"convert {split}", disable=not progress, dynamic_ncols=True
        ):
            try:
                if isinstance(item, Problem):
                    raise item.error()
                data, ext = _image_bytes(item)
            except DataError as err:
                if on_error == "raise":
                    raise
                skipped[err.reason] += 1
                continue
            meta: dict[str, Any] = {"captions": item.captions, "source_key": item.key}
            for name in ("neg_captions", "tags", "neg_tags", "rewrites"):
                if getattr(item, name):
                    meta[name] = getattr(item, name)
            if item.label is not None:
                meta["label"] = item.label
            sink.write(
                {
                    "__key__": f"{written:09d}",
                    ext: data,
                    "txt": item.captions[0].encode("utf-8"),
                    "json": json.dumps(meta).encode("utf-8"),
                }
            )
            written += 1
    shards = sorted(p.name for p in out_dir.glob(f"{split}-*.tar"))
    return SplitResult(split, written, count_samples([str(out_dir / s) for s in shards]), shards, skipped)


def count_samples(shards: Sequence[str]) -> int:
    """Samples in the shards, read back with the same reader training uses."""
    from ..config import DataConfig
    from .shards import WebDatasetSource

    if not shards:
        return 0
    source = WebDatasetSource("::".join(shards), "train", DataConfig(on_error="skip"), False)
    count = 0
    for item in source.iter_records():
        if isinstance(item, Problem):
            raise CountMismatch(f"reading back {item.where}: {item.detail}")
        count += 1
    return count


def convert(
    spec: str,
    out_dir: str | Path,
    cfg: Any,
    splits: Sequence[str] = ("train",),
    shard_size: int = 1000,
    progress: bool = True,
) -> list[SplitResult]:
    """Convert ``splits`` of ``spec`` into ``out_dir``; writes ``dataset.json``; raises CountMismatch."""
    from .sources import open_source

    out = Path(out_dir)
    info_path = out / "dataset.json"
    info: dict[str, Any] = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info.update({"format": "contrastkit-wds-1", "source": spec})
    info.setdefault("splits", {})
    results = []
    for split in splits:
        dataset = open_source(spec, split, cfg, raw=True)
        result = convert_split(dataset, out, split, shard_size, cfg.on_error, progress)
        if result.read_back != result.written:
            raise CountMismatch(f"{split}: wrote {result.written} samples but read back {result.read_back}")
        info["splits"][split] = {"shards": result.shards, "count": result.written, "skipped": dict(result.skipped)}
        tasks = dataset.zeroshot_tasks() if hasattr(dataset, "zeroshot_tasks") else []
        labelled = next((t for t in tasks if len(t.indices)), None)
        if labelled is not None and "classnames" not in info and getattr(dataset, "classnames", None):
            info.update(
                {
                    "classnames": list(labelled.classnames),
                    "templates": list(labelled.templates),
                    "label_name": labelled.name,
                }
            )
        results.append(result)
    info_path.write_text(json.dumps(info, indent=1))
    return results
