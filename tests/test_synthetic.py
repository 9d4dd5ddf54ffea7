"""Tests for the synthetic:shapes world: scenes, words, truth, pixels, splits, export."""

from __future__ import annotations

import csv
import random
from collections import Counter
from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from contrastkit.data.export import export_dataset
from contrastkit.data.records import Dataset
from contrastkit.data.shapes import SyntheticShapes
from contrastkit.data.shapes.describe import describe_scene
from contrastkit.data.shapes.grammar import (
    COLOURS,
    NEGATIVE_CATEGORIES,
    RELATIONS,
    SHAPES,
    SIZES,
    Caption,
    Mention,
    Scene,
    SceneObject,
    caption_is_true,
    caption_text,
    parse_caption,
    relation_holds,
)
from contrastkit.data.shapes.layout import choose_held_out
from contrastkit.data.shapes.render import BACKGROUND, COLOUR_RGB, render_scene

N = 300  # records checked per split in the sweeping tests


@pytest.fixture(scope="module")
def train() -> SyntheticShapes:
    return SyntheticShapes("train", size=2000, seed=0)


@pytest.fixture(scope="module")
def held_out_split() -> SyntheticShapes:
    return SyntheticShapes("test", size=2000, seed=0)


@pytest.fixture(scope="module")
def train_records(train: SyntheticShapes) -> list:
    return [train[i] for i in range(N)]


@pytest.fixture(scope="module")
def held_out_records(held_out_split: SyntheticShapes) -> list:
    return [held_out_split[i] for i in range(N)]


def _tag_mention(tag: str) -> Mention:
    words = tag.split()
    shape = [w for w in words if w in SHAPES]
    colour = [w for w in words if w in COLOURS]
    assert len(shape) + len(colour) == len(words) and len(shape) <= 1 and len(colour) <= 1, tag
    return Mention(shape[0] if shape else None, colour[0] if colour else None)


def _scene_of(record) -> Scene:
    meta = record.meta
    objs = tuple(SceneObject(o["shape"], o["colour"], o["size"], o["x"], o["y"], o["radius"]) for o in meta["objects"])
    return Scene(objs, meta["layout"], meta["image_size"])


# ---------------------------------------------------------------- the checker and the grammar


def _obj(shape: str, colour: str, size: str, x: float, y: float = 32.0) -> SceneObject:
    return SceneObject(shape, colour, size, x, y, 9.0 if size == "large" else 6.0)


def test_checker_on_a_hand_made_scene() -> None:
    scene = Scene((_obj("circle", "red", "large", 15), _obj("square", "blue", "small", 45)), "row", 64)
    true = [
        "a large red circle to the left of a small blue square",
        "a small blue square is to the right of a large red circle",
        "a red circle to the left of a blue square",
        "there is a small blue square",
        "a photo of a red object",
        "there is a large red circle and a small blue square",
    ]
    false = [
        "a large red circle to the right of a small blue square",
        "a large red circle above a small blue square",
        "a small blue square to the left of a large red circle",
        "a large blue circle to the left of a small red square",
        "a small red circle",
        "a red square",
        "a red circle and a red circle",
    ]
    for text in true:
        assert caption_is_true(scene, parse_caption(text)), text
    for text in false:
        assert not caption_is_true(scene, parse_caption(text)), text


def test_checker_needs_distinct_objects_for_repeated_mentions() -> None:
    # replace_object turning the circle into a square: the only red square cannot serve twice.
    scene = Scene((_obj("circle", "red", "large", 15), _obj("square", "red", "large", 45)), "row", 64)
    circle, square = Mention("circle", "red", "large"), Mention("square", "red", "large")
    assert caption_is_true(scene, Caption((circle, square), ("left",)))
    assert not caption_is_true(scene, Caption((square, square), ("left",)))


