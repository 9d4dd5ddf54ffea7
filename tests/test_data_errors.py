"""Bad input: one of each kind injected into a manifest and a shard set; raise names it, skip counts it."""

import json
import tarfile
from collections import Counter

import pytest
import torch

import toy_data as toy
from contrastkit.config import DataConfig, load_config
from contrastkit.data.check import check_source
from contrastkit.data.pipeline import make_train_loader
from contrastkit.data.problems import DataError, stable_id
from contrastkit.data.sources import open_source
from contrastkit.data.training_set import TrainingSet
from contrastkit.engine.trainer import train
from helpers import TINY_TRAINING

TINY = TINY_TRAINING
LONG = " ".join(["a very long caption about a disc"] * 8)  # 56 words: over any tiny context
MANIFEST_BAD = {
    "missing_file",
    "unreadable_image",
    "truncated_image",
    "empty_image",
    "empty_caption",
    "invalid_utf8",
    "missing_column",
}


pytestmark = pytest.mark.usefixtures("no_plots")


def tiny(*extra):
    return load_config("configs/demo.yaml", TINY + list(extra))


def pixels(img):
    return torch.zeros(3, 8, 8)


# ---------------------------------------------------------------- manifest
def write_bad_manifest(root, good=24):
    """JSONL with ``good`` good rows (one with an over-long caption) and one row per bad kind.

    Returns the manifest path and {reason: line number}."""
    items = toy.write_images(root, good + 4)
    lines = [json.dumps({"image": rel, "caption": f["caption"]}).encode() for rel, f in items[:good]]
    lines[5] = json.dumps({"image": items[5][0], "caption": LONG}).encode()
    (root / "images" / "garbage.png").write_bytes(b"this is not an image at all")
    (root / "images" / "empty.png").write_bytes(b"")
    cut = root / "images" / "cut.jpg"
    cut.write_bytes(toy.encode(toy.toy_item(99)[0], "jpg")[:600])
    bad = {
        "missing_file": json.dumps({"image": "images/nope.png", "caption": "a red disc on blue"}).encode(),
        "unreadable_image": json.dumps({"image": "images/garbage.png", "caption": "a red disc on blue"}).encode(),
        "truncated_image": json.dumps({"image": "images/cut.jpg", "caption": "a red disc on blue"}).encode(),
        "empty_image": json.dumps({"image": "images/empty.png", "caption": "a red disc on blue"}).encode(),
        "empty_caption": json.dumps({"image": items[good][0], "caption": "   "}).encode(),
        "invalid_utf8": b'{"image": "' + items[good + 1][0].encode() + b'", "caption": "caf\xe9 \xff disc"}',
        "missing_column": json.dumps({"image": items[good + 2][0], "captoin": "misspelled key"}).encode(),
    }
    where = {}
    # spread the bad rows between good ones
    out = []
    bad_items = list(bad.items())
    spacing = max(1, good // (len(bad_items) + 1))
    for i, line in enumerate(lines):
        out.append(line)
        if (i + 1) % spacing == 0 and bad_items:
            reason, bad_line = bad_items.pop(0)
            out.append(bad_line)
            where[reason] = len(out)
    path = root / "bad.jsonl"
    path.write_bytes(b"\n".join(out) + b"\n")
    return path, where


@pytest.fixture(scope="module")
def bad_manifest(tmp_path_factory):
    return write_bad_manifest(tmp_path_factory.mktemp("badm"))


def test_check_lists_every_bad_manifest_row_by_reason(bad_manifest):
    path, where = bad_manifest
    report = check_source(
        open_source(f"jsonl:{path}", "train", DataConfig(on_error="skip")), context_length=20, progress=False
    )
    assert dict(report.counts) == {**{r: 1 for r in MANIFEST_BAD}, "caption_too_long": 1}
    assert report.good == 24
    for reason, line in where.items():
        assert report.examples[reason][0].where == f"bad.jsonl line {line}"
    table = report.table()
    for reason in MANIFEST_BAD:
        assert reason in table
    assert "images/nope.png" in table


@pytest.mark.parametrize("reason", sorted(MANIFEST_BAD))
def test_raise_mode_stops_naming_the_row_and_the_problem(tmp_path, reason):
    path, where = write_bad_manifest(tmp_path, good=8)
    lines = path.read_bytes().splitlines()
    keep = [ln for i, ln in enumerate(lines, start=1) if i not in where.values() or i == where[reason]]
    path.write_bytes(b"\n".join(keep) + b"\n")
    line = keep.index(lines[where[reason] - 1]) + 1
    ds = open_source(f"jsonl:{path}", "train", DataConfig())
    tset = TrainingSet(ds, pixels, seed=0)
    with pytest.raises(DataError) as err:
        for _ in make_train_loader(tset, len(keep), 1, seed=0):  # one batch: every row
            pass
    assert err.value.reason == reason
    assert f"bad.jsonl line {line}" in str(err.value)


def test_raise_mode_stops_training_with_the_record_named(bad_manifest, tmp_path):
    path, _where = bad_manifest
    with pytest.raises(DataError, match=r"bad\.jsonl line \d+"):
        train(tiny(f"data.source=jsonl:{path}", "train.steps=4"), tmp_path)


def usable(record):
    if record.problem is not None:
        return False
    try:
        record.load_image()
    except DataError:
        return False
    return True


def test_skip_mode_counts_each_reason_and_sees_every_good_row_once_per_epoch(bad_manifest, tmp_path):
    path, _ = bad_manifest
    ds = open_source(f"jsonl:{path}", "train", DataConfig(on_error="skip"))
    assert len(ds) == 31
    good = {i for i in range(len(ds)) if usable(ds[i])}
    assert len(good) == 24
    tset = TrainingSet(ds, pixels, seed=0)
    # 3 batches of 8 rows per epoch; the 7 rows left over by the seeded permutation wait for the next one
    drawn = {e: set(torch.randperm(31, generator=torch.Generator().manual_seed(e)).tolist()[:24]) for e in (0, 1)}
    seen = {0: Counter(), 1: Counter()}
    skipped = Counter()
    for batch in make_train_loader(tset, 8, 6, seed=0, workers=2):
        assert len(batch.captions) + sum(batch.skipped.values()) == 8
        for e, i in zip(batch.epoch.tolist(), batch.index.tolist()):
            seen[e][i] += 1
        skipped.update(batch.skipped)
    for e in (0, 1):
        assert set(seen[e].values()) == {1}  # never twice in an epoch
        assert set(seen[e]) == drawn[e] & good  # every good row the epoch drew
    assert sum(skipped.values()) == sum(len(drawn[e] - good) for e in (0, 1))

    # one batch holding every row = one whole epoch: the counts by reason equal the injected ones
    report = train(
        tiny(f"data.source=jsonl:{path}", "data.on_error=skip", "train.batch_size=31", "train.steps=1"), tmp_path
    )
    assert report["training_data"]["skipped_records"] == {r: 1 for r in MANIFEST_BAD}
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["training_data"]["skipped_records"] == {r: 1 for r in MANIFEST_BAD}
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["data_skipped"] == {r: 1 for r in MANIFEST_BAD}
    assert report["n_images"] == 16  # evaluation skipped the bad rows too


def test_csv_with_bad_rows_and_invalid_utf8(tmp_path):
    items = toy.write_images(tmp_path, 10)
    (tmp_path / "images" / "empty.png").write_bytes(b"")
    body = "image,caption\n" + "".join(f"{rel},{f['caption']}\n" for rel, f in items[:8])
    raw = body.encode() + b"images/00008.png,bad \xff bytes\nimages/empty.png,a disc\nimages/00009.png,\n"
    (tmp_path / "m.csv").write_bytes(raw)
    ds = open_source(f"csv:{tmp_path / 'm.csv'}", "train", DataConfig(on_error="skip"))
    report = check_source(ds, progress=False)
    assert dict(report.counts) == {"invalid_utf8": 1, "empty_image": 1, "empty_caption": 1}
    assert report.examples["invalid_utf8"][0].where == "m.csv line 10"
    with pytest.raises(DataError, match="m.csv line 10"):
        open_source(f"csv:{tmp_path / 'm.csv'}", "train", DataConfig())[8]


# ---------------------------------------------------------------- shards
SHARD_BAD = {
    "missing_image",
    "unreadable_image",
    "truncated_image",
    "empty_image",
    "empty_caption",
    "invalid_utf8",
    "invalid_row",
    "truncated_shard",
}


def jpg(i):
    return toy.encode(toy.toy_item(i)[0], "jpg")


def bad_members(reason):
    return {
        "missing_image": {"txt": b"a disc"},
        "unreadable_image": {"jpg": b"garbage bytes", "txt": b"a disc"},
        "truncated_image": {"jpg": jpg(500)[:500], "txt": b"a disc"},
        "empty_image": {"jpg": b"", "txt": b"a disc"},
        "empty_caption": {"jpg": jpg(501), "txt": b"  \n"},
        "invalid_utf8": {"jpg": jpg(502), "txt": b"caf\xe9 \xff"},
        "invalid_row": {"jpg": jpg(503), "json": b"{not json"},
    }[reason]


def truncate_in_sample(path, index):
    """Cut ``path`` in the middle of the image of its ``index``-th sample (keys sorted as written)."""
    with tarfile.open(path) as tf:
        images = [m for m in tf.getmembers() if m.name.endswith(".jpg")]
    member = images[index]
    path.write_bytes(path.read_bytes()[: member.offset_data + member.size // 2])


def write_bad_shards(root, reasons=SHARD_BAD, per_shard=8, n_shards=5, seed=0):
    """``n_shards`` shards of good samples with one bad sample per reason in the middle of shards 1-3, and
    (with truncated_shard) the shard read first in epoch 0 cut inside its 5th sample.

    Returns (shard paths, the truncated shard or None, keys of the good samples that survive)."""
    import random

    import webdataset as wds

    root.mkdir(parents=True, exist_ok=True)
    pending = [r for r in sorted(reasons) if r != "truncated_shard"]
    paths = [root / f"s-{s:03d}.tar" for s in range(n_shards)]
    order = [str(p) for p in paths]
    random.Random(f"{seed}/shards/0").shuffle(order)  # the stream's shard order in epoch 0
    victim = next(p for p in paths if str(p) == order[0]) if "truncated_shard" in reasons else None
    hosts = [p for p in paths if p != victim][:4]  # shards that get the bad samples
    good = []
    for s, path in enumerate(paths):
        with wds.TarWriter(str(path)) as w:
            for j in range(per_shard):
                key = f"{s:03d}{j:04d}"
                w.write({"__key__": key, "jpg": jpg(s * 100 + j), "txt": f"sample {key}".encode()})
                good.append(key)
                if path in hosts and j in (1, per_shard - 2) and pending:
                    reason = pending.pop(0)
                    w.write({"__key__": f"bad-{reason}", **bad_members(reason)})
    assert not pending
    if victim is not None:
        cut = min(4, per_shard - 1)
        truncate_in_sample(victim, cut)
        good = [k for k in good if not (k[:3] == victim.stem[2:] and int(k[3:]) >= cut)]
    return paths, victim, good


@pytest.fixture(scope="module")
def bad_shards(tmp_path_factory):
    return write_bad_shards(tmp_path_factory.mktemp("bads"))


def spec_of(paths):
    return f"wds:{paths[0].parent}/s-{{000..{len(paths) - 1:03d}}}.tar"


def test_check_lists_every_bad_sample_and_the_truncated_shard(bad_shards):
    paths, victim, good = bad_shards
    report = check_source(open_source(spec_of(paths), "train", DataConfig(on_error="skip")), progress=False)
    assert dict(report.counts) == {r: 1 for r in SHARD_BAD}
    assert report.good == len(good) == 36
    assert victim.name in report.examples["truncated_shard"][0].where
    assert report.examples["missing_image"][0].where.endswith("sample bad-missing_image")


@pytest.mark.parametrize("reason", sorted(SHARD_BAD))
def test_shard_raise_mode_stops_naming_the_shard_and_sample(tmp_path, reason):
    paths, victim, _ = write_bad_shards(tmp_path, {reason}, per_shard=4)
    tset = TrainingSet(open_source(spec_of(paths), "train", DataConfig()), pixels, seed=0)
    with pytest.raises(DataError) as err:
        for _ in make_train_loader(tset, 4, 10, seed=0, workers=1):
            pass
    assert err.value.reason == reason
    if reason == "truncated_shard":
        assert f"shard {victim}" in str(err.value)
    else:
        assert f"sample bad-{reason}" in str(err.value) and ".tar" in str(err.value)


def test_shard_skip_mode_counts_each_reason_once_per_epoch_and_sees_good_samples_once(bad_shards, tmp_path):
    paths, _, good = bad_shards
    tset = TrainingSet(open_source(spec_of(paths), "train", DataConfig(on_error="skip")), pixels, seed=0)
    ids = {stable_id(f"s-{k[:3]}.tar sample {k}"): k for k in good}
    per_epoch = len(good) // 4  # one reader, batches of 4: epochs end on a batch boundary
    seen = {0: Counter(), 1: Counter()}
    skipped = [Counter(), Counter()]
    for step, batch in enumerate(make_train_loader(tset, 4, 2 * per_epoch, seed=0)):
        assert len(batch.captions) == 4  # streamed batches stay full
        for e, i in zip(batch.epoch.tolist(), batch.index.tolist()):
            seen[e][ids[i]] += 1
        skipped[step // per_epoch].update(batch.skipped)
    for e in (0, 1):
        assert sorted(seen[e]) == sorted(good) and set(seen[e].values()) == {1}
        assert dict(skipped[e]) == {r: 1 for r in SHARD_BAD}

    # training over exactly one epoch reports the counts; evaluation reads the first usable samples
    report = train(
        tiny(f"data.source={spec_of(paths)}", "data.on_error=skip", "train.batch_size=4", f"train.steps={per_epoch}"),
        tmp_path,
    )
    assert report["training_data"]["skipped_records"] == {r: 1 for r in SHARD_BAD}
    assert report["n_images"] == 16


def test_truncated_shard_keeps_the_samples_before_the_cut(bad_shards):
    _, victim, _ = bad_shards
    items = list(open_source(f"wds:{victim}", "train", DataConfig(on_error="skip")).iter_records())
    assert [i.key for i in items[:-1]] == [f"{victim.name} sample {victim.stem[2:]}{j:04d}" for j in range(4)]
    assert items[-1].reason == "truncated_shard"


def test_cut_at_a_member_boundary_is_caught_by_the_missing_end_blocks(tmp_path):
    (path,) = toy.write_shards(tmp_path, 6, 1)
    with tarfile.open(path) as tf:
        last = tf.getmembers()[-1]
    path.write_bytes(path.read_bytes()[: last.offset_data + ((last.size + 511) // 512) * 512])
    items = list(open_source(f"wds:{path}", "train", DataConfig(on_error="skip")).iter_records())
    assert sum(hasattr(i, "captions") for i in items) == 6  # every whole sample is kept
    assert items[-1].reason == "truncated_shard"


def test_over_long_caption_is_kept_and_truncated_by_the_tokenizer(bad_manifest):
    from contrastkit.models.tokenizer import HashedWordTokenizer

    path, _ = bad_manifest
    ds = open_source(f"jsonl:{path}", "train", DataConfig(on_error="skip"))
    long_rows = [i for i in range(len(ds)) if ds[i].captions == [LONG]]
    assert len(long_rows) == 1
    sample = TrainingSet(ds, pixels, seed=0).process(ds[long_rows[0]], 0, long_rows[0])
    assert sample.caption == LONG  # kept
    tok = HashedWordTokenizer(context_length=20)
    tok([sample.caption])
    assert tok.truncated == 1


def test_data_error_survives_worker_processes():
    import pickle

    err = DataError("missing_file", "m.csv line 3", "image x.png does not exist")
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason, back.where, str(back)) == (err.reason, err.where, str(err))
