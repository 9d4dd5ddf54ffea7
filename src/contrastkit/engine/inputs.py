"""Start-up check: can this data and model provide every input the recipe's terms read?

A recipe asking for a term whose inputs cannot be provided stops before
training with an error naming the term, the missing input and the fix.
"""
from __future__ import annotations

from ..config import Config
from ..data.records import Dataset
from ..encoded import ENCODED_FIELDS
from ..models.dual_encoder import DualEncoder
from ..objectives import Objective
from .clusters import CLUSTER_FIELDS
from .encode import REFERENCE_FIELDS, TEACHER_FIELDS, VIEW_FIELDS

ALWAYS = {"image", "text", "logit_scale", "image_features", "text_features", "caption_tokens", "group_ids",
          "pad_token_id"} | TEACHER_FIELDS | REFERENCE_FIELDS


def _records_have(dataset: Dataset, attr: str, scan: int = 50) -> bool:
    return any(getattr(dataset[i], attr) for i in range(min(scan, len(dataset))))


def missing_inputs(objective: Objective, cfg: Config, dataset: Dataset, model: DualEncoder) -> list[str]:
    """One message per (term, field) that cannot be provided; empty when all is well."""
    problems: list[str] = []
    for label, term in zip(objective.labels, objective.terms):
        for field in term.requires:
            reason = None
            if field in ALWAYS:
                continue
            if field in CLUSTER_FIELDS:
                if not cfg.clusters.sizes:  # (streamed data is refused where the cluster table is built)
                    reason = ("the recipe has no clusters; add a clusters section, e.g. "
                              "clusters: {sizes: [100, 300], every: 500}")
            elif field not in ENCODED_FIELDS:
                reason = (f"{field!r} is not something the engine computes (extras keys must be supplied "
                          "by your own training loop)")
            elif field in ("neg_text", "neg_text_mask"):
                if cfg.data.neg_per_image == 0:
                    reason = "data.neg_per_image is 0; set it to the number of negatives per image (e.g. 4)"
                elif not _records_have(dataset, "neg_captions"):
                    reason = f"the data ({cfg.data.source}) has no hard-negative captions"
            elif field in VIEW_FIELDS:
                if cfg.data.views == 0:
                    reason = "data.views is 0; set the number of extra augmented views (e.g. 2)"
            elif field == "tags":
                if not _records_have(dataset, "tags"):
                    reason = f"the data ({cfg.data.source}) has no tags"
            elif field == "labels":
                reason = "class labels are not wired into training batches yet"
            elif field == "image_tokens":
                if not hasattr(model.image_tower, "forward_tokens"):
                    reason = f"the image tower {cfg.model.image_tower} exposes no cell features"
            elif field == "logit_bias":
                if model.logit_bias is None:
                    reason = "the model has no bias; set model.logit_bias_init (e.g. -10)"
            if reason:
                problems.append(f"objective term {label!r} needs {field}: {reason}")
    return problems
