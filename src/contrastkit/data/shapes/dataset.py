"""``synthetic:shapes``: the built-in world of coloured shapes, rendered with PIL.

Each image (``image_size`` pixels square, 64 by default) shows one to three
flat-coloured shapes on a grey background; the scene grammar, captions, hard
negatives and the truth checker live in :mod:`contrastkit.data.shapes.grammar`. Every
record is a pure function of ``(seed, split, index)``: its scene comes from a
random stream named by those three, its wording from a second stream, so any
access order gives the same record.

Splits test compositional generalization. :func:`~contrastkit.data.shapes.layout.choose_held_out`
picks (from ``seed``) about a fifth of the shape-colour combinations. ``train``
and ``val`` scenes never contain a held-out combination (``val`` draws from
its own stream, so it is in-distribution but disjoint from ``train``); every
``test`` scene contains at least one. About 40% of the scenes hold a single
object; :meth:`SyntheticShapes.zeroshot_tasks` classifies those by shape,
colour and size (in ``test`` each such object has a held-out combination, so
zero-shot accuracy there measures recognition of unseen pairings). Each
object in ``meta["objects"]`` says whether its combination is ``held_out``.

Nothing is cached: a record is rebuilt on every access (about 0.3 ms on one
core, a tenth of it rendering), so memory stays flat for any ``size``,
DataLoader workers share nothing, and no caller sees another's edits.
"""

from __future__ import annotations

import random

from ..records import Record, ZeroShotTask
from .describe import describe_scene
from .grammar import COLOURS, SHAPES, SIZES, Description, Scene
from .layout import all_combos, choose_held_out, sample_scene
from .render import STYLES, render_scene

SPLITS: tuple[str, ...] = ("train", "val", "test")
MIN_IMAGE_SIZE = 32


SHAPE_TEMPLATES: list[str] = [
    "a photo of a {}.",
    "a {} shape.",
    "a drawing of a {}.",
    "a picture of a {}.",
    "a {} on a grey background.",
]
COLOUR_TEMPLATES: list[str] = [
    "a photo of a {} object.",
    "something {}.",
    "a {} shape.",
    "a drawing of a {} object.",
    "the colour {}.",
]
SIZE_TEMPLATES: list[str] = [
    "a photo of a {} object.",
    "a {} shape.",
    "a drawing of a {} thing.",
    "something {}.",
]


class SyntheticShapes:
    """One split of the shapes world; see the module docstring.

    ``negatives_per_category`` caps the hard negatives kept per category and record. ``style``
    ``clutter`` draws the same scenes on cluttered backgrounds (:mod:`~contrastkit.data.shapes.render`):
    the shifted domain ``synthetic:shapes-clutter``, whose records say exactly what the plain
    domain's do.
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 10000,
        seed: int = 0,
        image_size: int = 64,
        negatives_per_category: int = 3,
        style: str = "plain",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"synthetic:shapes: unknown split {split!r}; known: {', '.join(SPLITS)}")
        if size < 1:
            raise ValueError(f"synthetic:shapes: size must be at least 1, got {size}")
        if image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"synthetic:shapes: image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
        if negatives_per_category < 1:
            raise ValueError(
                f"synthetic:shapes: negatives_per_category must be at least 1, got {negatives_per_category}"
            )
        if style not in STYLES:
            raise ValueError(f"synthetic:shapes: unknown style {style!r}; known: {', '.join(STYLES)}")
        self.split, self.size, self.seed, self.image_size = split, size, seed, image_size
        self.style = style
        self.name = "synthetic:shapes" if style == "plain" else f"synthetic:shapes-{style}"
        self.negatives_per_category = negatives_per_category
        self.held_out: tuple[tuple[str, str], ...] = choose_held_out(seed)
        if split == "test":
            self._allowed, self._must_include = all_combos(), self.held_out
        else:
            self._allowed, self._must_include = [c for c in all_combos() if c not in self.held_out], ()

    def __len__(self) -> int:
        return self.size

    def _index(self, index: int) -> int:
        if not -self.size <= index < self.size:
            raise IndexError(f"synthetic:shapes {self.split}: index {index} out of range for size {self.size}")
        return index % self.size

    def _stream(self, index: int, purpose: str) -> random.Random:
        return random.Random(f"synthetic-shapes/{self.seed}/{self.split}/{index}/{purpose}")

    def scene(self, index: int) -> Scene:
        """The structured scene of record ``index``."""
        rng = self._stream(self._index(index), "scene")
        return sample_scene(rng, self.image_size, self._allowed, self._must_include)

    def describe(self, index: int) -> Description:
        """What record ``index`` says about its scene (captions, negatives, tags), without drawing it."""
        index = self._index(index)
        return describe_scene(self.scene(index), self._stream(index, "words"), self.negatives_per_category)

    def __getitem__(self, index: int) -> Record:
        index = self._index(index)
        scene = self.scene(index)
        words = self.describe(index)
        meta = scene.to_meta()
        meta["split"] = self.split
        for obj in meta["objects"]:
            obj["held_out"] = (obj["shape"], obj["colour"]) in self.held_out
        return Record(
            image=render_scene(scene, self.style, self._stream(index, "render")),
            captions=words.captions,
            neg_captions=words.neg_captions,
            tags=words.tags,
            neg_tags=words.neg_tags,
            rewrites=words.rewrites,
            key=f"shapes-{self.split}-{index:05d}"
            if self.style == "plain"
            else f"shapes-{self.style}-{self.split}-{index:05d}",
            meta=meta,
        )

    def zeroshot_tasks(self) -> list[ZeroShotTask]:
        """``shape``, ``colour`` and ``size`` classification over the single-object records."""
        scenes = (self.scene(i) for i in range(self.size))
        singles = [(i, s.objects[0]) for i, s in enumerate(scenes) if len(s.objects) == 1]
        return [
            ZeroShotTask(
                name,
                list(classes),
                list(templates),
                [i for i, _ in singles],
                [classes.index(getattr(obj, name)) for _, obj in singles],
            )
            for name, classes, templates in (
                ("shape", SHAPES, SHAPE_TEMPLATES),
                ("colour", COLOURS, COLOUR_TEMPLATES),
                ("size", SIZES, SIZE_TEMPLATES),
            )
        ]
