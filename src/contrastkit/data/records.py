"""Records and the dataset interface every source implements.

A source yields :class:`Record` objects; transforms and collate turn them into
tensors. Evaluation reads the same records (captions for retrieval, negative
captions for compositional accuracy, zero-shot tasks for classification).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image


@dataclass
class Record:
    """One image with its text.

    ``image`` is a PIL image or a path (opened lazily by :meth:`load_image`).
    ``captions``: every correct caption (at least one). ``neg_captions``: hard
    negative captions by category, each false for the image. ``tags`` /
    ``neg_tags``: short tags true / false for the image. ``rewrites``:
    paraphrases of the first caption (LaCLIP). ``label``: class id.
    """

    image: Image.Image | str | Path
    captions: list[str]
    neg_captions: dict[str, list[str]] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    neg_tags: list[str] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)
    label: int | None = None
    key: str = ""  # a name for errors and exports (file name, row number)
    meta: dict[str, Any] = field(default_factory=dict)

    def load_image(self) -> Image.Image:
        if isinstance(self.image, Image.Image):
            return self.image
        path = Path(self.image)
        if not path.exists():
            raise FileNotFoundError(f"record {self.key or path}: image file {path} does not exist")
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except OSError as err:
            raise ValueError(f"record {self.key or path}: cannot read image {path}: {err}") from None


@dataclass
class ZeroShotTask:
    """A classification task over some records of a dataset.

    ``indices[i]`` is a record index and ``labels[i]`` its class in ``classnames``.
    Every template contains ``{}`` (or ``{c}``) for the class name.
    """

    name: str
    classnames: list[str]
    templates: list[str]
    indices: list[int]
    labels: list[int]


@runtime_checkable
class Dataset(Protocol):
    """What training and evaluation need from a source."""

    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Record: ...

    def zeroshot_tasks(self) -> Sequence[ZeroShotTask]:
        """Classification tasks this dataset defines (may be empty)."""
        ...
