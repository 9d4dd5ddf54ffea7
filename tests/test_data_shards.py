"""WebDataset shards: streaming across ranks and workers, resampling, resume, conversion, training."""

import json
from collections import Counter

import pytest
import torch

import toy_data as toy
from contrastkit.config import DataConfig, load_config
from contrastkit.data.convert import CountMismatch, convert, count_samples
from contrastkit.data.pipeline import make_train_loader
from contrastkit.data.problems import stable_id
from contrastkit.data.sources import open_source
from contrastkit.data.training_set import TrainingSet
from contrastkit.engine.trainer import train
from helpers import TINY_TRAINING

TINY = TINY_TRAINING


pytestmark = pytest.mark.usefixtures("no_plots")


def tiny(*extra):
    return load_config("configs/demo.yaml", TINY + list(extra))


def pixels(img):
    return torch.zeros(3, 4, 4)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    paths = toy.write_shards(root, 50, 5)  # 10 samples per shard
    return root, paths


def spec(root, n=5):
    return f"wds:{root}/shard-{{00000..{n - 1:05d}}}.tar"


def sample_ids(root):
    ds = open_source(spec(root), "train", DataConfig())
    return {stable_id(r.key): r.key for r in ds.iter_records()}


def test_shards_read_in_the_img2dataset_layout(shards):
    root, _ = shards
    ds = open_source(spec(root), "train", DataConfig())
    assert ds.streaming and len(ds) == 50  # the random-access window holds the whole (small) set
    _image, fields = toy.toy_item(7)
    rec = ds[7]
    assert rec.key == "shard-00000.tar sample 000000007"
    assert rec.captions == fields["captions"]  # the .json's captions list holds every caption
    plain = open_source(f"wds:{toy.write_shards(root / 'plain', 3, 1, with_json=False)[0]}", "train", DataConfig())
    assert plain[1].captions == [toy.toy_item(1)[1]["caption"]] and plain[1].label is None  # .txt only
    assert rec.neg_captions == fields["neg_captions"] and rec.tags == fields["tags"]
    assert rec.rewrites == fields["rewrites"] and rec.label == fields["label"]
    assert rec.load_image().size == (32, 32)
    # without a .txt the json's caption fields are used
    toy.write_shards(root / "jsononly", 4, 1, with_json=True)
    import tarfile

    src = root / "jsononly" / "shard-00000.tar"
    with tarfile.open(src) as tf, tarfile.open(root / "jsononly" / "notxt.tar", "w") as out:
        for m in tf.getmembers():
            if not m.name.endswith(".txt"):
                out.addfile(m, tf.extractfile(m))
    (r0,) = [
        r
        for r in open_source(
            f"wds:{root / 'jsononly' / 'notxt.tar'}", "train", DataConfig(caption_columns="title")
        ).iter_records()
    ][:1]
    assert r0.captions == toy.toy_item(0)[1]["captions"]
    import webdataset as wds

    with wds.TarWriter(str(root / "titled.tar")) as w:
        w.write(
            {"__key__": "k1", "png": toy.encode(toy.toy_item(0)[0]), "json": json.dumps({"title": "a title"}).encode()}
        )
    (titled,) = open_source(f"wds:{root / 'titled.tar'}", "train", DataConfig(caption_columns="title")).iter_records()
    assert titled.captions == ["a title"]  # no .txt and no captions list: the configured caption fields


def test_two_ranks_two_workers_five_shards_every_sample_once_per_epoch(shards):
    root, _ = shards
    ids = sample_ids(root)
    assert len(ids) == 50
    per_epoch = Counter()
    later = Counter()
    for rank in (0, 1):
        tset = TrainingSet(open_source(spec(root), "train", DataConfig()), pixels, seed=3)
        # global batch 4 -> 2 rows per rank; 24 batches per rank = 12 per worker: every reader (at most
        # 2 shards = 20 samples) finishes epoch 0
        for batch in make_train_loader(tset, 4, 24, seed=3, workers=2, rank=rank, world_size=2):
            assert len(batch.captions) == 2
            for e, i in zip(batch.epoch.tolist(), batch.index.tolist()):
                (per_epoch if e == 0 else later)[ids[i]] += 1
    assert set(per_epoch) == set(ids.values())  # every sample in epoch 0 ...
    assert set(per_epoch.values()) == {1}  # ... exactly once over 2 ranks x 2 workers
    assert later  # the readers went on into epoch 1


def test_epochs_reshuffle_and_the_stream_is_seeded(shards):
    root, _ = shards
    tset = TrainingSet(open_source(spec(root), "train", DataConfig()), pixels, seed=0)
    run = lambda seed: [b.index.tolist() for b in make_train_loader(tset, 10, 10, seed=seed)]  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert a == b and a != c
    first, second = [i for b in a[:5] for i in b], [i for b in a[5:] for i in b]
    assert sorted(first) == sorted(second) and first != second  # same samples, new order


