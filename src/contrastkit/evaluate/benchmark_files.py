"""Benchmark files read for evaluation: class names, templates, SugarCrepe / ARO sets.

- **Class names** (:func:`read_classnames`): UTF-8 text, one class per line
  (OpenAI's ImageNet class-name file works as is); blank lines are skipped.
  Line i names class i (for an image folder: the i-th sub-folder in sorted
  order, torchvision's ``ImageFolder`` convention).
- **Templates** (:func:`read_templates`): a built-in set name (``openai_imagenet``,
  ``simple``; :mod:`~contrastkit.evaluate.templates`), a text file with one
  template per line containing ``{}`` (or ``{c}``), or a JSON list of them.
- **SugarCrepe** (:func:`read_sugarcrepe`): JSON files of the release
  (``add_att.json``, ``replace_rel.json``, ...), each a dict
  ``id -> {"filename", "caption", "negative_caption"}``; the category is the
  file name without ``.json``. A directory means every ``*.json`` in it.
  Images are ``filename`` under ``images`` (COCO val2017 for the release).
- **ARO-style** sets (:func:`read_aro`): a JSON list (or JSON Lines) of items with
  an image (``image_path`` | ``image`` | ``filename``), a true caption
  (``true_caption`` | ``caption``), one or more false captions
  (``false_caption`` | ``negative_caption`` | ``false_captions``, a string or a
  list), a category (``category`` | ``relation_name`` (VG-Relation) |
  ``attributes`` (VG-Attribution, a list joined with ``_``), else the file name)
  and optionally a crop box ``bbox_x, bbox_y, bbox_w, bbox_h`` (ARO's
  Visual Genome items are scored on the box crop).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..data.records import Record
from .templates import TEMPLATE_SETS


def read_lines(path: str | Path, what: str) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"{what}: {path} has no non-empty line")
    return lines


def read_classnames(path: str | Path) -> list[str]:
    """Class names, one per line: line i names class i, so an empty line inside or a repeated name stops."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class names: {path} does not exist")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ValueError(f"class names: {path} has no non-empty line")
    empty = [n for n, line in enumerate(lines, 1) if not line]
    if empty:
        raise ValueError(
            f"class names: {path} line {empty[0]} is empty; line i names class i, so name the class or remove the line"
        )
    first: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        if line in first:
            raise ValueError(
                f"class names: {path}: {line!r} is on lines {first[line]} and {n}; give each class its own name"
            )
        first[line] = n
    return lines


def read_templates(spec: str | Path) -> list[str]:
    """A built-in template set by name, or a file (one template per line, or a JSON list)."""
    if str(spec) in TEMPLATE_SETS:
        return list(TEMPLATE_SETS[str(spec)])
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"templates: {spec} is neither a file nor a built-in set ({', '.join(TEMPLATE_SETS)})")
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise ValueError(f"templates: {path} must hold a JSON list of strings")
        templates = [t for t in data if t.strip()]
    else:
        templates = read_lines(path, "templates")
    bad = [t for t in templates if "{}" not in t and "{c}" not in t]
    if bad:
        raise ValueError(f"templates: {path}: {len(bad)} template(s) without a '{{}}' placeholder, e.g. {bad[0]!r}")
    return templates


# ----------------------------------------------------------------------------- compositional sets


@dataclass
class ChoiceItem:
    """An image, its true caption and one or more false ones; correct iff the true one scores highest."""

    image: Image.Image | str | Path
    caption: str
    negatives: list[str]
    category: str
    box: tuple[float, float, float, float] | None = None  # x, y, w, h crop
    key: str = ""


class ImageRef:
    """A zero-argument image loader (file, optionally cropped), picklable for DataLoader workers."""

    def __init__(self, image: Image.Image | str | Path, box: Sequence[float] | None = None, key: str = "") -> None:
        self.image = image
        self.box = tuple(float(v) for v in box) if box is not None else None
        self.key = key

    def __call__(self) -> Image.Image:
        img = Record(image=self.image, captions=[], key=self.key or str(self.image)).load_image()
        if self.box is not None:
            x, y, w, h = self.box
            img = img.crop((int(x), int(y), int(x + w), int(y + h)))
        return img


def _json_files(path: str | Path, what: str) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise FileNotFoundError(f"{what}: no .json file in {path}")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    return [path]


def read_sugarcrepe(paths: str | Path | Sequence[str | Path], images: str | Path) -> list[ChoiceItem]:
    """SugarCrepe items of the given files / folders; category = file stem."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    root = Path(images)
    items: list[ChoiceItem] = []
    for path in (f for p in paths for f in _json_files(p, "--sugarcrepe")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(
                f"--sugarcrepe: {path} must be a JSON object id -> {{filename, caption, negative_caption}}"
            )
        for key, entry in data.items():
            missing = [f for f in ("filename", "caption", "negative_caption") if f not in entry]
            if missing:
                raise ValueError(f"--sugarcrepe: {path} item {key!r} lacks {', '.join(missing)}")
            items.append(
                ChoiceItem(
                    root / entry["filename"],
                    entry["caption"],
                    [entry["negative_caption"]],
                    path.stem,
                    key=f"{path.stem}/{key}",
                )
            )
    return items


def _first(entry: dict[str, Any], names: Sequence[str]) -> Any:
    for name in names:
        if name in entry and entry[name] is not None:
            return entry[name]
    return None


def read_aro(paths: str | Path | Sequence[str | Path], images: str | Path) -> list[ChoiceItem]:
    """ARO-style items (VG-Relation, VG-Attribution or any set in the format of the module docstring)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    root = Path(images)
    items: list[ChoiceItem] = []
    for path in (Path(p) for p in paths):
        if not path.is_file():
            raise FileNotFoundError(f"--aro: {path} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
        if isinstance(data, dict):
            data = list(data.values())
        for i, entry in enumerate(data):
            image = _first(entry, ("image_path", "image", "filename"))
            caption = _first(entry, ("true_caption", "caption"))
            negatives = _first(entry, ("false_caption", "negative_caption", "false_captions"))
            if image is None or caption is None or negatives is None:
                raise ValueError(f"--aro: {path} item {i} needs an image, a true caption and a false caption")
            if isinstance(negatives, str):
                negatives = [negatives]
            category = _first(entry, ("category", "relation_name"))
            if category is None and isinstance(entry.get("attributes"), list):
                category = "_".join(str(a) for a in entry["attributes"])
            box = None
            if all(k in entry for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")):
                box = (entry["bbox_x"], entry["bbox_y"], entry["bbox_w"], entry["bbox_h"])
            items.append(
                ChoiceItem(
                    root / image,
                    str(caption),
                    [str(n) for n in negatives],
                    str(category if category is not None else path.stem),
                    box=box,
                    key=f"{path.stem}/{i}",
                )
            )
    return items


# ----------------------------------------------------------------------------- data
