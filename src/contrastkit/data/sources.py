"""Data specs -> datasets.

A data spec (``data.source``, or ``SPEC`` on the command line) names a source::

    SPEC    := KIND ":" TARGET | TARGET          (KIND inferred from TARGET, see below)
    KIND    := synthetic | csv | tsv | jsonl | parquet | folder | wds | hf

    synthetic:shapes                 the built-in world of coloured shapes (contrastkit.data.shapes)
    synthetic:shapes-clutter         the same scenes on cluttered backgrounds: the shifted domain
    synthetic:shapes-dark            the same scenes underexposed (residual-direction example)
    csv:PATH  tsv:PATH               a manifest (contrastkit.data.manifest): image path column + caption
    jsonl:PATH  parquet:PATH         column(s), optional negatives / tags / rewrites / label columns
    folder:DIR                       image folders, one sub-folder per class (contrastkit.data.folders)
    wds:SHARDS                       webdataset tar shards, streamed (contrastkit.data.shards): a brace
                                     pattern "d/{00000..00009}.tar", patterns joined by "::", or a folder
    hf:TARGET                        Hugging Face datasets (contrastkit.data.hf): a save_to_disk folder,
                                     a local data file, or a Hub name
    pairs:shapes  pairs:FILE         text pairs for text models (contrastkit.data.text_pair_source): the
                                     shapes world's paraphrase pairs, or a CSV/TSV/JSONL/parquet file

Without a KIND: a path ending in ``.csv``/``.tsv``/``.jsonl``/``.parquet`` is that manifest, one ending in
``.tar`` (brace patterns included) is ``wds``, and an existing directory is ``folder`` (or ``wds`` when it
holds ``.tar`` shards or a ``dataset.json``). Column names are DataConfig fields (``data.image_column``,
``data.caption_columns``, ...), not part of the spec.

Splits (train / val / test), first rule that applies:

1. ``data.val_source`` / ``data.test_source``: a spec of their own for that split (used when the spec
   opened is ``data.source`` itself);
2. ``{split}`` in TARGET is replaced by the split name: ``csv:data/{split}.csv`` reads ``data/train.csv``,
   ``data/val.csv``, ``data/test.csv`` (``folder:data/{split}`` takes its classes from ``data/train``);
3. a source that has splits of its own uses them: a converted shard folder (its ``dataset.json``), a
   Hugging Face ``DatasetDict``;
4. the hash split, when ``data.val_fraction`` or ``data.test_fraction`` is above 0: a record is in
   test when ``h < test_fraction``, in val when ``h < test_fraction + val_fraction``, else in train, where
   ``h`` in [0, 1) is a hash of (``data.seed``, the record's key: the image path as written in the
   manifest, the path under an image folder, the sample key in a shard, the image path or row of a
   Hugging Face row). The split is stable under reordering or appending rows and keeps every row of
   one image in the same split. A held-out split whose fraction is 0 is the other held-out split;
5. otherwise every split is the whole source (evaluation then measures the training data).

Val and test of every source but ``synthetic:shapes`` hold at most ``data.eval_size`` records (the first
usable ones of the split; in ``data.on_error: skip`` mode bad ones are left out). The synthetic
source is unchanged: ``train_size`` / ``eval_size`` records per split, made from ``data.seed``.

Every dataset returned carries ``data_options`` (on_error, rewrite_sampling, synonyms, resample,
shuffle_buffer) for the training pipeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..config import DataConfig
from .records import Dataset
from .splits import fallback_split

SOURCES = (
    "synthetic:shapes",
    "csv:PATH",
    "tsv:PATH",
    "jsonl:PATH",
    "parquet:PATH",
    "folder:DIR",
    "wds:SHARDS",
    "hf:TARGET",
    "pairs:FILE",
)
SYNTHETIC = {  # spec -> rendering style
    "synthetic:shapes": "plain",
    "synthetic:shapes-clutter": "clutter",
    "synthetic:shapes-dark": "dark",
}
KINDS = ("synthetic", "csv", "tsv", "jsonl", "parquet", "folder", "wds", "hf", "pairs")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataOptions:
    """The per-run data settings the training pipeline reads from a source."""

    on_error: str = "raise"
    rewrite_sampling: bool = False
    synonyms: str = ""
    resample: bool = False
    shuffle_buffer: int = 1000

    @classmethod
    def of(cls, cfg: DataConfig) -> DataOptions:
        return cls(cfg.on_error, cfg.rewrite_sampling, cfg.synonyms, cfg.resample, cfg.shuffle_buffer)


def is_generated(spec: str) -> bool:
    """Whether ``spec`` names a built-in generated source (its splits are made to size, not read from files)."""
    from .text_pair_source import BUILTIN

    kind, _, target = spec.partition(":")
    return spec in SYNTHETIC or (kind == "pairs" and target in BUILTIN)


def parse_spec(spec: str) -> tuple[str, str]:
    """``"csv:data/a.csv"`` -> ``("csv", "data/a.csv")``; infers the kind of a bare path."""
    spec = spec.strip()
    match = re.match(r"^([a-z]+):(?!//)(.*)$", spec)
    if match and match.group(1) in KINDS:
        kind, target = match.group(1), match.group(2)
        if not target:
            raise ValueError(f"data.source: {spec!r} names no {kind} target (e.g. {kind}:PATH)")
        return kind, target
    if match and len(match.group(1)) > 1 and not Path(spec).exists():
        raise ValueError(
            f"data.source: unknown source kind {match.group(1)!r} in {spec!r}; kinds: "
            f"{', '.join(KINDS)} (e.g. {', '.join(SOURCES)})"
        )
    lower = spec.lower()
    for ext in ("csv", "tsv", "jsonl", "parquet"):
        if lower.endswith("." + ext):
            return ext, spec
    if lower.endswith(".tar") or ".tar::" in lower:
        return "wds", spec
    probe = Path(spec.replace("{split}", "train"))
    if probe.is_dir():
        if (probe / "dataset.json").is_file() or any(probe.glob("*.tar")):
            return "wds", spec
        return "folder", spec
    raise ValueError(
        f"data.source: cannot tell what {spec!r} is; write KIND:TARGET with KIND one of "
        f"{', '.join(KINDS)} (e.g. {', '.join(SOURCES)})"
    )


def _attach_options(dataset: Dataset, cfg: DataConfig) -> None:
    """Give ``dataset`` the run's :class:`DataOptions` (read back with ``getattr(dataset, "data_options", None)``)."""
    dataset.data_options = DataOptions.of(cfg)  # type: ignore[attr-defined]  # set on any source; not declared by them