def test_resume_fast_forwards_to_the_same_batches(shards):
    root, _ = shards
    tset = TrainingSet(open_source(spec(root), "train", DataConfig()), pixels, seed=0)
    straight = [b.index.tolist() for b in make_train_loader(tset, 4, 9, seed=0, workers=2)]
    resumed = [b.index.tolist() for b in make_train_loader(tset, 4, 9, seed=0, start_step=5, workers=2)]
    assert resumed == straight[5:]


def test_resampling_is_an_endless_seeded_draw_with_replacement(shards):
    root, _ = shards
    ds = open_source(spec(root), "train", DataConfig(resample=True))
    tset = TrainingSet(ds, pixels, seed=0)
    batches = [b.index.tolist() for b in make_train_loader(tset, 10, 20, seed=0)]  # 200 rows from 50 samples
    counts = Counter(i for b in batches for i in b)
    assert sum(counts.values()) == 200 and set(counts) <= set(sample_ids(root))
    assert len(set(counts.values())) > 1  # shards drawn with replacement: some more often than others
    assert batches == [b.index.tolist() for b in make_train_loader(tset, 10, 20, seed=0)]


def test_convert_any_source_to_shards_with_count_check_and_train_on_them(tmp_path):
    toy.write_folder(tmp_path / "imgs", 8)
    cfg = DataConfig(on_error="skip", test_fraction=0.25)
    results = convert(
        f"folder:{tmp_path / 'imgs'}", tmp_path / "wds", cfg, ["train", "test"], shard_size=5, progress=False
    )
    assert [r.written for r in results] == [r.read_back for r in results]
    assert sum(r.written for r in results) == 24 and len(results[0].shards) >= 3
    info = json.loads((tmp_path / "wds" / "dataset.json").read_text())
    assert info["classnames"] == ["blue", "green", "red"] and info["splits"]["train"]["count"] == results[0].written
    back = open_source(f"wds:{tmp_path / 'wds'}", "test", DataConfig(eval_size=100))
    assert len(back) == results[1].written
    assert back.zeroshot_tasks()[0].classnames == ["blue", "green", "red"]
    assert back[0].captions[0].startswith("a photo of a ")
    report = train(tiny(f"data.source=wds:{tmp_path / 'wds'}", "data.workers=2"), tmp_path / "run")
    assert "class" in report["zeroshot"] and "text_retrieval_recall@1" in report["retrieval"]
    assert report["n_images"] == results[1].written


def test_count_check_catches_a_short_shard(tmp_path):
    toy.write_shards(tmp_path, 10, 1)
    assert count_samples([str(tmp_path / "shard-00000.tar")]) == 10
    path = tmp_path / "shard-00000.tar"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(CountMismatch, match="shard-00000.tar"):
        count_samples([str(path)])


def test_convert_manifest_keeps_negatives_tags_rewrites(tmp_path):
    rows = toy.manifest_rows(toy.write_images(tmp_path, 6))
    toy.write_manifest(tmp_path / "m.jsonl", rows)
    cfg = DataConfig(neg_caption_columns="hard_swap", tag_column="tags", rewrite_column="rewrites")
    (result,) = convert(f"jsonl:{tmp_path / 'm.jsonl'}", tmp_path / "out", cfg, progress=False)
    assert result.written == result.read_back == 6
    rec = open_source(f"wds:{tmp_path / 'out'}", "train", DataConfig())[2]
    assert rec.neg_captions == {"hard_swap": rows[2]["hard_swap"]} and rec.tags == rows[2]["tags"]
    assert rec.rewrites == rows[2]["rewrites"] and rec.blob[:4] == b"\x89PNG"  # original bytes, not re-encoded


def test_hash_split_of_a_stream_is_disjoint(shards):
    root, _ = shards
    cfg = DataConfig(test_fraction=0.3, eval_size=100)
    train_keys = {r.key for r in open_source(spec(root), "train", cfg).iter_records()}
    test = open_source(spec(root), "test", cfg)
    test_keys = {test[i].key for i in range(len(test))}
    assert train_keys and test_keys and not train_keys & test_keys and len(train_keys | test_keys) == 50


def test_fewer_shards_than_readers_is_an_error_unless_resampling(shards):
    root, _ = shards
    tset = TrainingSet(open_source(spec(root, 3), "train", DataConfig()), pixels, seed=0)
    with pytest.raises(ValueError, match="3 shards cannot feed 4 readers"):
        make_train_loader(tset, 4, 3, seed=0, workers=2, rank=1, world_size=2)
    batches = list(make_train_loader(tset, 4, 3, seed=0, workers=2, rank=1, world_size=2, resample=True))
    assert [len(b.captions) for b in batches] == [2, 2, 2]
