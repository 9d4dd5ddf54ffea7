"""Start-up check: can this data and model provide every input the recipe's terms read?

A recipe asking for a term whose inputs cannot be provided stops before training with an
error naming the term, the missing input and the fix. What each input needs comes from the
field table (``encoded.py``): a recipe setting above 0, a record attribute some records have,
a model attribute; engine-kept inputs (cluster ids) need a ``clusters`` section.
"""

from __future__ import annotations

import operator

from ..config import Config
from ..data.records import Dataset
from ..encoded import FIELDS
from ..models.dual_encoder import DualEncoder
from ..objectives import Objective
from .clusters import CLUSTER_FIELDS

EMPTY: tuple[object, ...] = (None, [], {}, "")


def _records_have(dataset: Dataset, attr: str, scan: int = 50) -> bool:
    return any(getattr(dataset[i], attr) not in EMPTY for i in range(min(scan, len(dataset))))


def _lookup(root: object, dotted: str) -> object:
    """``root.a.b`` for ``"a.b"``; None when any part is missing."""
    try:
        return operator.attrgetter(dotted)(root)
    except AttributeError:
        return None


def why_missing(name: str, cfg: Config, dataset: Dataset, model: DualEncoder) -> str | None:
    """Why input ``name`` cannot be provided, or None when it can."""
    if name in CLUSTER_FIELDS:
        if not cfg.clusters.sizes:  # (streamed data is refused where the cluster table is built)
            return "the recipe has no clusters; add a clusters section, e.g. clusters: {sizes: [100, 300], every: 500}"
        return None
    spec = FIELDS.get(name)
    if name == "image_tokens" and getattr(dataset, "text_pairs", False):
        return f"the data ({cfg.data.source}) is text pairs: there are no image cells"
    if name == "view_boxes" and cfg.data.views and cfg.data.view_image_augment != "pixpro_crop":
        return (
            f"data.view_image_augment is {cfg.data.view_image_augment}, whose views record no crop boxes; "
            "set data.view_image_augment: pixpro_crop"
        )
    if spec is None:
        return f"{name!r} is not something the engine computes (extras keys must be supplied by your own training loop)"
    if spec.setting and not _lookup(cfg, spec.setting):
        return f"{spec.setting} is 0; {spec.fix}"
    if spec.record and not _records_have(dataset, spec.record):
        hint = "" if spec.setting else f"; {spec.fix}"
        return f"the data ({cfg.data.source}) has no {spec.describe}{hint}"
    if spec.model_attr and _lookup(model, spec.model_attr) is None:
        return f"the model has no {spec.model_attr}; {spec.fix}"
    return None


def missing_inputs(objective: Objective, cfg: Config, dataset: Dataset, model: DualEncoder) -> list[str]:
    """One message per (term, field) that cannot be provided; empty when all is well."""
    problems = []
    for label, term in zip(objective.labels, objective.iter_terms()):
        for name in term.requires:
            reason = why_missing(name, cfg, dataset, model)
            if reason:
                problems.append(f"objective term {label!r} needs {name}: {reason}")
    return problems


def mismatch(cfg: Config, dataset: Dataset) -> str | None:
    """Why the data and the model's kind do not go together (text pairs need a text model), or None."""
    text_pairs = bool(getattr(dataset, "text_pairs", False))
    if text_pairs and cfg.model.image_tower != "none":
        return f"data.source {cfg.data.source} is text pairs, which train a text model: set model.image_tower=none"
    if not text_pairs and cfg.model.image_tower == "none":
        return (
            f"model.image_tower=none makes a text model, which trains on text pairs, but data.source "
            f"{cfg.data.source} has images: use pairs:FILE or pairs:shapes, or name an image tower"
        )
    return None
