"""Augmentation recipes: the simclr preset, LaCLIP rewrite sampling, EDA synonyms from a lexicon."""

import json
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

import toy_data as toy
from contrastkit.config import ConfigError, DataConfig, load_config
from contrastkit.data.batch import collate
from contrastkit.data.pipeline import make_train_loader
from contrastkit.data.records import Record
from contrastkit.data.shapes.lexicon import LEXICON
from contrastkit.data.sources import open_source
from contrastkit.data.training_set import TrainingSet, ViewSpec
from contrastkit.data.transforms import IMAGE_PRESETS, TextAugment, image_augment, load_lexicon, seeded
from contrastkit.engine.recipe import load_recipe


def to_tensor(img):
    return torch.from_numpy(np.asarray(img.resize((16, 16)), dtype="float32")).permute(2, 0, 1)


class Listing:
    """A tiny in-memory dataset of records."""

    name = "listing"

    def __init__(self, records, **options):
        self.records = records
        if options:
            from contrastkit.data.sources import DataOptions

            self.data_options = DataOptions(**options)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def zeroshot_tasks(self):
        return []


def test_simclr_preset_is_two_different_strong_views():
    assert "simclr" in IMAGE_PRESETS
    image = toy.toy_item(1, size=64)[0]
    aug = image_augment("simclr", 32)
    a, b = seeded(aug, 1)(image), seeded(aug, 2)(image)
    assert a.size == b.size == (32, 32)
    assert not np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(np.asarray(seeded(aug, 1)(image)), np.asarray(a))  # seeded

    # colour is jittered (strength 1): across seeds the mean colour moves far more than with cl2l_weak
    def spread(preset: str) -> float:
        means = [to_tensor(seeded(image_augment(preset, 32), s)(image)).mean((1, 2)) for s in range(12)]
        return float(torch.stack(means).std(0).mean())

    assert spread("simclr") > 2 * spread("cl2l_weak")
    cfg = load_config("configs/demo.yaml", ["data.views=2", "data.view_image_augment=simclr"])
    assert cfg.data.view_image_augment == "simclr"
    with pytest.raises(ConfigError, match="data.image_augment"):
        load_recipe("configs/demo.yaml", ["data.image_augment=simclear"])


def test_two_simclr_views_per_record_in_the_batch():
    image = toy.toy_item(1, size=48)[0]
    ds = Listing([Record(image, ["a red disc on blue"]) for _ in range(4)])
    tset = TrainingSet(ds, to_tensor, seed=0, views=ViewSpec(2, image_augment("simclr", 32), TextAugment("eda")))
    batch = collate([tset[(0, i)] for i in range(4)])
    assert batch.image_views.shape == (2, 4, 3, 16, 16)
    assert not torch.equal(batch.image_views[0], batch.image_views[1])


def test_rewrite_sampling_draws_uniformly_from_caption_and_rewrites_seeded():
    record = Record(Image.new("RGB", (8, 8)), ["original caption"], rewrites=["rewrite one", "rewrite two"])
    ds = Listing([record] * 3, rewrite_sampling=True)
    tset = TrainingSet(ds, to_tensor, seed=5)
    drawn = Counter(tset.process(record, epoch, 0).caption for epoch in range(600))
    assert set(drawn) == {"original caption", "rewrite one", "rewrite two"}
    assert all(150 < n < 250 for n in drawn.values())  # uniform: 200 each
    assert [tset.process(record, e, 1).caption for e in range(20)] == [
        tset.process(record, e, 1).caption for e in range(20)
    ]
    assert [tset.process(record, e, 1).caption for e in range(20)] != [
        tset.process(record, e, 2).caption for e in range(20)
    ]
    off = TrainingSet(Listing([record]), to_tensor, seed=5)
    assert {off.process(record, e, 0).caption for e in range(50)} == {"original caption"}
    # the flag comes from the DataConfig through the source
    cfg = DataConfig(train_size=8, rewrite_sampling=True)
    shapes = TrainingSet(open_source("synthetic:shapes", "train", cfg), to_tensor, seed=0)
    assert shapes.rewrite_sampling