def test_relation_is_false_across_the_layout_axis() -> None:
    # Boxes overlap vertically in a row (horizontally in a column): the cross-axis relations are false.
    row = Scene((_obj("circle", "red", "small", 15, 30), _obj("square", "blue", "large", 45, 34)), "row", 64)
    column = Scene(
        (SceneObject("circle", "red", "small", 30, 15, 6.0), SceneObject("square", "blue", "large", 34, 45, 9.0)),
        "column",
        64,
    )
    for scene, truth in ((row, "left"), (column, "above")):
        for rel in ("left", "right", "above", "below"):
            cap = Caption((Mention("circle"), Mention("square")), (rel,))
            assert caption_is_true(scene, cap) is (rel == truth), (scene.layout, rel)


@pytest.mark.parametrize(
    "text",
    [
        "a red banana",
        "an red circle",
        "a orange circle",
        "a red circle to the left of",
        "a photo of a red circle is above a blue square",
        "a red circle, a blue square",
        "a red circle, which is above a blue square",
    ],
)
def test_parse_rejects_what_the_grammar_does_not_write(text: str) -> None:
    with pytest.raises(ValueError):
        parse_caption(text)


# ---------------------------------------------------------------- determinism


def test_same_seed_same_records_in_any_access_order(train: SyntheticShapes) -> None:
    other = SyntheticShapes("train", size=2000, seed=0)
    for i in reversed(range(40)):
        a, b = other[i], train[i]
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert (a.captions, a.neg_captions, a.tags, a.neg_tags, a.rewrites, a.key) == (
            b.captions,
            b.neg_captions,
            b.tags,
            b.neg_tags,
            b.rewrites,
            b.key,
        )
        assert a.meta == b.meta
    assert train[-1].key == train[1999].key == "shapes-train-01999"


def test_different_seed_or_split_gives_different_records(train: SyntheticShapes) -> None:
    other_seed = SyntheticShapes("train", size=2000, seed=1)
    val = SyntheticShapes("val", size=2000, seed=0)
    for other in (other_seed, val):
        same_captions = sum(other[i].captions == train[i].captions for i in range(40))
        same_pixels = sum(np.array_equal(np.asarray(other[i].image), np.asarray(train[i].image)) for i in range(40))
        assert same_captions <= 4 and same_pixels <= 1


# ---------------------------------------------------------------- captions and negatives


def _assert_minimal_edit(category: str, canonical: Caption, neg: Caption) -> None:
    cm, nm = canonical.mentions, neg.mentions
    assert len(cm) == len(nm) and neg.form == canonical.form
    changed = [k for k in range(len(cm)) if cm[k] != nm[k]]
    if category in ("replace_attribute", "replace_object"):
        assert neg.relations == canonical.relations and len(changed) == 1
        a, b = cm[changed[0]], nm[changed[0]]
        diff = {f for f in ("shape", "colour", "size") if getattr(a, f) != getattr(b, f)}
        assert diff == {"shape"} if category == "replace_object" else diff in ({"colour"}, {"size"})
    elif category == "replace_relation":
        assert nm == cm and sum(a != b for a, b in zip(canonical.relations, neg.relations)) == 1
    elif category == "swap_attributes":
        i, j = changed
        assert neg.relations == canonical.relations
        assert (nm[i].colour, nm[j].colour) == (cm[j].colour, cm[i].colour)
        assert (nm[i].shape, nm[i].size) == (cm[i].shape, cm[i].size)
        assert (nm[j].shape, nm[j].size) == (cm[j].shape, cm[j].size)
    else:
        i, j = changed
        assert neg.relations == canonical.relations and (nm[i], nm[j]) == (cm[j], cm[i])


