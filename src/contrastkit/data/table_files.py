"""Reading the wanted columns of a CSV / TSV / JSONL / parquet file into memory.

One reader per format, shared by image manifests (:mod:`~contrastkit.data.manifest`) and text-pair files
(:mod:`~contrastkit.data.text_pairs`). CSV/TSV need a header row; blank lines are skipped; a JSONL line
that is not a JSON object becomes a bad row (``invalid_row``) and a JSONL row without a wanted key holds
:data:`MISSING`. When a wanted column is absent from the file no row is read: the caller names the column
(the returned ``present`` lists what the file has).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .problems import DataError

TABLE_KINDS = ("csv", "tsv", "jsonl", "parquet")
MISSING = object()  # a JSONL row without the key


@dataclass
class ColumnTable:
    """The wanted columns of one file; ``lines[i]`` is row i's line (parquet: row) number, for messages."""

    present: list[str]
    columns: dict[str, list[Any]]
    lines: list[int] = field(default_factory=list)
    bad_rows: dict[int, DataError] = field(default_factory=dict)


def _read_delimited(path: Path, kind: str, name: str, wanted: Sequence[str]) -> ColumnTable:
    delimiter = "\t" if kind == "tsv" else ","
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{name}: the file is empty (expected a header row of column names)")
        header = [h.strip() for h in header]
        table = ColumnTable(header, {c: [] for c in wanted})
        at = {c: header.index(c) for c in wanted if c in header}
        if len(at) < len(table.columns):
            return table
        line = reader.line_num
        for cells in reader:
            if not cells or all(not c.strip() for c in cells):
                line = reader.line_num
                continue
            table.lines.append(line + 1)
            for column, i in at.items():
                table.columns[column].append(cells[i] if i < len(cells) else MISSING)
            line = reader.line_num
    return table


def _read_jsonl(path: Path, wanted: Sequence[str]) -> ColumnTable:
    present: dict[str, None] = {}
    table = ColumnTable([], {c: [] for c in wanted})
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            row_index = len(table.lines)
            table.lines.append(number)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", "surrogateescape")  # bad bytes surface as invalid_utf8 text
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except ValueError as err:
                where = f"{path.name} line {number}"
                table.bad_rows[row_index] = DataError("invalid_row", where, f"not a JSON object: {err}")
                obj = {}
            present.update(dict.fromkeys(obj))
            for column in table.columns:
                table.columns[column].append(obj.get(column, MISSING))
    table.present = list(present)
    return table


def _read_parquet(path: Path, wanted: Sequence[str]) -> ColumnTable:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("reading parquet files needs pyarrow: pip install pyarrow") from None
    present = list(pq.read_schema(path).names)
    columns = list(dict.fromkeys(wanted))
    if any(c not in present for c in columns):
        return ColumnTable(present, {c: [] for c in columns})
    data = pq.read_table(path, columns=columns).to_pydict()
    rows = len(data[columns[0]]) if columns else 0
    return ColumnTable(present, {c: data[c] for c in columns}, list(range(1, rows + 1)))


def read_columns(path: Path, kind: str, wanted: Sequence[str], name: str) -> ColumnTable:
    """The ``wanted`` columns of ``path`` read as ``kind`` (one of :data:`TABLE_KINDS`); ``name`` for messages."""
    if kind not in TABLE_KINDS:
        raise ValueError(f"{name}: unknown table kind {kind!r}; choose one of {', '.join(TABLE_KINDS)}")
    wanted = list(dict.fromkeys(wanted))
    if kind in ("csv", "tsv"):
        return _read_delimited(path, kind, name, wanted)
    if kind == "jsonl":
        return _read_jsonl(path, wanted)
    return _read_parquet(path, wanted)
