"""Text pairs as a training source (``data.source: pairs:...``): records with an anchor text instead of an image.

    pairs:shapes          the shapes world's paraphrase pairs (a scene's caption, a rewrite stating the same
                          facts, a hard negative; train / val / test from the world's splits, ``train_size`` /
                          ``eval_size`` scenes)
    pairs:shapes-sentences one caption per scene as its own positive (unsupervised SimCSE / WhitenedCSE)
    pairs:hf:TARGET       a Hugging Face dataset (``hf:`` sources' targets and splits), columns as for files
    pairs:FILE            a CSV / TSV / JSONL / parquet file: the anchor in ``data.anchor_column``, the
                          positive in the first of ``data.caption_columns`` (the same column as the anchor:
                          single sentences, SimCSE), hard negatives in ``data.neg_caption_columns``

With ``data.label_column`` set (a file or HF dataset), each row's positive is its class description,
``data.class_template`` filled with the class name (e.g. ``--set data.class_template='a text about {}'``),
and the record carries its class id (``labels``: the ``label_contrast`` term, the ``text_classification`` task).

A record's ``anchor`` is encoded by the text tower as the first side of the pair (``Encoded.image``), its
caption (the positive) as the second (``Encoded.text``), its negatives as ``neg_text``: every objective term
applies unchanged. Splits follow the data spec rules of :mod:`~contrastkit.data.sources` (``{split}`` in the
path, ``data.val_source`` / ``test_source``, the hash split on the anchor text, else the whole file). A bad
row (empty anchor or positive, not JSON, not UTF-8) raises naming the file, line and column, or in
``data.on_error: skip`` mode is a record with ``problem`` set, which training skips and counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..config import DataConfig, column_list
from .manifest import class_names
from .problems import DataError, Problem, SourceRecord
from .records import ZeroShotTask
from .splits import split_of
from .table_files import MISSING, ColumnTable
from .text_pairs import TextPair, open_table, pair_of_row, require_columns

BUILTIN = ("shapes", "shapes-sentences")  # pairs:shapes, pairs:shapes-sentences: made from the shapes world


@dataclass
class TextPairRecord(SourceRecord):
    """A text pair: ``anchor`` and its positive (``captions[0]``); ``neg_captions["hard"]`` its negatives."""

    anchor: str = ""

    def load_image(self) -> Image.Image:
        raise TypeError(f"record {self.key}: a text pair has no image (data.source pairs:... trains text models)")


def record_of(pair: TextPair) -> TextPairRecord:
    negatives = {"hard": list(pair.negatives)} if pair.negatives else {}
    return TextPairRecord(
        image=pair.key, captions=[pair.positive], neg_captions=negatives, key=pair.key, anchor=pair.anchor
    )


def _hf_table(target: str, split: str, cfg: DataConfig, wanted: list[str]) -> tuple[Path, ColumnTable, bool, str]:
    """The wanted columns of a Hugging Face dataset's split (splits as ``hf:`` sources choose them)."""
    from .hf import hf_split

    ds, split, by_hash = hf_split(target, split, cfg)
    require_columns(f"hf:{target}", list(ds.column_names), wanted)
    table = ColumnTable(list(ds.column_names), {c: list(ds[c]) for c in dict.fromkeys(wanted)})
    table.lines = list(range(1, len(ds) + 1))
    return Path(f"hf:{target}"), table, by_hash, split


class TextPairSource:
    """One split of a text-pair source; see the module docstring."""

    text_pairs = True  # what the engine and the evaluation suite look for

    def __init__(self, target: str, split: str, cfg: DataConfig, split_by_hash: bool, limit: int | None = None) -> None:
        self.split, self.cfg = split, cfg
        self.name = f"pairs:{target}"
        self.records: list[TextPairRecord | None] = []
        self.classnames: list[str] = []
        if target in BUILTIN:
            from .shapes.similarity import paraphrase_pairs, sentences

            size = cfg.train_size if split == "train" else cfg.eval_size
            make = paraphrase_pairs if target == "shapes" else sentences
            self.records = [record_of(p) for p in make(size, cfg.seed, split=split)]
            self.rows = list(range(len(self.records)))[:limit]
            return
        captions = column_list(cfg.caption_columns)
        self.anchor, self.label = cfg.anchor_column, cfg.label_column
        labelled = bool(self.label)  # the positive is the class description, not a column
        self.positive = captions[0] if captions and captions[0] != cfg.anchor_column and not labelled else None
        self.negatives = column_list(cfg.neg_caption_columns)
        wanted = [self.anchor, *([self.positive] if self.positive else []), *self.negatives]
        wanted += [self.label] if labelled else []
        if target.startswith("hf:"):
            self.path, self.table, split_by_hash, split = _hf_table(target[3:], split, cfg, wanted)
        else:
            self.path, self.table = open_table(Path(target), None, wanted)
        self.records = [None] * len(self.table.lines)
        rows = list(range(len(self.table.lines)))
        if split_by_hash:
            anchors = self.table.columns[self.anchor]
            rows = [
                r for r in rows if split_of(str(anchors[r]), cfg.seed, cfg.val_fraction, cfg.test_fraction) == split
            ]
        self.rows = list(rows)[:limit]
        self._class_ids: dict[object, int] = {}
        if labelled:
            self.classnames, self._class_ids = class_names(self.table.columns[self.label])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> TextPairRecord:
        row = self.rows[index]
        record = self.records[row]
        if record is None:
            where = f"{self.path.name} line {self.table.lines[row]}"
            try:
                record = record_of(pair_of_row(self.table, row, where, self.anchor, self.positive, self.negatives))
                if self.label:
                    self._describe(record, row, where)
            except DataError as err:
                if self.cfg.on_error == "raise":
                    raise
                record = TextPairRecord(image=where, captions=[], key=where, problem=Problem.of(err))
            self.records[row] = record
        return record

    def _describe(self, record: TextPairRecord, row: int, where: str) -> None:
        """A labelled row: its class id, and ``data.class_template`` filled with the class name as the positive."""
        value = self.table.columns[self.label][row]
        key = value if isinstance(value, int) and not isinstance(value, bool) else str(value).strip()
        if value is None or value is MISSING or key == "" or key not in self._class_ids:
            raise DataError("missing_column", where, f"column {self.label!r} holds no class label")
        record.label = self._class_ids[key]
        record.captions = [self.cfg.class_template.format(self.classnames[record.label])]

    def zeroshot_tasks(self) -> list[ZeroShotTask]:
        return []