def test_every_caption_true_every_negative_false(train_records: list, held_out_records: list) -> None:
    for record in train_records + held_out_records:
        scene = _scene_of(record)
        n = len(scene.objects)
        canonical = parse_caption(record.captions[0])
        # captions[0] names every object with all attributes, and their relations.
        assert len(canonical.mentions) == n
        assert all(m.shape and m.colour and m.size for m in canonical.mentions)
        assert len(canonical.relations) == n - 1
        assert len(record.captions) >= 4 and len(set(record.captions)) == len(record.captions)
        assert 2 <= len(record.rewrites) <= 4
        for text in record.captions + record.rewrites:
            parsed = parse_caption(text)
            assert caption_text(parsed) == text
            assert caption_is_true(scene, parsed), (record.key, text)
            # No caption leaves shape or colour unstated: "a star" would teach "red, so not a star".
            assert all(m.shape and m.colour for m in parsed.mentions), (record.key, text)
        for text in record.rewrites:
            full = parse_caption(text)
            assert len(full.mentions) == n and all(m.size and m.colour for m in full.mentions)
            assert len(full.relations) == n - 1
        expected = set(NEGATIVE_CATEGORIES) if n > 1 else {"replace_attribute", "replace_object"}
        assert set(record.neg_captions) <= expected
        if n == 1:
            assert set(record.neg_captions) == expected
        for category, negatives in record.neg_captions.items():
            assert 1 <= len(negatives) <= 3 and len(set(negatives)) == len(negatives)
            for text in negatives:
                parsed = parse_caption(text)
                assert caption_text(parsed) == text and text not in record.captions
                assert not caption_is_true(scene, parsed), (record.key, category, text)
                _assert_minimal_edit(category, canonical, parsed)


def test_tags_true_and_neg_tags_false(train_records: list) -> None:
    for record in train_records:
        scene = _scene_of(record)
        assert record.tags and record.neg_tags and not set(record.tags) & set(record.neg_tags)
        for tag in record.tags:
            assert caption_is_true(scene, Caption((_tag_mention(tag),))), (record.key, tag)
        for tag in record.neg_tags:
            assert not caption_is_true(scene, Caption((_tag_mention(tag),))), (record.key, tag)
        for obj in scene.objects:
            assert {obj.shape, obj.colour, f"{obj.colour} {obj.shape}"} <= set(record.tags)


def test_negatives_are_checked_even_where_edits_would_be_true() -> None:
    # Sampled scenes never repeat a shape-colour pair; a hand-made one does, and then
    # flipping the relation between the twins or swapping them would give true captions.
    twins = Scene(
        (_obj("circle", "red", "large", 10), _obj("circle", "red", "large", 32), _obj("square", "blue", "small", 54)),
        "row",
        64,
    )
    for seed in range(20):
        words = describe_scene(twins, random.Random(seed), negatives_per_category=10)
        assert set(words.neg_captions) == set(NEGATIVE_CATEGORIES)
        for category, negatives in words.neg_captions.items():
            for text in negatives:
                assert not caption_is_true(twins, parse_caption(text)), (category, text)
        for text in words.captions:
            assert caption_is_true(twins, parse_caption(text)), text


def test_all_negative_categories_and_phrasings_occur(train_records: list) -> None:
    multi = [r for r in train_records if len(r.meta["objects"]) > 1]
    assert len(multi) > 100
    seen = Counter(k for r in multi for k in r.neg_captions)
    assert set(seen) == set(NEGATIVE_CATEGORIES)
    for always in ("replace_attribute", "replace_object", "replace_relation", "swap_objects"):
        assert seen[always] == len(multi), always
    relations = Counter(rel for r in multi for rel in parse_caption(r.captions[0]).relations)
    assert set(relations) == {"left", "right", "above", "below"}
    forms = Counter(parse_caption(c).form for r in train_records for c in r.captions)
    assert set(forms) == {"plain", "photo", "there", "is"}
    assert any(parse_caption(c).mentions[0].size is None for r in train_records for c in r.captions)


# ---------------------------------------------------------------- pixels


