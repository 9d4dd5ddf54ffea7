"""Drawing a shapes-world scene with PIL: flat colours on a grey background, no antialiasing."""

from __future__ import annotations

import math

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


def render_scene(scene: Scene) -> Image.Image:
    """Draw ``scene`` as an RGB image (no antialiasing: every object pixel has its exact colour)."""
    image = Image.new("RGB", (scene.image_size, scene.image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        fill = COLOUR_RGB[obj.colour]
        if obj.shape == "circle":
            draw.ellipse(obj.bbox, fill=fill)
        else:
            r = obj.radius
            draw.polygon([(obj.x + r * u, obj.y + r * v) for u, v in UNIT_POLYGONS[obj.shape]], fill=fill)
    return image
