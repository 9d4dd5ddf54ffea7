"""Image and text augmentations for training views.

Image presets (torchvision v2; normalisation comes from the tower):
- ``none``: resize only.
- ``clip``: open_clip's default train transform, RandomResizedCrop scale 0.9-1, no flip.
- ``cl2l_weak``: RandomResizedCrop scale 0.5-1 (CL2L / LaCLIP weak view).
- ``cl2l_strong``: RandomResizedCrop 0.08-1, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2,
  Gaussian blur p 0.5, horizontal flip (CL2L strong view, after SimCLR).
- ``shapes_safe``: crop 0.85-1 and brightness/contrast jitter only — no flip (it would swap left/right
  relations) and no hue change (it would falsify colour words); for the synthetic world.
- ``simclr``: SimCLR's strong augmentation (Chen et al. 2020, colour strength 1): RandomResizedCrop
  0.08-1, horizontal flip, ColorJitter(0.8, 0.8, 0.8, 0.2) p 0.8, grayscale p 0.2, Gaussian blur p 0.5.
  Two strong views per image: ``data.views: 2`` with ``data.view_image_augment: simclr``.
- ``pixpro_crop``: PixPro's crop geometry (Xie et al. 2021): RandomResizedCrop scale 0.35-1, horizontal
  flip p 0.5, brightness/contrast jitter 0.2; each view also records its box in the source image
  (:class:`BoxedCrop`), which the dense term ``pixpro`` reads as ``view_boxes``. The scale floor is
  higher than PixPro's 0.08 because the built-in world's cells are 16 pixels of a 64-pixel image. The
  flip makes left/right words of a view's caption false: the views are for image-only (dense) terms.

The evaluation transform is always the tower's own (resize + centre crop + its normalisation).

Text augmentations (Wei & Zou 2019, EDA; CL2L's caption views), seeded by the caller's ``random.Random``:
- ``stopword_drop``: drop each stop word with probability 0.8.
- ``eda``: ``stopword_drop`` plus one operation: random swap (0.4), random deletion (0.2) or synonym
  replacement (0.4) from a lexicon; with no lexicon entry for any word the synonym op is skipped and
  counted in ``TextAugment.skipped_synonyms`` (training batches carry the count as
  ``batch["synonym_skipped"]``, one count per row). The lexicon is ``data.synonyms``: a JSON file mapping a
  word to a list of synonyms, or ``builtin`` for the small packaged one (:mod:`contrastkit.data.shapes.lexicon`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import RandomResizedCrop, v2
from torchvision.transforms import functional as TF

IMAGE_PRESETS = ("none", "clip", "cl2l_weak", "cl2l_strong", "shapes_safe", "simclr", "pixpro_crop")
TEXT_AUGMENTS = ("none", "stopword_drop", "eda")

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "and",
        "or",
        "but",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "it",
        "its",
        "as",
        "into",
        "onto",
        "over",
        "under",
        "than",
        "then",
        "so",
        "such",
        "very",
        "some",
        "any",
        "each",
    ]
)


Box = tuple[float, float, float, float]


class BoxedCrop:
    """A random resized crop (and flip, and light jitter) that says where the view came from.

    ``boxed(img)`` returns the view and its box (x0, y0, x1, y1): the crop's corners as fractions of the
    source image's width and height. A horizontally flipped view has x0 > x1 (PixPro's convention), so
    cell j of G along x sits at x0 + (j + 0.5) (x1 - x0) / G in the source either way.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.35, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: float = 0.5,
        jitter: float = 0.2,
    ) -> None:
        self.size, self.scale, self.ratio, self.flip = size, scale, ratio, flip
        self.jitter = v2.ColorJitter(brightness=jitter, contrast=jitter) if jitter else None

    def boxed(self, img: Image.Image) -> tuple[Image.Image, Box]:
        top, left, h, w = RandomResizedCrop.get_params(img, list(self.scale), list(self.ratio))
        width, height = img.size
        box = (left / width, top / height, (left + w) / width, (top + h) / height)
        view = TF.resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)
        if torch.rand(()) < self.flip:
            view, box = TF.hflip(view), (box[2], box[1], box[0], box[3])
        return (self.jitter(view) if self.jitter else view), box

    def __call__(self, img: Image.Image) -> Image.Image:
        return self.boxed(img)[0]


