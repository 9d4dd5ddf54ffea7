"""Hugging Face ``datasets`` (optional: ``pip install datasets``).

``hf:TARGET`` where TARGET is

- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``load_from_disk``);
- a local data file (``.parquet``, ``.json``/``.jsonl``, ``.csv``, ``.arrow``) loaded with ``load_dataset``;
- otherwise a dataset name on the Hub (``load_dataset(TARGET)``; needs network access or the local cache).

Columns are named as for manifests (``data.image_column``, ``data.caption_columns``, ...). The image
column may be an ``Image`` feature (read undecoded and decoded with the same checks as files), bytes,
or a path (relative to TARGET's folder). A ``ClassLabel`` label column gives the class names. Splits:
a ``DatasetDict`` supplies ``train`` / ``validation`` (or ``val``/``valid``/``dev``) / ``test`` when it
has them. When ``data.val_fraction`` / ``data.test_fraction`` are set and it lacks a held-out split,
train and the missing held-out split(s) come from the hash split of its ``train`` (the held-out splits
it has stay as they are); without fractions a missing split is the whole ``train`` split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import DataConfig
from .manifest import TableSource, check_columns, class_names
from .splits import fallback_split, split_of
from .table_files import MISSING

SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val", "valid", "dev"), "test": ("test",)}


def _load(target: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise ImportError("hf: sources need the datasets library: pip install datasets") from None
    path = Path(target)
    if path.is_dir() and (
        (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists() or (path / "state.json").exists()
    ):
        return datasets.load_from_disk(str(path))
    if path.is_file():
        builder = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}.get(
            path.suffix.lower()
        )
        if builder is None:
            raise ValueError(f"hf:{target}: unknown file type {path.suffix!r} (parquet, json, jsonl, csv, arrow)")
        return datasets.load_dataset(builder, data_files=str(path))
    return datasets.load_dataset(target)


def hf_split(target: str, split: str, cfg: DataConfig) -> tuple[Any, str, bool]:
    """The dataset holding ``split`` of ``hf:TARGET``, the split to take from it and whether by hash (see above)."""
    import datasets

    loaded = _load(target)
    hashing = cfg.val_fraction + cfg.test_fraction > 0
    if isinstance(loaded, (datasets.DatasetDict, dict)):
        if "train" not in loaded and not any(n in loaded for n in SPLIT_NAMES[split]):
            raise ValueError(f"hf:{target}: no {split!r} split and no 'train' split; splits: {', '.join(loaded)}")
        native = {s: next((n for n in SPLIT_NAMES[s] if n in loaded), None) for s in SPLIT_NAMES}
        carve = hashing and (native["val"] is None or native["test"] is None)
        if native[split] is not None and not (split == "train" and carve):
            ds, by_hash = loaded[native[split]], False
        else:
            ds, by_hash = loaded["train"], carve
    else:
        ds, by_hash = loaded, hashing
    return ds, fallback_split(split, cfg) if by_hash else split, by_hash


class HFSource(TableSource):
    """One split of a Hugging Face dataset; see the module docstring."""

    def __init__(self, target: str, split: str, cfg: DataConfig) -> None:
        import datasets

        self.name = f"hf:{target}"
        self.base = Path(target) if Path(target).is_dir() else Path(target).parent
        ds, split, by_hash = hf_split(target, split, cfg)
        super().__init__(cfg, split, by_hash)
        check_columns(self.name, list(ds.column_names), cfg)
        feature = ds.features.get(cfg.image_column)
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(cfg.image_column, datasets.Image(decode=False))
        self.ds = ds
        label_feature = ds.features.get(cfg.label_column) if cfg.label_column else None
        self._class_label = label_feature if isinstance(label_feature, datasets.ClassLabel) else None
        self.n_rows = len(ds)
        self._cache: tuple[int, dict[str, Any]] | None = None
        self.rows = self._select_rows(self.n_rows)

    def _row_dict(self, row: int) -> dict[str, Any]:
        if self._cache is None or self._cache[0] != row:
            self._cache = (row, self.ds[row])
        return self._cache[1]

    def _cell(self, row: int, column: str) -> Any:
        return self._row_dict(row).get(column, MISSING)

    def _where(self, row: int) -> str:
        return f"{self.name} row {row}"

    def _split_key(self, row: int) -> str:
        value = self._cell(row, self.cfg.image_column)
        if isinstance(value, dict) and value.get("path"):
            return str(value["path"])
        return value if isinstance(value, str) and value else f"row-{row}"

    def _select_rows(self, n_rows: int) -> list[int]:
        if not self._split_by_hash:
            return list(range(n_rows))
        column = self.ds[self.cfg.image_column] if self._split_by_hash else None

        cfg = self.cfg
        keys = [(v.get("path") if isinstance(v, dict) else v) or f"row-{r}" for r, v in enumerate(column)]
        return [
            r
            for r, k in enumerate(keys)
            if split_of(str(k), cfg.seed, cfg.val_fraction, cfg.test_fraction) == self.split
        ]

    def _label_values(self) -> list[Any]:
        return list(self.ds[self.cfg.label_column])

    @property
    def classnames(self) -> list[str]:
        if self._class_label is not None:
            return list(self._class_label.names)
        return super().classnames

    def _label_of(self, value: Any) -> int | None:
        if self._class_label is not None:
            return int(value) if isinstance(value, int) and 0 <= value < len(self._class_label.names) else None
        return super()._label_of(value)

    def _image(self, row: int, value: Any, where: str) -> tuple[str, bytes | None]:
        from .problems import DataError

        if isinstance(value, dict):
            if value.get("bytes"):
                return str(value.get("path") or f"{where} (image bytes)"), bytes(value["bytes"])
            value = value.get("path")
        if isinstance(value, (bytes, bytearray)):
            return f"{where} (image bytes)", bytes(value)
        if not isinstance(value, str) or not value.strip():
            raise DataError("missing_file", where, f"the {self.cfg.image_column!r} cell has no image")
        path = Path(value.strip())
        return str(path if path.is_absolute() else self.base / path), None


__all__ = ["HFSource", "class_names"]
