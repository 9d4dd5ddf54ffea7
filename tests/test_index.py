"""contrastkit index: resumable after a kill, appendable, bad records counted, faiss chosen and tuned by size."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from PIL import Image

from contrastkit.cli import main
from contrastkit.config import load_config
from contrastkit.engine.trainer import train
from contrastkit.serve import faiss_index
from contrastkit.serve.index_build import build_index
from contrastkit.serve.index_files import IndexFileError, IndexFiles
from contrastkit.serve.search import Searcher
from helpers import TINY_TRAINING

SHAPES = "synthetic:shapes"
BIG = ["data.eval_size=40"]  # the tiny run's world has 16 test scenes


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("index_run")
    train(load_config("configs/demo.yaml", TINY_TRAINING + ["data.train_size=32"]), root)
    return root


def table(index_dir) -> list[tuple]:
    with sqlite3.connect(index_dir / "items.sqlite") as db:
        return db.execute("SELECT id, key, source, split, caption FROM items ORDER BY id").fetchall()


def test_a_killed_index_run_continues_to_the_same_index_as_an_uninterrupted_one(run, tmp_path, monkeypatch):
    whole = build_index(
        run, SHAPES, tmp_path / "whole", split="test", limit=40, batch_size=8, progress=False, data_overrides=BIG
    )
    assert (whole.added, whole.total, whole.skipped) == (40, 40, 0)

    real_append = IndexFiles.append
    calls = {"n": 0}

    def dies_on_third_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return real_append(self, *args, **kwargs)

    monkeypatch.setattr(IndexFiles, "append", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        build_index(
            run, SHAPES, tmp_path / "killed", split="test", limit=40, batch_size=8, progress=False, data_overrides=BIG
        )
    assert len(table(tmp_path / "killed")) == 16
    # a kill between the vector write and the row commit leaves longer vector files: they are cut back
    with (tmp_path / "killed" / "images.f32").open("ab") as fh:
        fh.write(b"\0" * 4 * 32 * 3)
    monkeypatch.setattr(IndexFiles, "append", real_append)
    again = build_index(
        run, SHAPES, tmp_path / "killed", split="test", limit=40, batch_size=8, progress=False, data_overrides=BIG
    )
    assert (again.added, again.total) == (24, 40)
    assert table(tmp_path / "killed") == table(tmp_path / "whole")
    for name in ("images.f32", "captions.f32"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    a, b = Searcher(tmp_path / "whole"), Searcher(tmp_path / "killed")
    assert [h.id for h in a.by_text("a red circle", 10)] == [h.id for h in b.by_text("a red circle", 10)]


def test_another_source_is_appended_and_the_same_source_is_not_indexed_twice(run, tmp_path):
    build_index(run, SHAPES, tmp_path / "i", split="test", limit=12, progress=False)
    clutter = build_index(run, "synthetic:shapes-clutter", tmp_path / "i", split="test", limit=10, progress=False)
    assert (clutter.added, clutter.total) == (10, 22)
    same = build_index(run, SHAPES, tmp_path / "i", split="test", limit=12, progress=False)
    assert (same.added, same.total) == (0, 22)
    searcher = Searcher(tmp_path / "i")
    assert searcher.sources == [SHAPES, "synthetic:shapes-clutter"]
    assert {h.source for h in searcher.by_text("a cube", 22, source="synthetic:shapes-clutter")} == {
        "synthetic:shapes-clutter"
    }
    assert len(searcher.by_text("a cube", 22, source="synthetic:shapes-clutter")) == 10
    first = table(tmp_path / "i")[0]
    hits = searcher.similar(0, 3)
    assert 0 not in [h.id for h in hits] and first[1].startswith(SHAPES)


def test_unreadable_images_are_skipped_and_counted_with_the_reason(run, tmp_path):
    folder = tmp_path / "photos"
    for name, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), colour).save(folder / name / f"{i}.png")
    (folder / "red" / "broken.png").write_bytes(b"not a png at all")
    summary = build_index(run, f"folder:{folder}", tmp_path / "i", progress=False)
    assert (summary.added, summary.skipped, summary.skipped_total) == (6, 1, 1)
    with sqlite3.connect(tmp_path / "i" / "items.sqlite") as db:
        (reason,) = db.execute("SELECT reason FROM skipped").fetchone()
    assert "broken.png" in reason


def test_large_collections_get_an_ivf_index_tuned_to_the_target_recall():
    assert faiss_index.choose_factory(1000, 64, 1 << 30) == "Flat"
    assert faiss_index.choose_factory(100_000, 512, 4 << 30) == "IVF1024,Flat"
    assert faiss_index.choose_factory(100_000, 512, 100 << 20) == "IVF1024,PQ64"
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 32))
    data = (centres[rng.integers(0, 50, 60_000)] + 0.3 * rng.normal(size=(60_000, 32))).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index, choice = faiss_index.build(data, target_recall=0.95)
    assert choice.factory.startswith("IVF") and choice.nprobe < 1024
    queries = data[rng.choice(len(data), 100, replace=False)] + rng.normal(0, 0.05, (100, 32)).astype(np.float32)
    exact = faiss_index.faiss.IndexFlatIP(32)
    exact.add(data)
    truth = exact.search(queries, 10)[1]
    assert faiss_index.recall_at_k(truth, index.search(queries, 10)[1]) >= 0.93  # fresh queries, near the target


def test_missing_or_damaged_indexes_and_other_models_get_clear_errors(run, tmp_path, capsys):
    with pytest.raises(IndexFileError, match="is not an index"):
        Searcher(tmp_path / "nothing")
    build_index(run, SHAPES, tmp_path / "i", split="test", limit=8, progress=False)
    (tmp_path / "i" / "images.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexFileError, match="images.faiss cannot be read"):
        Searcher(tmp_path / "i")
    other = tmp_path / "other_run"
    train(load_config("configs/demo.yaml", TINY_TRAINING + ["data.train_size=32", "train.seed=1"]), other)
    with pytest.raises(IndexFileError, match="built with the model of .* choose another --out"):
        build_index(other, SHAPES, tmp_path / "i", split="test", limit=8, progress=False)
    assert main(["index", str(tmp_path), "--images", SHAPES, "--out", str(tmp_path / "x")]) == 2
    assert "has no config.json; is it a contrastkit run directory?" in capsys.readouterr().err
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text((run / "config.json").read_text())
    assert main(["index", str(tmp_path / "unfinished"), "--images", SHAPES, "--out", str(tmp_path / "x")]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert main(["index", str(run), "--images", SHAPES, "--out", str(tmp_path / "y"), "--limit", "0"]) == 2
    assert "--limit must be positive" in capsys.readouterr().err
