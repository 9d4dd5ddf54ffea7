"""Drawing a shapes-world scene with PIL: flat colours, no antialiasing.

Three renderings of the same scene (the domains ``synthetic:shapes``, ``synthetic:shapes-clutter`` and
``synthetic:shapes-dark``):

- ``plain``: the objects on a flat grey background;
- ``clutter``: the same objects, pixel for pixel, on a cluttered background: a random dark-to-light
  gradient in muted earth tones, per-pixel noise and a few thin lines in those tones. No background
  pixel takes an object colour's hue at full saturation and nothing in the clutter is a shape of
  the world, so every caption of the scene stays true; only the image statistics shift.
- ``dark``: the plain image with every channel scaled by ``DARK_GAIN`` (an underexposed photo): the
  colours keep their hue, so the captions stay true. The worked example of residual directions
  (RAVE) moves dark images towards plain ones.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .grammar import Scene

BACKGROUND: tuple[int, int, int] = (120, 120, 120)
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 90, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "cyan": (40, 210, 220),
}
MIN_IMAGE_SIZE = 32
STYLES = ("plain", "clutter", "dark")
DARK_GAIN = 0.35  # brightness of the dark style relative to the plain one
# Muted earth tones of the clutter: low saturation, far from every object colour.
CLUTTER_TONES: tuple[tuple[int, int, int], ...] = (
    (70, 62, 55),
    (110, 100, 88),
    (150, 140, 125),
    (90, 95, 85),
    (130, 120, 110),
    (60, 66, 72),
)
CLUTTER_NOISE = 10.0  # sd of the per-pixel noise, in 0-255 units


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    out = []
    for k in range(2 * points):
        angle = -math.pi / 2 + k * math.pi / points
        radius = 1.0 if k % 2 == 0 else inner
        out.append((radius * math.cos(angle), radius * math.sin(angle)))
    return out


def _cross(arm: float = 0.32, reach: float = 0.95) -> list[tuple[float, float]]:
    a, r = arm, reach
    return [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a)]


# Outlines in units of the object's radius (y points down); the circle is drawn as an ellipse.
UNIT_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)],
    "triangle": [(0.0, -1.0), (0.95, 0.8), (-0.95, 0.8)],
    "star": _star(),
    "cross": _cross(),
    "diamond": [(0.0, -1.0), (0.7, 0.0), (0.0, 1.0), (-0.7, 0.0)],
}


def clutter_background(size: int, rng: random.Random) -> Image.Image:
    """A ``size`` x ``size`` cluttered background drawn from ``rng`` (see the module docstring)."""
    top, bottom = rng.sample(CLUTTER_TONES, 2)
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    gradient = (1 - t) * np.array(top, dtype=np.float64) + t * np.array(bottom, dtype=np.float64)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0.0, CLUTTER_NOISE, (size, size, 3))
    pixels = np.clip(np.broadcast_to(gradient, (size, size, 3)) + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 6)):
        x0, y0, x1, y1 = (rng.uniform(0, size) for _ in range(4))
        draw.line((x0, y0, x1, y1), fill=rng.choice(CLUTTER_TONES), width=1)
    return image


def render_scene(scene: Scene, style: str = "plain", rng: random.Random | None = None) -> Image.Image:
    """Draw ``scene`` as an RGB image (no antialiasing: every object pixel has its exact colour).

    ``style`` is ``plain``, ``clutter`` or ``dark``; the clutter is drawn from ``rng`` (needed for ``clutter``).
    """
    if style == "dark":
        return Image.eval(render_scene(scene, "plain"), lambda v: round(v * DARK_GAIN))
    if style == "plain":
        image = Image.new("RGB", (scene.image_size, scene.image_size), BACKGROUND)
    elif style == "clutter":
        if rng is None:
            raise ValueError("render_scene: the clutter style needs an rng")
        image = clutter_background(scene.image_size, rng)
    else:
        raise ValueError(f"render_scene: unknown style {style!r}; choose one of {', '.join(STYLES)}")
    _draw_objects(scene, ImageDraw.Draw(image), [COLOUR_RGB[obj.colour] for obj in scene.objects])
    return image


def object_map(scene: Scene) -> Image.Image:
    """Which object each pixel shows: an ``L`` image, 0 for background and i + 1 for ``scene.objects[i]``.

    Drawn with the same primitives, in the same order, as :func:`render_scene` (a later object covers an
    earlier one), so it is the exact segmentation of every rendering of the scene.
    """
    image = Image.new("L", (scene.image_size, scene.image_size), 0)
    _draw_objects(scene, ImageDraw.Draw(image), list(range(1, len(scene.objects) + 1)))
    return image


def _draw_objects(scene: Scene, draw: ImageDraw.ImageDraw, fills: Sequence[int | tuple[int, int, int]]) -> None:
    for obj, fill in zip(scene.objects, fills):
        if obj.shape == "circle":
            draw.ellipse(obj.bbox, fill=fill)
        else:
            r = obj.radius
            draw.polygon([(obj.x + r * u, obj.y + r * v) for u, v in UNIT_POLYGONS[obj.shape]], fill=fill)
