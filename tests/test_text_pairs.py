"""Text-pair and STS files: every format, and bad input named with the file, line and column."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contrastkit.data.problems import DataError
from contrastkit.data.text_pairs import TextPair, read_scored_pairs, read_text_pairs


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pairs_and_triplets_from_jsonl_csv_and_parquet(tmp_path):
    rows = [
        {"anchor": "a red circle", "positive": "a photo of a red circle", "negative": "a blue circle"},
        {"anchor": "a star", "positive": "there is a star", "negative": ""},
    ]
    jsonl = write_jsonl(tmp_path / "p.jsonl", rows)
    (tmp_path / "p.csv").write_text(
        "anchor,positive,negative\n" + "".join(f"{r['anchor']},{r['positive']},{r['negative']}\n" for r in rows)
    )
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    expected = [
        TextPair("a red circle", "a photo of a red circle", ("a blue circle",)),
        TextPair("a star", "there is a star", ()),
    ]
    for path in (jsonl, tmp_path / "p.csv", tmp_path / "p.parquet"):
        got = read_text_pairs(path, negatives=["negative"]).rows
        assert [(p.anchor, p.positive, p.negatives) for p in got] == [
            (e.anchor, e.positive, e.negatives) for e in expected
        ]
    assert read_text_pairs(jsonl).rows[0].key == "p.jsonl line 1"


def test_single_sentences_are_their_own_positive(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": "one"}, {"text": "two"}])
    got = read_text_pairs(path, anchor="text", positive=None).rows
    assert [(p.anchor, p.positive) for p in got] == [("one", "one"), ("two", "two")]


def test_a_missing_positive_column_is_named_with_the_columns_present(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"anchor": "a", "positve": "b"}])
    with pytest.raises(ValueError, match=r"no column 'positive' \(did you mean 'positve'\?\); it has anchor, positve"):
        read_text_pairs(path)


def test_empty_texts_are_named_with_the_line_or_skipped_and_counted(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [{"anchor": "a", "positive": "b"}, {"anchor": "  ", "positive": "c"}, {"anchor": "d", "positive": None}],
    )
    with pytest.raises(DataError, match=r"empty_caption\] at p.jsonl line 2: column 'anchor' is empty"):
        read_text_pairs(path)
    got = read_text_pairs(path, on_error="skip")
    assert [p.anchor for p in got.rows] == ["a"]
    assert got.skipped == {"empty_caption": 2}


def test_a_row_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"anchor": "a", "positive": "b"}\n{oops\n')
    with pytest.raises(DataError, match=r"invalid_row\] at p.jsonl line 2"):
        read_text_pairs(path)


def test_sts_files_with_a_header_and_their_bad_scores(tmp_path):
    path = tmp_path / "sts.tsv"
    path.write_text("sentence1\tsentence2\tscore\na cat\ta dog\t1.5\na sun\tthe sun\t4.8\n")
    got = read_scored_pairs(path).rows
    assert [(p.text_a, p.text_b, p.score) for p in got] == [("a cat", "a dog", 1.5), ("a sun", "the sun", 4.8)]
    path.write_text("sentence1\tsentence2\tscore\na cat\ta dog\thigh\n")
    with pytest.raises(DataError, match=r"at sts.tsv line 2: score column 'score' holds 'high', not a number"):
        read_scored_pairs(path)
    with pytest.raises(ValueError, match=r"no column 'similarity'.*it has sentence1, sentence2, score"):
        read_scored_pairs(path, columns=("sentence1", "sentence2", "similarity"))


def test_unknown_suffix_and_missing_file_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl: file does not exist"):
        read_text_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(ValueError, match="cannot tell the file kind from '.txt'"):
        read_text_pairs(tmp_path / "p.txt")


def test_text_pairs_from_a_hugging_face_dataset_with_its_own_splits(tmp_path):
    import datasets

    from contrastkit.config import DataConfig
    from contrastkit.data.sources import open_source

    rows = {"q": ["a red circle", "a star"], "d": ["a photo of a red circle", "there is a star"]}
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows),
            "test": datasets.Dataset.from_dict({k: v[:1] for k, v in rows.items()}),
        }
    ).save_to_disk(str(tmp_path / "ds"))
    cfg = DataConfig(anchor_column="q", caption_columns="d")
    train = open_source(f"pairs:hf:{tmp_path / 'ds'}", "train", cfg)
    test = open_source(f"pairs:hf:{tmp_path / 'ds'}", "test", cfg)
    assert [(r.anchor, r.captions) for r in (train[0], train[1])] == [
        ("a red circle", ["a photo of a red circle"]),
        ("a star", ["there is a star"]),
    ]
    assert len(test) == 1
    with pytest.raises(ValueError, match=r"no column 'anchor'; it has q, d"):
        open_source(f"pairs:hf:{tmp_path / 'ds'}", "train", DataConfig(caption_columns="d"))


def test_data_check_lists_a_pairs_files_bad_rows(tmp_path):
    from contrastkit.config import DataConfig
    from contrastkit.data.check import check_source
    from contrastkit.data.sources import open_source

    path = tmp_path / "p.jsonl"
    path.write_text('{"anchor": "a", "positive": "b"}\n{"anchor": "", "positive": "c"}\n{oops\n')
    source = open_source(f"pairs:{path}", "train", DataConfig(caption_columns="positive", on_error="skip"))
    report = check_source(source, progress=False)
    assert (report.records, report.good) == (3, 1)
    assert report.counts == {"empty_caption": 1, "invalid_row": 1}
    assert report.examples["empty_caption"][0].where == "p.jsonl line 2"