def test_pixels_match_the_scene(train_records: list, held_out_records: list) -> None:
    for record in train_records[:150] + held_out_records[:150]:
        image = record.image
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (64, 64)
        pixels = np.asarray(image)
        scene = _scene_of(record)
        covered = np.zeros((64, 64), dtype=bool)
        for obj in scene.objects:
            # the object's colour sits at its centre
            assert tuple(pixels[round(obj.y), round(obj.x)]) == COLOUR_RGB[obj.colour], record.key
            x0, y0, x1, y1 = obj.bbox
            assert x0 >= 0 and y0 >= 0 and x1 <= 64 and y1 <= 64
            covered[max(0, int(y0) - 1) : int(y1) + 2, max(0, int(x0) - 1) : int(x1) + 2] = True
        # outside every object's box only background
        assert (pixels[~covered] == BACKGROUND).all(), record.key
        for a, b in combinations(scene.objects, 2):  # boxes never overlap
            ax0, ay0, ax1, ay1 = a.bbox
            bx0, by0, bx1, by1 = b.bbox
            assert ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0


def _centroid(pixels: np.ndarray, colour: str) -> np.ndarray:
    ys, xs = np.nonzero((pixels == COLOUR_RGB[colour]).all(axis=-1))
    return np.array([xs.mean(), ys.mean()])


def test_stated_relations_hold_between_pixel_centroids(train_records: list) -> None:
    checked = 0
    for record in train_records:
        canonical = parse_caption(record.captions[0])
        colours = [m.colour for m in canonical.mentions]
        if len(colours) < 2 or len(set(colours)) < len(colours):
            continue
        pixels = np.asarray(record.image)
        for k, rel in enumerate(canonical.relations):
            (ax, ay), (bx, by) = _centroid(pixels, colours[k]), _centroid(pixels, colours[k + 1])
            holds = {"left": bx - ax, "right": ax - bx, "above": by - ay, "below": ay - by}[rel]
            assert holds > 5, (record.key, record.captions[0])
            checked += 1
    assert checked > 100


def test_large_objects_cover_more_pixels_than_small_ones(train_records: list) -> None:
    counts: dict[tuple[str, str], list[int]] = {}
    for record in train_records:
        if len(record.meta["objects"]) == 1:
            obj = record.meta["objects"][0]
            area = int((np.asarray(record.image) == COLOUR_RGB[obj["colour"]]).all(axis=-1).sum())
            counts.setdefault((obj["shape"], obj["size"]), []).append(area)
    for shape in SHAPES:
        small, large = counts.get((shape, "small")), counts.get((shape, "large"))
        if small and large:
            assert min(large) > 1.5 * max(small), shape


def test_image_size_scales_the_world() -> None:
    for size in (32, 96):
        ds = SyntheticShapes("train", size=400, seed=3, image_size=size)
        assert max(sum(o.size == "large" for o in ds.scene(i).objects) for i in range(400)) == 3
        for i in range(400):  # every scene fits, three large objects in a row included
            for o in ds.scene(i).objects:
                x0, y0, x1, y1 = o.bbox
                assert x0 >= 0 and x1 <= size and y0 >= 0 and y1 <= size
        assert ds[0].image.size == (size, size)
        assert np.array_equal(np.asarray(render_scene(ds.scene(0))), np.asarray(ds[0].image))


# ---------------------------------------------------------------- splits


def test_held_out_combos_are_a_fair_fifth() -> None:
    held = choose_held_out(0)
    assert len(held) == round(0.2 * len(SHAPES) * len(COLOURS)) and len(set(held)) == len(held)
    assert choose_held_out(0) == held and choose_held_out(1) != held
    assert max(Counter(s for s, _ in held).values()) <= 2 and max(Counter(c for _, c in held).values()) <= 2