def test_rewrite_sampling_uses_the_manifest_rewrite_column(tmp_path):
    rows = toy.manifest_rows(toy.write_images(tmp_path, 4))
    toy.write_manifest(tmp_path / "m.csv", rows)
    ds = open_source(f"csv:{tmp_path / 'm.csv'}", "train", DataConfig(rewrite_column="rewrites", rewrite_sampling=True))
    tset = TrainingSet(ds, to_tensor, seed=0)
    captions = {tset[(e, 0)].caption for e in range(40)}
    assert captions == {rows[0]["caption"], *rows[0]["rewrites"]}


def test_eda_synonyms_from_a_user_lexicon_file_and_skipped_counts(tmp_path):
    lexicon = tmp_path / "syn.json"
    lexicon.write_text(json.dumps({"disc": ["circle"], "photo": ["picture"]}))
    assert load_lexicon(str(lexicon)) == {"disc": ["circle"], "photo": ["picture"]}
    aug = TextAugment("eda", load_lexicon(str(lexicon)), drop_prob=0.0)
    outs = {aug("a red disc", random.Random(s)) for s in range(60)}
    assert "a red circle" in outs
    none = TextAugment("eda", {}, drop_prob=0.0)
    for s in range(60):
        none("a red disc", random.Random(s))
    assert none.skipped_synonyms > 10  # about 40% of the draws pick the synonym operation

    # through the pipeline: data.synonyms reaches a view augmentation without a lexicon; counts per row
    record = Record(Image.new("RGB", (8, 8)), ["zzz qqq xxx"])
    for synonyms, expect_skips in (("", True), (str(lexicon), True)):
        ds = Listing([record] * 8, synonyms=synonyms)
        tset = TrainingSet(ds, to_tensor, seed=0, views=ViewSpec(2, None, TextAugment("eda")))
        batch = collate([tset[(0, i)] for i in range(8)])
        assert batch.events["synonym_skipped"].shape == (8,)
        assert (batch.events["synonym_skipped"].sum() > 0) == expect_skips
    record = Record(Image.new("RGB", (8, 8)), ["disc disc"])
    tset = TrainingSet(
        Listing([record] * 8, synonyms=str(lexicon)),
        to_tensor,
        seed=0,
        views=ViewSpec(2, None, TextAugment("eda", drop_prob=0.0)),
    )
    views = [v for i in range(8) for v in tset[(0, i)].text_views]
    assert any("circle" in v for v in views)
    assert int(collate([tset[(0, i)] for i in range(8)]).events["synonym_skipped"].sum()) == 0


def test_packaged_lexicon_and_bad_lexicon_files(tmp_path):
    builtin = load_lexicon("builtin")
    assert builtin == LEXICON and "photo" in builtin
    assert not {"red", "blue", "left", "right", "circle", "square", "small", "large"} & set(builtin)
    with pytest.raises(ValueError, match="data.synonyms: lexicon file"):
        load_lexicon(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text(json.dumps({"a": "not a list"}))
    with pytest.raises(ValueError, match="list of strings"):
        load_lexicon(str(tmp_path / "bad.json"))


def test_stream_training_set_applies_the_same_choices(tmp_path):
    toy.write_shards(tmp_path, 12, 2)
    ds = open_source(
        f"wds:{tmp_path}/shard-{{00000..00001}}.tar",
        "train",
        DataConfig(rewrite_sampling=True, rewrite_column="rewrites"),
    )
    tset = TrainingSet(ds, to_tensor, seed=0)
    captions = Counter(c for b in make_train_loader(tset, 4, 30, seed=0) for c in b.captions)
    assert any("round disc" in c or " dot, " in c for c in captions)  # rewrites drawn
    assert any(c.startswith("a ") and " disc on " in c for c in captions)  # originals drawn
