"""Data specs -> datasets.

A spec is a string naming a source: ``synthetic:shapes`` is the built-in
world. Each source yields :class:`~contrastkit.data.records.Record` objects
for a split.
"""
from __future__ import annotations

from ..config import DataConfig
from .records import Dataset

SOURCES = ("synthetic:shapes",)


def open_source(spec: str, split: str, cfg: DataConfig) -> Dataset:
    """Open ``split`` (train | val | test) of the source named by ``spec``."""
    if spec == "synthetic:shapes":
        from .synthetic import SyntheticShapes

        size = cfg.train_size if split == "train" else cfg.eval_size
        return SyntheticShapes(split=split, size=size, seed=cfg.seed, image_size=cfg.image_size)
    raise ValueError(f"data.source: unknown source {spec!r}; available: {', '.join(SOURCES)}")
