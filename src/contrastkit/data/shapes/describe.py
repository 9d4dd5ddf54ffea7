"""What a shapes-world record says about its scene: true captions and hard negatives by category.

See :mod:`contrastkit.data.shapes.grammar` for the caption structure; every negative is a
minimal edit of the canonical caption that :func:`~contrastkit.data.shapes.grammar.caption_is_true`
finds false for the scene.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from itertools import combinations
from typing import Any

from .grammar import (
    COLOURS,
    FORWARD,
    INVERSE,
    RELATIONS,
    SHAPES,
    SIZES,
    Caption,
    Description,
    Mention,
    Scene,
    SceneObject,
    caption_is_true,
    caption_text,
)


def _full(obj: SceneObject) -> Mention:
    return Mention(obj.shape, obj.colour, obj.size)


def _chain(objs: Sequence[SceneObject], layout: str, backward: bool, form: str = "plain") -> Caption:
    """Objects (in layout order) as a relation chain, read forward or backward."""
    mentions = tuple(_full(o) for o in objs)
    rel = FORWARD[layout]
    if backward:
        mentions, rel = mentions[::-1], INVERSE[rel]
    return Caption(mentions, (rel,) * (len(mentions) - 1), form)


def _without_sizes(caption: Caption) -> Caption:
    return replace(caption, mentions=tuple(replace(m, size=None) for m in caption.mentions))


def _put(items: tuple[Any, ...], i: int, item: Any) -> tuple[Any, ...]:
    return items[:i] + (item,) + items[i + 1 :]


Edit = tuple[str, int, Any]  # (what, position, value): one minimal change of a caption


def _negative_edits(canonical: Caption) -> dict[str, list[Edit]]:
    """Every minimal edit of ``canonical``, by negative category (not yet checked for falsity)."""
    ms, rels = canonical.mentions, canonical.relations
    pairs = list(combinations(range(len(ms)), 2))
    return {
        "replace_attribute": [("colour", i, c) for i, m in enumerate(ms) for c in COLOURS if c != m.colour]
        + [("size", i, s) for i, m in enumerate(ms) for s in SIZES if s != m.size],
        "replace_object": [("shape", i, s) for i, m in enumerate(ms) for s in SHAPES if s != m.shape],
        "replace_relation": [("relation", k, r) for k, rel in enumerate(rels) for r in RELATIONS if r != rel],
        "swap_attributes": [("swap_colours", i, j) for i, j in pairs if ms[i].colour != ms[j].colour],
        "swap_objects": [("swap_mentions", i, j) for i, j in pairs] if rels else [],
    }


def _apply(caption: Caption, edit: Edit) -> Caption:
    what, i, value = edit
    ms, rels, form = caption.mentions, caption.relations, caption.form
    m = ms[i]
    if what == "relation":
        return Caption(ms, _put(rels, i, value), form)
    if what == "colour":
        return Caption(_put(ms, i, Mention(m.shape, value, m.size)), rels, form)
    if what == "size":
        return Caption(_put(ms, i, Mention(m.shape, m.colour, value)), rels, form)
    if what == "shape":
        return Caption(_put(ms, i, Mention(value, m.colour, m.size)), rels, form)
    if what == "swap_colours":
        other = ms[value]
        swapped = _put(ms, i, Mention(m.shape, other.colour, m.size))
        return Caption(_put(swapped, value, Mention(other.shape, m.colour, other.size)), rels, form)
    if what == "swap_mentions":
        return Caption(_put(_put(ms, i, ms[value]), value, m), rels, form)
    raise ValueError(f"unknown caption edit {what!r}")


def _dedupe(texts: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def describe_scene(scene: Scene, rng: random.Random, negatives_per_category: int = 3) -> Description:
    """Captions, hard negatives, tags and rewrites for ``scene`` (random choices from ``rng``)."""
    objs = list(scene.objects)
    if len(objs) == 1:
        canonical = Caption((_full(objs[0]),))
        positives = [
            canonical,
            replace(canonical, form="photo"),
            replace(canonical, form="there"),
            _without_sizes(canonical),
            replace(_without_sizes(canonical), form="photo"),
        ]
        rewrites = [replace(canonical, form="photo"), replace(canonical, form="there")]
    else:
        axis = 0 if scene.layout == "row" else 1
        ordered = sorted(objs, key=lambda o: (o.x, o.y)[axis])
        backward = rng.random() < 0.5
        canonical = _chain(ordered, scene.layout, backward)
        inverse = _chain(ordered, scene.layout, not backward, form="is")
        rewrites = [inverse, replace(canonical, form="photo"), replace(canonical, form="there")]
        positives = [
            canonical,
            inverse,
            _without_sizes(canonical),
            replace(canonical, form="photo"),
            Caption(tuple(_full(o) for o in ordered), (), "there"),
        ]
        if len(ordered) > 2:
            for a, b in combinations(ordered, 2):
                positives.append(_without_sizes(_chain((a, b), scene.layout, rng.random() < 0.5)))
        positives += [Caption((_full(o),), (), "there") for o in objs]

    negatives: dict[str, list[str]] = {}
    for category, edits in _negative_edits(canonical).items():
        kept: list[str] = []
        for edit in rng.sample(edits, len(edits)):  # random order: keep the first false ones
            negative = _apply(canonical, edit)
            if caption_is_true(scene, negative):
                continue
            text = caption_text(negative)
            if text not in kept:
                kept.append(text)
                if len(kept) == negatives_per_category:
                    break
        if kept:
            negatives[category] = kept

    shapes = _dedupe([o.shape for o in objs])
    colours = _dedupe([o.colour for o in objs])
    present = {(o.shape, o.colour) for o in objs}
    tags = _dedupe(shapes + colours + [f"{o.colour} {o.shape}" for o in objs])
    neg_tags = (
        [s for s in SHAPES if s not in shapes]
        + [c for c in COLOURS if c not in colours]
        + [f"{c} {s}" for s in shapes for c in colours if (s, c) not in present]
    )
    return Description(
        captions=_dedupe([caption_text(c) for c in positives]),
        neg_captions=negatives,
        tags=tags,
        neg_tags=neg_tags,
        rewrites=[caption_text(c) for c in rewrites],
    )
