"""Text–text data: (anchor, positive[, hard negatives]) pairs and gold-scored sentence pairs.

    pairs = read_text_pairs("pairs.jsonl")                                    # columns anchor, positive
    pairs = read_text_pairs("nli.csv", anchor="premise", positive="entailment", negatives=["contradiction"])
    pairs = read_text_pairs("wiki.txt.csv", anchor="text", positive=None)     # single sentences (SimCSE)
    sts = read_scored_pairs("sts-test.tsv", columns=("sentence1", "sentence2", "score"))

Files are CSV / TSV / JSONL / parquet (:mod:`~contrastkit.data.table_files`; the kind from the suffix or
given). With ``positive=None`` every anchor is its own positive (unsupervised SimCSE: the two copies differ
by dropout). A column the file lacks stops with an error naming it and the columns present. A row whose
anchor or positive is empty (or not UTF-8), or whose score is not a number, is a bad record: raised as a
:class:`~contrastkit.data.problems.DataError` naming the file, line and column (``on_error="raise"``) or
left out and counted by reason in the result's ``skipped`` (``"skip"``). An empty hard-negative cell is
not an error (that row has no negative).
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .problems import TEXT_ERRORS, DataError, text_items
from .table_files import MISSING, TABLE_KINDS, ColumnTable, read_columns

ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class TextPair:
    """An anchor, its positive and any hard negatives; ``key`` is where it came from (file line)."""

    anchor: str
    positive: str
    negatives: tuple[str, ...] = ()
    key: str = ""


@dataclass(frozen=True)
class ScoredPair:
    """Two texts and their gold similarity (STS: 0-5)."""

    text_a: str
    text_b: str
    score: float
    key: str = ""


@dataclass
class TextRows:
    """What a file gave: the usable rows and the bad ones left out, by reason (``on_error="skip"``)."""

    rows: list[Any]
    skipped: Counter[str] = field(default_factory=Counter)


def table_kind(path: Path, kind: str | None = None) -> str:
    """``kind`` or the one the suffix names (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``)."""
    chosen = kind or path.suffix.lstrip(".").lower()
    if chosen not in TABLE_KINDS:
        raise ValueError(f"{path}: cannot tell the file kind from {path.suffix!r}; use one of {', '.join(TABLE_KINDS)}")
    return chosen


def open_table(
    path: str | Path, kind: str | None, wanted: Sequence[str], on_error: str = "raise"
) -> tuple[Path, ColumnTable]:
    """The ``wanted`` columns of a file; an error names a column the file lacks, with the columns it has."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file does not exist")
    table = read_columns(path, table_kind(path, kind), wanted, str(path))
    require_columns(str(path), table.present, wanted)
    return path, table


def require_columns(name: str, present: Sequence[str], wanted: Sequence[str]) -> None:
    """Stop naming the first ``wanted`` column that ``name`` lacks, the closest one and every one it has."""
    for column in wanted:
        if column not in present:
            close = difflib.get_close_matches(column, list(present), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{name}: no column {column!r}{hint}; it has {', '.join(present) or 'no columns'}")


def _text(value: Any, where: str, column: str, required: bool) -> list[str]:
    try:
        texts = [] if value is MISSING else text_items(value, split=False)
    except TEXT_ERRORS as err:
        raise DataError("invalid_utf8", where, f"column {column!r} is not valid UTF-8 ({err.reason})") from None
    if required and not texts:
        raise DataError("empty_caption", where, f"column {column!r} is empty")
    return texts


def pair_of_row(
    table: ColumnTable, row: int, where: str, anchor: str, positive: str | None, negatives: Sequence[str]
) -> TextPair:
    """Row ``row`` of ``table`` as a :class:`TextPair`, or the :class:`DataError` that names what is wrong."""
    if row in table.bad_rows:
        raise table.bad_rows[row]
    first = _text(table.columns[anchor][row], where, anchor, True)[0]
    second = _text(table.columns[positive][row], where, positive, True)[0] if positive else first
    negs = tuple(t for column in negatives for t in _text(table.columns[column][row], where, column, False))
    return TextPair(first, second, negs, where)


def read_text_pairs(
    path: str | Path,
    anchor: str = "anchor",
    positive: str | None = "positive",
    negatives: Sequence[str] = (),
    *,
    kind: str | None = None,
    on_error: str = "raise",
) -> TextRows:
    """:class:`TextPair` rows of a file; see the module docstring."""
    path, table = open_table(path, kind, [anchor, *([positive] if positive else []), *negatives], on_error)
    out = TextRows([])
    for row, line in enumerate(table.lines):
        try:
            out.rows.append(pair_of_row(table, row, f"{path.name} line {line}", anchor, positive, negatives))
        except DataError as err:
            if on_error == "raise":
                raise
            out.skipped[err.reason] += 1
    return out


def read_scored_pairs(
    path: str | Path,
    columns: Sequence[str] = ("sentence1", "sentence2", "score"),
    *,
    kind: str | None = None,
    on_error: str = "raise",
) -> TextRows:
    """:class:`ScoredPair` rows of an STS-style file: two text columns and a numeric gold-score column."""
    if len(columns) != 3:
        raise ValueError(f"columns: name three (text a, text b, score), got {list(columns)}")
    a, b, score = columns
    path, table = open_table(path, kind, columns, on_error)
    out = TextRows([])
    for row, line in enumerate(table.lines):
        where = f"{path.name} line {line}"
        try:
            if row in table.bad_rows:
                raise table.bad_rows[row]
            text_a = _text(table.columns[a][row], where, a, True)[0]
            text_b = _text(table.columns[b][row], where, b, True)[0]
            raw = table.columns[score][row]
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise DataError("invalid_row", where, f"score column {score!r} holds {raw!r}, not a number") from None
            if value != value:
                raise DataError("invalid_row", where, f"score column {score!r} is empty (NaN)")
            out.rows.append(ScoredPair(text_a, text_b, value, where))
        except DataError as err:
            if on_error == "raise":
                raise
            out.skipped[err.reason] += 1
    return out
