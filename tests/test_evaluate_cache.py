"""The feature cache: each model embeds each image set and each string once, across runs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from contrastkit.data.records import Record, ZeroShotTask
from contrastkit.evaluate.cache import FeatureCache, TextStore, image_identity, records_key
from contrastkit.evaluate.suite import EvalRequest, run_suite
from contrastkit.models.loaded import LoadedModel

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


class CountingEmbedder:
    """Image: its colour; text: colour words; counts everything it embeds."""

    precision = "fp32"

    def __init__(self):
        self.images = 0
        self.texts: list[str] = []

    def embed_images(self, images):
        self.images += len(images)
        rows = torch.tensor([im.getpixel((0, 0)) for im in images], dtype=torch.float32) + 1.0
        return F.normalize(rows, dim=-1)

    def embed_texts(self, texts):
        self.texts += list(texts)
        rows = torch.full((len(texts), 3), 0.05)
        for i, t in enumerate(texts):
            for j, name in enumerate(COLOURS):
                if name in t:
                    rows[i, j] += 1.0
        return F.normalize(rows, dim=-1)


class Data:
    name = "colours"

    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def zeroshot_tasks(self):
        labels = [list(COLOURS).index(r.key.split("-")[0]) for r in self.records]
        return [ZeroShotTask("colour", list(COLOURS), ["a {} thing"], list(range(len(self.records))), labels)]


def _files(folder, n=9):
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        name = list(COLOURS)[i % 3]
        path = folder / f"{i}.png"
        Image.new("RGB", (4, 4), COLOURS[name]).save(path)
        records.append(Record(image=path, captions=[f"a {name} square {i}", f"{name}"], key=f"{name}-{i}"))
    return records


def _model(embedder, weights="w1"):
    return LoadedModel(embedder, "test", "counting", None, logit_scale=10.0, weights_hash=lambda cache: weights)


def _strip(results):
    return {k: v for k, v in results.items() if k not in ("feature_cache", "eval_seconds")}


def test_second_run_reads_every_feature_back(tmp_path):
    records = _files(tmp_path / "img")
    cache = FeatureCache(tmp_path / "cache")
    first = CountingEmbedder()
    req = EvalRequest(tasks=["zeroshot", "retrieval", "geometry"], dataset=Data(records), batch_size=4, progress=False)
    out1 = run_suite(_model(first), req, cache=cache)
    assert first.images == 9 and len(first.texts) == len(set(first.texts)) > 0
    assert out1.results["feature_cache"]["image_sets_computed"] == 1

    again = CountingEmbedder()
    out2 = run_suite(_model(again), req, cache=FeatureCache(tmp_path / "cache"))
    assert again.images == 0 and again.texts == []  # nothing recomputed
    assert out2.results["feature_cache"]["image_sets_from_cache"] == 1
    assert out2.results["feature_cache"]["texts_from_cache"] == len(first.texts)
    assert json.dumps(_strip(out1.results), sort_keys=True) == json.dumps(_strip(out2.results), sort_keys=True)

    # New strings only: a template set not seen before embeds just its prompts.
    more = CountingEmbedder()
    req2 = EvalRequest(tasks=["zeroshot"], dataset=Data(records), templates=["the colour {}"], progress=False)
    run_suite(_model(more), req2, cache=FeatureCache(tmp_path / "cache"))
    assert more.images == 0 and sorted(more.texts) == sorted(f"the colour {c}" for c in COLOURS)


def test_other_weights_or_changed_images_are_new_keys(tmp_path):
    records = _files(tmp_path / "img")
    cache_dir = tmp_path / "cache"
    req = EvalRequest(tasks=["retrieval"], dataset=Data(records), progress=False)
    run_suite(_model(CountingEmbedder()), req, cache=FeatureCache(cache_dir))

    other = CountingEmbedder()
    run_suite(_model(other, weights="w2"), req, cache=FeatureCache(cache_dir))
    assert other.images == 9 and other.texts  # another model: everything embedded again

    Image.new("RGB", (5, 5), (255, 0, 0)).save(records[4].image)  # one file replaced (size and mtime change)
    changed = CountingEmbedder()
    run_suite(_model(changed), req, cache=FeatureCache(cache_dir))
    assert changed.images == 9 and changed.texts == []  # the image set is new; the strings are not


def test_damaged_entry_is_recomputed_not_fatal(tmp_path):
    records = _files(tmp_path / "img", n=3)
    cache = FeatureCache(tmp_path / "cache")
    req = EvalRequest(tasks=["retrieval"], dataset=Data(records), progress=False)
    run_suite(_model(CountingEmbedder()), req, cache=cache)
    (entry,) = list((tmp_path / "cache").rglob("images/*.safetensors"))
    entry.write_bytes(b"not a safetensors file")
    again = CountingEmbedder()
    out = run_suite(_model(again), req, cache=FeatureCache(tmp_path / "cache"))
    assert again.images == 3 and out.results["retrieval"]["text_retrieval_recall@1"] > 0


def test_text_store_round_trip_and_partial_hits(tmp_path):
    store = TextStore(tmp_path / "texts")
    emb = F.normalize(torch.randn(3, 4), dim=-1)
    store.add(["a", "b", "c"], emb)
    fresh = TextStore(tmp_path / "texts")  # reads the shards from disk
    got = fresh.lookup(["c", "x", "a"])
    assert set(got) == {"a", "c"} and torch.equal(got["a"], emb[0]) and torch.equal(got["c"], emb[2])
    (tmp_path / "texts" / "junk.json").write_text("[")  # a broken shard index is ignored
    assert len(TextStore(tmp_path / "texts")) == 3
    with pytest.raises(ValueError, match="2 strings but 3 rows"):
        store.add(["p", "q"], emb)


def test_data_keys_follow_image_content(tmp_path):
    red, red2, blue = (Image.new("RGB", (3, 3), c) for c in ((255, 0, 0), (255, 0, 0), (0, 0, 255)))
    spec = {"kind": "images"}
    assert records_key([image_identity(red)], spec) == records_key([image_identity(red2)], spec)
    assert records_key([image_identity(red)], spec) != records_key([image_identity(blue)], spec)
    assert records_key([image_identity(red)], spec) != records_key([image_identity(red), image_identity(red)], spec)
    path = tmp_path / "x.png"
    red.save(path)
    assert image_identity(path) != image_identity(path, box=(0, 0, 2, 2))  # crops are other images


def test_file_hash_is_memoised_and_follows_changes(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    first = cache.file_hash(f)
    memo = json.loads((tmp_path / "cache" / "file_hashes.json").read_text())
    assert memo[str(f.resolve())]["sha256"] == first
    assert FeatureCache(tmp_path / "cache").file_hash(f) == first
    f.write_bytes(b"abcd")
    assert cache.file_hash(f) != first


def test_default_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    from contrastkit.evaluate.cache import default_cache_dir

    monkeypatch.setenv("CONTRASTKIT_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    assert FeatureCache().root == tmp_path / "here"