def open_source(spec: str, split: str, cfg: DataConfig, *, raw: bool = False) -> Dataset:
    """Open ``split`` (train | val | test) of the source named by ``spec``; see the module docstring.

    ``raw``: the whole split, without the evaluation view (the ``eval_size`` cap and, in skip mode, the
    filter of bad records) that val / test get otherwise; for scans and conversion.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if spec in SYNTHETIC:
        from .shapes import SyntheticShapes

        size = cfg.train_size if split == "train" else cfg.eval_size
        shapes = SyntheticShapes(
            split=split, size=size, seed=cfg.seed, image_size=cfg.image_size, style=SYNTHETIC[spec]
        )
        _attach_options(shapes, cfg)
        return shapes
    own = {"val": cfg.val_source, "test": cfg.test_source}.get(split)
    if own and spec == cfg.source and own != spec:
        return open_source(own, split, cfg, raw=raw)
    kind, target = parse_spec(spec)
    if kind == "synthetic":
        raise ValueError(f"data.source: unknown synthetic world {spec!r}; available: {', '.join(SYNTHETIC)}")
    per_file = "{split}" in target
    if per_file:
        target = target.replace("{split}", split)
    hashed = not per_file and cfg.val_fraction + cfg.test_fraction > 0
    part = fallback_split(split, cfg) if hashed else split
    dataset: Dataset
    if kind == "pairs":
        from .text_pair_source import TextPairSource

        limit = None if split == "train" or raw else cfg.eval_size
        native = target.startswith("hf:")  # a Hugging Face dataset knows which splits it has (rule 3 before rule 4)
        dataset = TextPairSource(target, split if native else part, cfg, split_by_hash=hashed, limit=limit)
        _attach_options(dataset, cfg)
        return dataset
    if kind in ("csv", "tsv", "jsonl", "parquet"):
        from .manifest import ManifestSource

        dataset = ManifestSource(target, kind, part, cfg, split_by_hash=hashed)
    elif kind == "folder":
        from .folders import ImageFolderSource, class_folders_of

        classes = None
        if per_file:
            train_dir = Path(spec.split(":", 1)[1] if spec.startswith("folder:") else spec).as_posix()
            train_root = Path(train_dir.replace("{split}", "train"))
            classes = class_folders_of(train_root) if train_root.is_dir() else None
        dataset = ImageFolderSource(target, part, cfg, split_by_hash=hashed, class_folders=classes)
    elif kind == "wds":
        from .shards import WebDatasetSource

        dataset = WebDatasetSource(target, part, cfg, split_by_hash=hashed)
    else:
        from .hf import HFSource

        dataset = HFSource(target, split, cfg)  # it knows which splits it has (rule 3 before rule 4)
    _attach_options(dataset, cfg)
    if split != "train" and not raw and not getattr(dataset, "streaming", False):
        from .eval_view import CheckedView

        dataset = CheckedView(dataset, cfg.eval_size, skip_bad=cfg.on_error == "skip")
    return dataset
