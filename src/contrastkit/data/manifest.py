"""Manifests: CSV, TSV, JSONL and parquet files with one row per image.

Columns (names from :class:`~contrastkit.config.DataConfig`):

- ``image_column`` (default ``image``): the image path, relative to the manifest's folder (or absolute);
- ``caption_columns`` (default ``caption``): one or more caption columns; every non-empty caption of a
  row is a correct caption of its image (training draws one per epoch);
- optional: ``neg_caption_columns`` (hard negatives; the column name is the category), ``tag_column`` /
  ``neg_tag_column`` (short tags true / false for the image), ``rewrite_column`` (LaCLIP rewrites),
  ``label_column`` (class name or id; defines a zero-shot task with ``class_template``).

A cell holding several texts is a JSON / parquet list or, in CSV/TSV, texts joined by ``" || "`` (the
format ``contrastkit data export`` writes). A configured column that the file does not have stops with
an error naming it, the closest column name and every column present. A JSONL row without a configured
column, a row that is not JSON, an empty caption, or a caption that is not UTF-8 are bad records
(``data.on_error``). The whole manifest is read into memory (only the configured columns).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import DataConfig, column_list
from .problems import TEXT_ERRORS, DataError, Problem, SourceRecord, check_captions, text_items, text_of
from .records import ZeroShotTask
from .splits import split_of
from .table_files import MISSING, TABLE_KINDS, read_columns

MANIFEST_KINDS = TABLE_KINDS


class ColumnError(ValueError):
    """A configured column is not in the data (always raised: no record could be read)."""


def check_columns(source: str, present: Sequence[str], cfg: DataConfig, with_image: bool = True) -> None:
    """Raise ColumnError naming each configured column missing from ``present``."""
    wanted = configured_columns(cfg, with_image)
    for setting, name in wanted:
        if name not in present:
            close = difflib.get_close_matches(name, list(present), n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}? set {setting}={close[0]})" if close else ""
            raise ColumnError(
                f"{source}: column {name!r} (data.{setting}) not found{hint}; columns present: "
                f"{', '.join(map(str, present)) or '(none)'}"
            )


def configured_columns(cfg: DataConfig, with_image: bool = True) -> list[tuple[str, str]]:
    """(setting, column) for every column the config names."""
    out = [("image_column", cfg.image_column)] if with_image else []
    out += [("caption_columns", c) for c in column_list(cfg.caption_columns)]
    out += [("neg_caption_columns", c) for c in column_list(cfg.neg_caption_columns)]
    for setting in ("tag_column", "neg_tag_column", "rewrite_column", "label_column"):
        name = getattr(cfg, setting).strip()
        if name:
            out.append((setting, name))
    return out


def class_names(values: Sequence[Any]) -> tuple[list[str], dict[Any, int]]:
    """Class names of a label column and the value -> id map (integers keep their value as id)."""
    seen = [v for v in values if v is not None and v is not MISSING and v == v and str(v).strip() != ""]
    if seen and all(isinstance(v, int) and not isinstance(v, bool) for v in seen):
        top = max(seen)
        return [str(i) for i in range(top + 1)], {i: i for i in range(top + 1)}
    names = sorted({str(v).strip() for v in seen})
    return names, {name: i for i, name in enumerate(names)}


class TableSource:
    """Rows with named columns -> records, shared by manifests and Hugging Face datasets.

    Subclasses set ``name``, ``n_rows``, ``present`` (column names) and implement ``_cell(row, column)``,
    ``_where(row)``, ``_image(row, value)`` (a path or bytes from the image cell).
    """

    name: str
    split: str
    n_rows: int  # rows in the table
    rows: list[int]  # the table rows of this split, in record order
    streaming = False

    def __init__(self, cfg: DataConfig, split: str, split_by_hash: bool) -> None:
        self.cfg, self.split = cfg, split
        self.on_error = cfg.on_error
        self.caption_columns = column_list(cfg.caption_columns)
        self.neg_columns = column_list(cfg.neg_caption_columns)
        self._split_by_hash = split_by_hash
        self._labels: tuple[list[str], dict[Any, int]] | None = None

    # -- to be provided by subclasses
    def _cell(self, row: int, column: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _where(self, row: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _image(self, row: int, value: Any, where: str) -> tuple[str, bytes | None]:  # pragma: no cover
        raise NotImplementedError

    def _row_problem(self, row: int) -> DataError | None:
        return None

    def _split_key(self, row: int) -> str:
        value = self._cell(row, self.cfg.image_column)
        return value if isinstance(value, str) and value else f"row-{row}"

    def _select_rows(self, n_rows: int) -> list[int]:
        if not self._split_by_hash:
            return list(range(n_rows))
        cfg = self.cfg
        return [
            r
            for r in range(n_rows)
            if split_of(self._split_key(r), cfg.seed, cfg.val_fraction, cfg.test_fraction) == self.split
        ]

    # -- the Dataset interface
    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> SourceRecord:
        if not -len(self.rows) <= index < len(self.rows):
            raise IndexError(f"{self.name} [{self.split}]: index {index} out of range for {len(self.rows)} records")
        row = self.rows[index]
        where = self._where(row)
        try:
            return self._record(row, where)
        except DataError as err:
            if self.on_error == "raise":
                raise
            return SourceRecord(image=where, captions=[], key=where, problem=Problem.of(err))

    def _get(self, row: int, column: str, where: str, required: bool = False) -> Any:
        value = self._cell(row, column)
        if value is MISSING:
            if required:
                raise DataError("missing_column", where, f"the row has no {column!r} field")
            return None
        return value

    def _texts(self, row: int, column: str, where: str) -> list[str]:
        try:
            return text_items(self._get(row, column, where))
        except TEXT_ERRORS as err:
            raise DataError("invalid_utf8", where, f"column {column!r} is not valid UTF-8 ({err.reason})") from None

    def _record(self, row: int, where: str) -> SourceRecord:
        problem = self._row_problem(row)
        if problem is not None:
            raise problem
        cfg = self.cfg
        image_value = self._get(row, cfg.image_column, where, required=True)
        cells = [self._cell(row, c) for c in self.caption_columns]
        if all(c is MISSING for c in cells):
            raise DataError(
                "missing_column",
                where,
                f"the row has none of the caption fields {', '.join(map(repr, self.caption_columns))}",
            )
        captions = check_captions([c for c in cells if c is not MISSING], where)
        name, blob = self._image(row, image_value, where)
        record = SourceRecord(image=name, captions=captions, key=where, blob=blob)
        for column in self.neg_columns:
            negatives = self._texts(row, column, where)
            if negatives:
                record.neg_captions[column] = negatives
        if cfg.tag_column:
            record.tags = self._texts(row, cfg.tag_column, where)
        if cfg.neg_tag_column:
            record.neg_tags = self._texts(row, cfg.neg_tag_column, where)
        if cfg.rewrite_column:
            record.rewrites = self._texts(row, cfg.rewrite_column, where)
        if cfg.label_column:
            label = self._label_of(self._get(row, cfg.label_column, where))
            record.label = label
            if label is not None:
                record.meta["class"] = self.classnames[label]
        return record

    # -- labels and zero-shot
    def _label_values(self) -> list[Any]:
        return [self._cell(r, self.cfg.label_column) for r in range(self.n_rows)]

    @property
    def classnames(self) -> list[str]:
        if self._labels is None:
            self._labels = class_names(self._label_values()) if self.cfg.label_column else ([], {})
        return self._labels[0]

    def _label_of(self, value: Any) -> int | None:
        if value is None or value is MISSING or value != value or str(value).strip() == "":
            return None
        self.classnames  # noqa: B018 - fills self._labels
        assert self._labels is not None
        lookup = self._labels[1]
        key = (
            value if isinstance(value, int) and not isinstance(value, bool) and value in lookup else str(value).strip()
        )
        return lookup.get(key)

    def zeroshot_tasks(self) -> list[ZeroShotTask]:
        """One task named after ``label_column`` over the records that have a label."""
        if not self.cfg.label_column or not self.classnames:
            return []
        indices, labels = [], []
        for pos, row in enumerate(self.rows):
            try:
                label = self._label_of(self._cell(row, self.cfg.label_column))
            except TypeError:
                label = None
            if label is not None:
                indices.append(pos)
                labels.append(label)
        if not indices:
            return []
        return [ZeroShotTask(self.cfg.label_column, list(self.classnames), [self.cfg.class_template], indices, labels)]


class ManifestSource(TableSource):
    """One split of a CSV / TSV / JSONL / parquet manifest; see the module docstring."""

    def __init__(self, path: str | Path, kind: str, split: str, cfg: DataConfig, split_by_hash: bool) -> None:
        super().__init__(cfg, split, split_by_hash)
        self.path = Path(path)
        if kind not in MANIFEST_KINDS:
            raise ValueError(f"manifest kind {kind!r} is unknown; choose one of {', '.join(MANIFEST_KINDS)}")
        if not self.path.is_file():
            raise FileNotFoundError(f"{kind}:{path}: manifest file does not exist")
        self.kind = kind
        self.name = f"{kind}:{path}"
        self.base = self.path.parent
        self.wanted = [c for _, c in configured_columns(cfg)]
        table = read_columns(self.path, kind, self.wanted, self.name)
        self.lines, self.bad_rows, self.columns = table.lines, table.bad_rows, table.columns
        present = table.present
        check_columns(self.name, present, cfg)
        self.n_rows = len(self.lines)
        self.rows = self._select_rows(self.n_rows)

    # -- TableSource hooks
    def _cell(self, row: int, column: str) -> Any:
        return self.columns[column][row]

    def _where(self, row: int) -> str:
        unit = "row" if self.kind == "parquet" else "line"
        return f"{self.path.name} {unit} {self.lines[row]}"

    def _row_problem(self, row: int) -> DataError | None:
        return self.bad_rows.get(row)

    def _split_key(self, row: int) -> str:
        value = self.columns[self.cfg.image_column][row]
        return value.strip() if isinstance(value, str) and value.strip() else f"row-{row}"

    def _image(self, row: int, value: Any, where: str) -> tuple[str, bytes | None]:
        if isinstance(value, (bytes, bytearray)):
            return f"{where} (inline image)", bytes(value)
        if isinstance(value, dict) and ("bytes" in value or "path" in value):  # HF-style image struct
            if value.get("bytes"):
                return str(value.get("path") or f"{where} (inline image)"), bytes(value["bytes"])
            value = value.get("path")
        try:
            text = text_of(value)
        except UnicodeError:
            raise DataError("invalid_row", where, "the image path is not valid UTF-8") from None
        if not text or not text.strip():
            raise DataError("missing_file", where, f"the {self.cfg.image_column!r} cell is empty")
        text = text.strip()
        if "://" in text:
            raise DataError(
                "missing_file",
                where,
                f"image {text} is a URL; download the images first "
                "(e.g. with img2dataset) and point the manifest at the files",
            )
        path = Path(text)
        return str(path if path.is_absolute() else self.base / path), None
