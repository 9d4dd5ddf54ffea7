"""Plain-file inputs: class names, templates, SugarCrepe JSON, ARO-style sets, and choice scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from contrastkit.evaluate import evaluate_choices, read_aro, read_classnames, read_sugarcrepe, read_templates
from contrastkit.evaluate.benchmark_files import ChoiceItem
from contrastkit.evaluate.templates import OPENAI_IMAGENET_TEMPLATES

WORDS = {"red": 0, "green": 1, "blue": 2}


class ColourEmbedder:
    """Image: mean colour; text: colour-word counts (a bag of words: order-blind)."""

    def __init__(self):
        self.image_calls: list[tuple[int, int]] = []

    def embed_images(self, images):
        self.image_calls += [im.size for im in images]
        rows = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32)).mean(dim=(0, 1)) for im in images]) + 1.0
        return F.normalize(rows, dim=-1)

    def embed_texts(self, texts):
        rows = torch.full((len(texts), 3), 0.01)
        for i, t in enumerate(texts):
            for w in t.split():
                if w in WORDS:
                    rows[i, WORDS[w]] += 1.0
        return F.normalize(rows, dim=-1)


def test_classnames_and_templates_files(tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("tench\ngoldfish\ngreat white shark\n\n")
    assert read_classnames(names) == ["tench", "goldfish", "great white shark"]
    names.write_text("tench\n\ngoldfish\n")  # line i is class i: a gap would shift every later label
    with pytest.raises(ValueError, match="line 2 is empty"):
        read_classnames(names)
    names.write_text("tench\ngoldfish\ntench\n")
    with pytest.raises(ValueError, match="'tench' is on lines 1 and 3"):
        read_classnames(names)
    plain = tmp_path / "t.txt"
    plain.write_text("a photo of a {}.\nitap of a {c}.\n")
    assert read_templates(plain) == ["a photo of a {}.", "itap of a {c}."]
    js = tmp_path / "t.json"
    js.write_text(json.dumps(["a {} here", "{}"]))
    assert read_templates(js) == ["a {} here", "{}"]
    assert read_templates("openai_imagenet") == list(OPENAI_IMAGENET_TEMPLATES)
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80 and all("{}" in t for t in OPENAI_IMAGENET_TEMPLATES)
    assert read_templates("simple") == ["a photo of a {}."]
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo of a {}.\nno placeholder\n")
    with pytest.raises(ValueError, match="placeholder"):
        read_templates(bad)
    with pytest.raises(FileNotFoundError, match="built-in"):
        read_templates("nope")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no non-empty line"):
        read_classnames(tmp_path / "empty.txt")


def _image(path, rgb, size=(6, 4)):
    Image.new("RGB", size, rgb).save(path)
    return path


def test_sugarcrepe_files_folder_and_strict_scoring(tmp_path):
    imgs = tmp_path / "val2017"
    imgs.mkdir()
    _image(imgs / "r.jpg", (255, 0, 0))
    _image(imgs / "b.jpg", (0, 0, 255))
    ann = tmp_path / "sc"
    ann.mkdir()
    (ann / "replace_att.json").write_text(
        json.dumps(
            {
                "0": {"filename": "r.jpg", "caption": "a red box", "negative_caption": "a green box"},
                "7": {"filename": "b.jpg", "caption": "a blue box", "negative_caption": "a red box"},
            }
        )
    )
    (ann / "swap_att.json").write_text(
        json.dumps(
            {
                "1": {"filename": "r.jpg", "caption": "red blue", "negative_caption": "blue red"},  # tie -> wrong
            }
        )
    )
    items = read_sugarcrepe(ann, imgs)
    assert [(i.category, i.key) for i in items] == [
        ("replace_att", "replace_att/0"),
        ("replace_att", "replace_att/7"),
        ("swap_att", "swap_att/1"),
    ]
    assert read_sugarcrepe([ann / "swap_att.json"], imgs)[0].negatives == ["blue red"]
    emb = ColourEmbedder()
    out = evaluate_choices(emb, items, progress=False)
    assert out["accuracy"] == {"replace_att": 1.0, "swap_att": 0.0}
    assert out["n_pairs"] == {"replace_att": 2, "swap_att": 1}
    assert len(emb.image_calls) == 2  # r.jpg embedded once for both sets
    (ann / "broken.json").write_text(json.dumps({"3": {"filename": "r.jpg", "caption": "x"}}))
    with pytest.raises(ValueError, match="negative_caption"):
        read_sugarcrepe(ann / "broken.json", imgs)


def test_aro_relation_and_attribute_sets_with_crops(tmp_path):
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    img.paste((0, 0, 255), (10, 0, 20, 10))  # left half red, right half blue
    img.save(tmp_path / "vg.png")
    relation = [
        {
            "image_path": "vg.png",
            "bbox_x": 0,
            "bbox_y": 0,
            "bbox_w": 10,
            "bbox_h": 10,
            "relation_name": "on",
            "true_caption": "red thing",
            "false_caption": "blue thing",
        },
        {
            "image_path": "vg.png",
            "bbox_x": 10,
            "bbox_y": 0,
            "bbox_w": 10,
            "bbox_h": 10,
            "relation_name": "on",
            "true_caption": "blue thing",
            "false_caption": "red thing",
        },
        {
            "image_path": "vg.png",
            "relation_name": "under",  # no box: the whole (purple-ish) image
            "true_caption": "red blue",
            "false_caption": "blue red",
        },
    ]
    (tmp_path / "vg_relation.json").write_text(json.dumps(relation))
    attribution = [
        {
            "image": "vg.png",
            "attributes": ["red", "blue"],
            "caption": "red",  # on the blue half
            "false_captions": ["green", "blue"],
            "bbox_x": 10,
            "bbox_y": 0,
            "bbox_w": 10,
            "bbox_h": 10,
        }
    ]
    (tmp_path / "vg_attribution.jsonl").write_text("\n".join(json.dumps(r) for r in attribution) + "\n")
    items = read_aro([tmp_path / "vg_relation.json", tmp_path / "vg_attribution.jsonl"], tmp_path)
    assert [i.category for i in items] == ["on", "on", "under", "red_blue"]
    assert items[0].box == (0, 0, 10, 10) and items[2].box is None
    emb = ColourEmbedder()
    out = evaluate_choices(emb, items, progress=False, batch_size=2)
    # crops decide "on"; the bag-of-words swap ties (wrong); "red" loses to one of its two negatives ("blue")
    assert out["accuracy"] == {"on": 1.0, "red_blue": 0.0, "under": 0.0}
    assert sorted(emb.image_calls) == [(10, 10), (10, 10), (20, 10)]  # two crops and the whole image, once each
    assert out["macro_accuracy"] == pytest.approx(1 / 3) and out["micro_accuracy"] == pytest.approx(0.5)


def test_any_negative_above_the_caption_makes_the_item_wrong():
    red = Image.new("RGB", (2, 2), (255, 0, 0))
    items = [
        ChoiceItem(red, "red", ["green", "blue"], "c"),
        ChoiceItem(red, "green", ["red", "blue"], "c"),
        ChoiceItem(red, "red", ["green", "red blue green"], "d"),
    ]
    out = evaluate_choices(ColourEmbedder(), items, progress=False)
    assert out["accuracy"] == {"c": 0.5, "d": 1.0}
    with pytest.raises(ValueError, match="no false caption"):
        evaluate_choices(ColourEmbedder(), [ChoiceItem(red, "red", [], "c")], progress=False)
