"""Sources: every manifest format, image folders and Hugging Face datasets, loaded, split and trained on."""

import json

import pytest

import toy_data as toy
from contrastkit.config import ConfigError, DataConfig, load_config
from contrastkit.data.manifest import ColumnError
from contrastkit.data.sources import open_source, parse_spec
from contrastkit.engine.trainer import train
from helpers import TINY_TRAINING

TINY = TINY_TRAINING
FULL = dict(
    caption_columns="caption,caption2",
    neg_caption_columns="hard_swap,hard_colour",
    tag_column="tags",
    neg_tag_column="neg_tags",
    rewrite_column="rewrites",
    label_column="label",
)


pytestmark = pytest.mark.usefixtures("no_plots")


def tiny(*extra):
    return load_config("configs/demo.yaml", TINY + list(extra))


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    root = tmp_path_factory.mktemp("manifests")
    rows = toy.manifest_rows(toy.write_images(root, 40))
    for ext in ("csv", "tsv", "jsonl", "parquet"):
        toy.write_manifest(root / f"data.{ext}", rows)
    return root, rows


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_manifest_formats_give_the_same_records(manifests, ext):
    root, rows = manifests
    ds = open_source(f"{ext}:{root / f'data.{ext}'}", "train", DataConfig(**FULL))
    assert len(ds) == 40
    for i in (0, 17, 39):
        rec, row = ds[i], rows[i]
        assert rec.captions == [row["caption"], row["caption2"]]
        assert rec.neg_captions == {"hard_swap": row["hard_swap"], "hard_colour": row["hard_colour"]}
        assert rec.tags == row["tags"] and rec.neg_tags == row["neg_tags"] and rec.rewrites == row["rewrites"]
        assert ds.classnames[rec.label] == row["label"]
        assert rec.load_image().size == (32, 32)
    (task,) = ds.zeroshot_tasks()
    assert task.name == "label" and len(task.indices) == 40
    assert [ds.classnames[lab] for lab in task.labels] == [r["label"] for r in rows]
    assert "line" in ds[0].key or "row" in ds[0].key  # records are named for error messages


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_each_manifest_format_trains_and_evaluates(manifests, tmp_path, ext):
    root, _ = manifests
    report = train(
        tiny(
            f"data.source={ext}:{root / f'data.{ext}'}",
            "data.label_column=label",
            "data.test_fraction=0.3",
            "data.caption_columns=caption,caption2",
        ),
        tmp_path,
    )
    assert report["n_images"] > 0
    assert "label" in report["zeroshot"]  # zero-shot from the label column
    assert "text_retrieval_recall@1" in report["retrieval"]
    assert "modality_gap" in report["geometry"]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["training_data"]["skipped_records"] == {}


def test_bare_paths_infer_the_kind(manifests, tmp_path):
    root, _ = manifests
    assert parse_spec(str(root / "data.parquet")) == ("parquet", str(root / "data.parquet"))
    assert parse_spec("shards/{000..004}.tar") == ("wds", "shards/{000..004}.tar")
    toy.write_folder(tmp_path / "f", 1)
    assert parse_spec(str(tmp_path / "f")) == ("folder", str(tmp_path / "f"))
    with pytest.raises(ValueError, match="unknown source kind 'cvs'"):
        parse_spec("cvs:data.csv")


def test_misspelled_or_missing_column_names_it_and_lists_the_columns(manifests):
    root, _ = manifests
    for ext in ("csv", "jsonl", "parquet"):
        with pytest.raises(ColumnError) as err:
            open_source(f"{ext}:{root / f'data.{ext}'}", "train", DataConfig(caption_columns="captoin"))
        msg = str(err.value)
        assert "'captoin'" in msg and "data.caption_columns" in msg and "did you mean 'caption'" in msg
        assert "columns present:" in msg and "image" in msg and "rewrites" in msg
    # raised in skip mode too: no record could be read
    with pytest.raises(ColumnError, match="data.image_column"):
        open_source(f"csv:{root / 'data.csv'}", "train", DataConfig(image_column="filepath", on_error="skip"))


def test_hash_split_is_deterministic_disjoint_and_complete(manifests):
    root, _ = manifests
    cfg = DataConfig(val_fraction=0.2, test_fraction=0.2, eval_size=1000)
    spec = f"csv:{root / 'data.csv'}"
    keys = {
        s: {open_source(spec, s, cfg)[i].key for i in range(len(open_source(spec, s, cfg)))}
        for s in ("train", "val", "test")
    }
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"])
    assert sum(len(k) for k in keys.values()) == 40
    assert all(len(k) > 0 for k in keys.values())
    again = open_source(spec, "val", cfg)
    assert {again[i].key for i in range(len(again))} == keys["val"]
    other_seed = open_source(spec, "val", DataConfig(val_fraction=0.2, test_fraction=0.2, eval_size=1000, seed=1))
    assert {other_seed[i].key for i in range(len(other_seed))} != keys["val"]
    # a held-out split with fraction 0 reads the other one; no fractions: every split is everything
    only_val = DataConfig(val_fraction=0.25, eval_size=1000)
    assert [r.key for r in open_source(spec, "test", only_val)] == [r.key for r in open_source(spec, "val", only_val)]
    assert len(open_source(spec, "test", DataConfig(eval_size=1000))) == 40
    # val / test are capped at data.eval_size
    assert len(open_source(spec, "test", DataConfig(eval_size=7))) == 7