def test_splits_hold_out_combos(train: SyntheticShapes, held_out_records: list, train_records: list) -> None:
    held = set(train.held_out)
    val = SyntheticShapes("val", size=N, seed=0)
    assert set(val.held_out) == held == set(SyntheticShapes("test", size=1, seed=0).held_out)
    for ds in (train, val):
        for i in range(N):
            assert not {(o.shape, o.colour) for o in ds.scene(i).objects} & held, (ds.split, i)
    for record in held_out_records:
        assert {(o["shape"], o["colour"]) for o in record.meta["objects"]} & held, record.key
    for record in held_out_records + train_records:
        assert all(o["held_out"] == ((o["shape"], o["colour"]) in held) for o in record.meta["objects"])
    shapes = {o["shape"] for r in train_records for o in r.meta["objects"]}
    colours = {o["colour"] for r in train_records for o in r.meta["objects"]}
    assert shapes == set(SHAPES) and colours == set(COLOURS)


def test_layout_makes_every_pair_relation_unambiguous(train: SyntheticShapes) -> None:
    along = {"row": ("left", "right"), "column": ("above", "below")}
    for i in range(1000):
        scene = train.scene(i)
        assert (scene.layout == "single") == (len(scene.objects) == 1)
        for a, b in combinations(scene.objects, 2):
            holding = {rel for rel in RELATIONS if relation_holds(rel, a, b)}
            assert len(holding) == 1 and holding <= set(along[scene.layout]), (i, scene.layout, holding)


def test_object_count_mix(train: SyntheticShapes) -> None:
    counts = Counter(len(train.scene(i).objects) for i in range(1000))
    assert set(counts) == {1, 2, 3}
    assert abs(counts[1] / 1000 - 0.40) < 0.06 and abs(counts[2] / 1000 - 0.35) < 0.06
    for i in range(1000):
        objs = train.scene(i).objects
        assert len({(o.shape, o.colour) for o in objs}) == len(objs)


# ---------------------------------------------------------------- dataset protocol, zero-shot, export


def test_protocol_and_errors(train: SyntheticShapes) -> None:
    assert isinstance(train, Dataset) and train.name == "synthetic:shapes" and len(train) == 2000
    assert train[42].key == "shapes-train-00042"
    with pytest.raises(IndexError):
        train[2000]
    with pytest.raises(ValueError, match="unknown split"):
        SyntheticShapes("validation")
    with pytest.raises(ValueError, match="image_size"):
        SyntheticShapes(image_size=16)


def test_zeroshot_tasks_match_meta() -> None:
    ds = SyntheticShapes("test", size=300, seed=0)
    tasks = {t.name: t for t in ds.zeroshot_tasks()}
    assert set(tasks) == {"shape", "colour", "size"}
    assert tasks["shape"].classnames == list(SHAPES) and tasks["colour"].classnames == list(COLOURS)
    assert tasks["size"].classnames == list(SIZES)
    singles = [i for i in range(len(ds)) if len(ds.scene(i).objects) == 1]
    assert len(singles) > 80
    for name, attr in (("shape", "shape"), ("colour", "colour"), ("size", "size")):
        task = tasks[name]
        assert task.indices == singles and len(task.labels) == len(singles)
        assert all("{}" in t for t in task.templates) and len(task.templates) >= 3
        for i, label in zip(task.indices, task.labels):
            assert task.classnames[label] == getattr(ds.scene(i).objects[0], attr)
        for i, label in list(zip(task.indices, task.labels))[:10]:
            assert task.classnames[label] == ds[i].meta["objects"][0][attr]


def test_export_writes_images_and_csv(tmp_path, train: SyntheticShapes) -> None:
    csv_path = export_dataset(train, tmp_path / "out", limit=12)
    assert csv_path == tmp_path / "out" / "captions.csv"
    with csv_path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    categories = {k for i in range(12) for k in train[i].neg_captions}
    assert categories | {"image", "caption", "all_captions", "tags"} == set(rows[0])
    for i, row in enumerate(rows):
        record = train[i]
        with Image.open(csv_path.parent / row["image"]) as img:
            assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(record.image))
        assert row["caption"] == record.captions[0]
        assert row["all_captions"].split(" || ") == record.captions
        assert row["tags"].split(" || ") == record.tags
        for category in NEGATIVE_CATEGORIES:
            assert row.get(category, "") == " || ".join(record.neg_captions.get(category, []))