def image_augment(preset: str, size: int) -> Callable[[Image.Image], Image.Image]:
    """A PIL -> PIL augmentation; the tower's own transform (resize, normalise) runs after it."""
    if preset == "none":
        return lambda img: img
    if preset == "pixpro_crop":
        return BoxedCrop(size)
    if preset == "clip":
        ops = [v2.RandomResizedCrop(size, scale=(0.9, 1.0), antialias=True)]
    elif preset == "cl2l_weak":
        ops = [v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True)]
    elif preset == "cl2l_strong":
        ops = [
            v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel_size=max(3, (size // 10) | 1))], p=0.5),
            v2.RandomHorizontalFlip(),
        ]
    elif preset == "simclr":
        ops = [
            v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel_size=max(3, (size // 10) | 1), sigma=(0.1, 2.0))], p=0.5),
        ]
    elif preset == "shapes_safe":
        ops = [
            v2.RandomResizedCrop(size, scale=(0.85, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.ColorJitter(brightness=0.2, contrast=0.2),
        ]
    else:
        raise ValueError(f"image augmentation preset {preset!r} is unknown; choose one of {', '.join(IMAGE_PRESETS)}")
    return v2.Compose(ops)


def load_lexicon(spec: str | Path | None) -> dict[str, list[str]]:
    """The synonym lexicon named by ``data.synonyms``: "" (none), ``builtin``, or a JSON file word -> [words]."""
    if not spec:
        return {}
    if str(spec) == "builtin":
        from .shapes.lexicon import LEXICON

        return {k: list(v) for k, v in LEXICON.items()}
    path = Path(spec)
    if not path.is_file():
        raise ValueError(
            f"data.synonyms: lexicon file {path} does not exist (a JSON object word -> list of synonyms, or 'builtin')"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeError) as err:
        raise ValueError(f"data.synonyms: {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(w, str) for w in v) for v in data.values()
    ):
        raise ValueError(f"data.synonyms: {path} must be a JSON object mapping each word to a list of strings")
    return {str(k): list(v) for k, v in data.items()}


class TextAugment:
    """Seeded caption augmentation (``none``, ``stopword_drop``, ``eda``)."""

    def __init__(
        self, kind: str = "none", lexicon: Mapping[str, list[str]] | None = None, drop_prob: float = 0.8
    ) -> None:
        if kind not in TEXT_AUGMENTS:
            raise ValueError(f"text augmentation {kind!r} is unknown; choose one of {', '.join(TEXT_AUGMENTS)}")
        self.kind = kind
        self.lexicon = {k.lower(): list(v) for k, v in (lexicon or {}).items() if v}
        self.drop_prob = drop_prob
        self.skipped_synonyms = 0

    def _drop_stopwords(self, words: list[str], rng: random.Random) -> list[str]:
        kept = [w for w in words if w.lower() not in STOPWORDS or rng.random() >= self.drop_prob]
        return kept or words

    def __call__(self, text: str, rng: random.Random) -> str:
        if self.kind == "none":
            return text
        words = self._drop_stopwords(text.split(), rng)
        if self.kind == "eda" and len(words) > 1:
            op = rng.choices(["synonym", "swap", "delete"], weights=[0.4, 0.4, 0.2])[0]
            if op == "synonym":
                candidates = [i for i, w in enumerate(words) if w.lower() in self.lexicon]
                if candidates:
                    i = rng.choice(candidates)
                    words[i] = rng.choice(self.lexicon[words[i].lower()])
                else:
                    self.skipped_synonyms += 1
            elif op == "swap":
                i, j = rng.sample(range(len(words)), 2)
                words[i], words[j] = words[j], words[i]
            else:
                del words[rng.randrange(len(words))]
        return " ".join(words)


def seeded(fn: Callable[[Image.Image], Image.Image], seed: int) -> Callable[[Image.Image], Image.Image]:
    """Run a torch-random transform with its own seed, leaving the global RNG untouched."""

    def run(img: Image.Image) -> Image.Image:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return fn(img)

    return run


def to_tensor_views(
    img: Image.Image,
    augment: Callable[[Image.Image], Image.Image],
    finish: Callable[[Image.Image], Tensor],
    seeds: list[int],
) -> Tensor:
    """V augmented views of one image as a V x C x H x W tensor, each view seeded."""
    return torch.stack([finish(seeded(augment, s)(img)) for s in seeds])


def boxed_views(
    img: Image.Image, crop: BoxedCrop, finish: Callable[[Image.Image], Tensor], seeds: list[int]
) -> tuple[Tensor, Tensor]:
    """V seeded crops of one image (V x C x H x W) and their boxes in the source (V x 4)."""
    views, boxes = [], []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            view, box = crop.boxed(img)
        views.append(finish(view))
        boxes.append(box)
    return torch.stack(views), torch.tensor(boxes, dtype=torch.float32)