def test_split_files_by_placeholder_and_by_setting(tmp_path):
    items = toy.write_images(tmp_path, 30)
    rows = toy.manifest_rows(items)
    toy.write_manifest(tmp_path / "train.jsonl", rows[:20])
    toy.write_manifest(tmp_path / "val.jsonl", rows[20:25])
    toy.write_manifest(tmp_path / "test.jsonl", rows[25:])
    cfg = DataConfig(eval_size=100)
    spec = f"jsonl:{tmp_path}/{{split}}.jsonl"
    assert [len(open_source(spec, s, cfg)) for s in ("train", "val", "test")] == [20, 5, 5]
    toy.write_manifest(tmp_path / "holdout.csv", rows[25:])
    cfg = DataConfig(source=f"jsonl:{tmp_path}/train.jsonl", test_source=f"csv:{tmp_path}/holdout.csv", eval_size=100)
    test = open_source(cfg.source, "test", cfg)
    assert len(test) == 5 and test[0].captions[0] == rows[25]["caption"]


def test_image_folder_source_trains_with_class_zero_shot(tmp_path):
    classes = toy.write_folder(tmp_path / "imgs", 6)
    ds = open_source(f"folder:{tmp_path / 'imgs'}", "train", DataConfig(class_template="a {} picture."))
    assert len(ds) == 18 and ds.classnames == classes
    rec = ds[0]
    assert rec.captions == [f"a {classes[rec.label]} picture."]
    (task,) = ds.zeroshot_tasks()
    assert task.classnames == classes and task.templates == ["a {} picture."] and len(task.indices) == 18
    report = train(tiny(f"data.source=folder:{tmp_path / 'imgs'}", "data.test_fraction=0.3"), tmp_path / "run")
    assert "class" in report["zeroshot"] and 0 <= report["zeroshot"]["class"]["acc1"] <= 1
    assert "text_retrieval_recall@1" in report["retrieval"]


def test_image_folder_split_folders_share_the_train_classes(tmp_path):
    toy.write_folder(tmp_path / "train", 3)
    (tmp_path / "val" / "blue").mkdir(parents=True)
    (tmp_path / "val" / "blue" / "x.png").write_bytes(toy.encode(toy.toy_item(0)[0]))
    val = open_source(f"folder:{tmp_path}/{{split}}", "val", DataConfig())
    assert val.classnames == ["blue", "green", "red"] and val[0].label == 0


def test_hugging_face_dataset_from_disk_trains(tmp_path):
    import datasets

    images, captions, labels = [], [], []
    for i in range(24):
        image, fields = toy.toy_item(i)
        images.append(image)
        captions.append(fields["caption"])
        labels.append(fields["label"])
    features = datasets.Features(
        {"image": datasets.Image(), "text": datasets.Value("string"), "label": datasets.ClassLabel(names=toy.NAMES)}
    )
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"image": images[:16], "text": captions[:16], "label": labels[:16]}, features=features
            ),
            "test": datasets.Dataset.from_dict(
                {"image": images[16:], "text": captions[16:], "label": labels[16:]}, features=features
            ),
        }
    )
    dd.save_to_disk(str(tmp_path / "hf"))
    cfg = DataConfig(caption_columns="text", label_column="label")
    train_ds, test_ds = (
        open_source(f"hf:{tmp_path / 'hf'}", "train", cfg),
        open_source(f"hf:{tmp_path / 'hf'}", "test", cfg),
    )
    assert len(train_ds) == 16 and len(test_ds) == 8
    assert train_ds[3].captions == [captions[3]] and train_ds[3].label == labels[3]
    assert train_ds[3].load_image().size == (32, 32)
    assert test_ds.zeroshot_tasks()[0].classnames == toy.NAMES
    report = train(
        tiny(f"data.source=hf:{tmp_path / 'hf'}", "data.caption_columns=text", "data.label_column=label"),
        tmp_path / "run",
    )
    assert report["n_images"] == 8 and "label" in report["zeroshot"]


def test_new_data_settings_are_validated():
    with pytest.raises(ConfigError, match="data.val_fraction"):
        tiny("data.val_fraction=1.5")
    with pytest.raises(ConfigError, match="data.val_fraction \\+ data.test_fraction"):
        tiny("data.val_fraction=0.5", "data.test_fraction=0.5")
    with pytest.raises(ConfigError, match="data.class_template"):
        tiny("data.class_template=no placeholder")
    with pytest.raises(ConfigError, match="data.caption_columns"):
        tiny("data.caption_columns=")
    assert tiny("data.caption_columns=[a, b]").data.caption_columns == ["a", "b"]


def test_synthetic_source_is_unchanged():
    ds = open_source("synthetic:shapes", "train", DataConfig(train_size=10))
    assert len(ds) == 10 and ds[0].key == "shapes-train-00000"
    assert ds.data_options.on_error == "raise"


def test_hugging_face_local_file_is_hash_split_like_a_manifest(manifests):
    root, _ = manifests
    cfg = DataConfig(test_fraction=0.3, eval_size=100, label_column="label")
    train_ds = open_source(f"hf:{root / 'data.parquet'}", "train", cfg)
    test_ds = open_source(f"hf:{root / 'data.parquet'}", "test", cfg)
    manifest_test = open_source(f"parquet:{root / 'data.parquet'}", "test", cfg)
    paths = lambda ds: [str(ds[i].image) for i in range(len(ds))]  # noqa: E731
    assert len(train_ds) + len(test_ds) == 40 and not set(paths(train_ds)) & set(paths(test_ds))
    assert paths(test_ds) == paths(manifest_test)  # the same hash of the same image paths
    assert test_ds.zeroshot_tasks()[0].name == "label"
