"""Sampling scenes of the shapes world: the held-out shape-colour combinations and the object layout."""

from __future__ import annotations

import random
from collections.abc import Sequence

from .grammar import (
    COLOURS,
    GAP_FRACTION,
    HELD_OUT_FRACTION,
    MARGIN,
    OBJECT_COUNT_WEIGHTS,
    RADIUS_FRACTION,
    SHAPES,
    SIZES,
    Combo,
    Scene,
    SceneObject,
)


def all_combos() -> list[Combo]:
    return [(s, c) for s in SHAPES for c in COLOURS]


def choose_held_out(seed: int) -> tuple[Combo, ...]:
    """About :data:`HELD_OUT_FRACTION` of all shape-colour combos, spread evenly.

    No shape and no colour loses more than its share (rounded up), so every
    shape and every colour keeps most of its combos in training.
    """
    rng = random.Random(f"synthetic-shapes/{seed}/held-out")
    combos = all_combos()
    n = round(HELD_OUT_FRACTION * len(combos))
    per_shape, per_colour = -(-n // len(SHAPES)), -(-n // len(COLOURS))
    rng.shuffle(combos)
    chosen: list[Combo] = []
    for shape, colour in combos:
        if len(chosen) == n:
            break
        if sum(s == shape for s, _ in chosen) < per_shape and sum(c == colour for _, c in chosen) < per_colour:
            chosen.append((shape, colour))
    return tuple(sorted(chosen))


def _place(rng: random.Random, radii: Sequence[float], image_size: int) -> tuple[str, list[tuple[float, float]]]:
    """Centres for objects of the given radii: a layout and one (x, y) per object, in order."""
    lo, hi = MARGIN, image_size - MARGIN
    if len(radii) == 1:
        r = radii[0]
        return "single", [(rng.uniform(lo + r, hi - r), rng.uniform(lo + r, hi - r))]
    layout = rng.choice(("row", "column"))
    gap = GAP_FRACTION * image_size
    slack = (hi - lo) - sum(2 * r for r in radii) - gap * (len(radii) - 1)
    if slack < 0:
        raise ValueError(f"{len(radii)} objects do not fit side by side in a {image_size}px image")
    cuts = sorted(rng.uniform(0, slack) for _ in radii)
    spare = [b - a for a, b in zip([0.0, *cuts], cuts)]  # free space before each object
    along, pos = [], lo
    for r, free in zip(radii, spare):
        pos += free
        along.append(pos + r)
        pos += 2 * r + gap
    # Across the axis the centres stay within +-jitter of one line: boxes overlap.
    jitter = 0.4 * min(radii)
    reach = max(radii) + jitter
    line = rng.uniform(lo + reach, hi - reach)
    across = [line + rng.uniform(-jitter, jitter) for _ in radii]
    if layout == "row":
        return layout, list(zip(along, across))
    return layout, list(zip(across, along))


def sample_scene(
    rng: random.Random, image_size: int, allowed: Sequence[Combo], must_include: Sequence[Combo] = ()
) -> Scene:
    """A random scene: combos from ``allowed`` and, if given, one from ``must_include``."""
    counts = list(OBJECT_COUNT_WEIGHTS)
    n = rng.choices(counts, weights=[OBJECT_COUNT_WEIGHTS[k] for k in counts])[0]
    combos: list[Combo] = [rng.choice(must_include)] if must_include else []
    while len(combos) < n:
        combo = rng.choice(allowed)
        if combo not in combos:
            combos.append(combo)
    rng.shuffle(combos)
    sizes = [rng.choice(SIZES) for _ in combos]
    radii = [RADIUS_FRACTION[s] * image_size for s in sizes]
    layout, centres = _place(rng, radii, image_size)
    objects = tuple(
        SceneObject(shape, colour, size, x, y, r)
        for (shape, colour), size, r, (x, y) in zip(combos, sizes, radii, centres)
    )
    return Scene(objects, layout, image_size)
