"""The `Encoded` batch: everything an objective term may read, each field with its metadata.

Every tensor here is *global*: the engine gathers it across ranks (gradient
flowing to the local shard) before any term sees it, and ``local_rows`` says
which rows this process owns. Terms are pure functions of this object and never
call ``torch.distributed`` themselves.

The field table
---------------
Each field declares a :class:`FieldSpec` where it is declared (``FIELDS`` collects
them). The rest of the engine reads that one table:

- ``engine/encode.py`` computes only the fields the objective requires; fields whose
  ``producer`` is ``"data"`` are copied from the collated batch's row ``batch_key``;
- ``engine/step.py`` caches and replays the student fields that carry gradient
  (exact accumulation) and re-reads the unbatched student fields (temperature, bias)
  live from the model;
- ``distributed.py`` gathers every batched field along its ``batch_dim``;
- ``engine/preflight.py`` checks, before the first step, that the data and model can
  provide every required field (``setting``, ``record``, ``model_attr``);
- ``engine/setup.py`` builds the training set with only the per-record work the
  required fields need (views, hard negatives, the ``batch_key`` rows).

Adding a field a new term needs: CONTRIBUTING.md ("Add an Encoded field").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

Producer = Literal["student", "teacher", "reference", "data", "engine"]


@dataclass(frozen=True)
class FieldSpec:
    """What the engine needs to know about one :class:`Encoded` field.

    ``producer``: who computes it — the trained model (``student``), its EMA ``teacher``,
    the frozen initial model (``reference``), the data pipeline (``data``, copied from
    batch row ``batch_key``) or the engine after the gather (``engine``).
    ``batched``: it has a row per sample along ``batch_dim`` (gathered across ranks,
    concatenated across micro-batches); unbatched fields are scalars or constants.
    ``grad``: it carries gradient to the student's parameters.
    ``setting``: the recipe key that must be above 0 for the data to provide it;
    ``record``: the :class:`~contrastkit.data.records.Record` attribute some records must
    have (``describe`` names it for people); ``model_attr``: a dotted attribute of the
    model that must exist and not be None. ``fix`` says what to change when it is missing.
    """

    producer: Producer
    batched: bool = True
    batch_dim: int = 0
    grad: bool = False
    setting: str = ""
    record: str = ""
    describe: str = ""
    batch_key: str = ""
    model_attr: str = ""
    fix: str = ""


def _declare(spec: FieldSpec, default: Any = None) -> Any:
    return field(default=default, metadata={"spec": spec})


def _required(spec: FieldSpec) -> Any:
    return field(metadata={"spec": spec})


_STUDENT = FieldSpec("student", grad=True)
_VIEWS = FieldSpec(
    "student", batch_dim=1, grad=True, setting="data.views", fix="set the number of extra augmented views (e.g. 2)"
)


_CELLS_FIX = "use an image tower that exposes cell features (tiny_cnn, open_clip ViTs)"


def _view_cells(producer: Producer) -> FieldSpec:
    """The spec of the extra views' cell features (V x B x N x F) from the student or its EMA teacher."""
    return FieldSpec(
        producer,
        batch_dim=1,
        grad=producer == "student",
        setting="data.views",
        model_attr="image_tower.forward_tokens",
        fix="set data.views: 2 and use an image tower that exposes cell features (tiny_cnn, open_clip ViTs)",
    )


def _negatives(producer: Producer, grad: bool = False) -> FieldSpec:
    """The spec of a field computed from the records' hard-negative captions."""
    return FieldSpec(
        producer,
        grad=grad,
        setting="data.neg_per_image",
        record="neg_captions",
        describe="hard-negative captions",
        fix="set it to the number of negatives per image (e.g. 4)",
    )


@dataclass
class Encoded:
    """A batch after the towers.

    Shapes: B rows (global batch), D embedding dims, F raw feature dims,
    V extra views, K hard negatives per row, L tokens, N cells, T tags.
    """

    image: Tensor = _required(_STUDENT)  # B x D, L2-normalised image embeddings
    text: Tensor = _required(_STUDENT)  # B x D, L2-normalised text embeddings
    logit_scale: Tensor = _required(FieldSpec("student", batched=False, grad=True))  # scalar t = 1/tau
    logit_bias: Tensor | None = _declare(
        FieldSpec(  # scalar b for sigmoid losses
            "student", batched=False, grad=True, model_attr="logit_bias", fix="set model.logit_bias_init (e.g. -10)"
        )
    )
    # Raw pooled tower outputs before the shared projection (B x F): terms with
    # their own projector heads (cl2l_local, barlip, siamlip, hq_tags, ...) read these.
    image_features: Tensor | None = _declare(_STUDENT)
    text_features: Tensor | None = _declare(_STUDENT)
    # Extra augmented views: V x B x D (normalised) and V x B x F (raw).
    image_views: Tensor | None = _declare(_VIEWS)
    text_views: Tensor | None = _declare(_VIEWS)
    image_view_features: Tensor | None = _declare(_VIEWS)
    text_view_features: Tensor | None = _declare(_VIEWS)
    # Hard-negative captions: B x K x D (normalised); neg_text_mask B x K is True where valid.
    neg_text: Tensor | None = _declare(_negatives("student", grad=True))
    neg_text_mask: Tensor | None = _declare(_negatives("student"))
    # Teacher (EMA of the student) and frozen reference (initial model) embeddings.
    teacher_image: Tensor | None = _declare(FieldSpec("teacher"))
    teacher_text: Tensor | None = _declare(FieldSpec("teacher"))
    teacher_neg_text: Tensor | None = _declare(_negatives("teacher"))
    teacher_logit_scale: Tensor | None = _declare(FieldSpec("teacher", batched=False))
    reference_image: Tensor | None = _declare(FieldSpec("reference"))
    reference_text: Tensor | None = _declare(FieldSpec("reference"))
    reference_logit_scale: Tensor | None = _declare(FieldSpec("reference", batched=False))
    # Supervision from the data.
    tags: Tensor | None = _declare(
        FieldSpec(  # B x T in {1 positive, 0 negative, -1 unknown}
            "data",
            record="tags",
            describe="tags",
            batch_key="tag_targets",
            fix="give the data a tag column (data.tag_column)",
        )
    )
    group_ids: Tensor | None = _declare(FieldSpec("data", batch_key="index"))  # B ints: equal ids are positives
    labels: Tensor | None = _declare(
        FieldSpec(  # B class ids (-1: the record has none)
            "data",
            record="label",
            describe="class labels",
            batch_key="labels",
            fix="set data.label_column, or use folder: data (one sub-folder per class)",
        )
    )
    # Tokens and cells.
    caption_tokens: Tensor | None = _declare(FieldSpec("student"))  # B x L token ids (captioning terms)
    image_tokens: Tensor | None = _declare(
        FieldSpec(  # B x N x F cell features (captioning / dense terms)
            "student",
            grad=True,
            model_attr="image_tower.forward_tokens",
            fix="use an image tower that exposes cell features (tiny_cnn, open_clip ViTs)",
        )
    )
    # Masked image modelling: the student's cells of the image with some cells hidden (B x N x F), which
    # cells were hidden (B x N, True = masked; engine/cell_masks.py), the EMA teacher's cells of the whole image.
    masked_image_tokens: Tensor | None = _declare(
        FieldSpec("student", grad=True, model_attr="image_tower.forward_tokens", fix=_CELLS_FIX)
    )
    cell_mask: Tensor | None = _declare(FieldSpec("student", model_attr="image_tower.forward_tokens", fix=_CELLS_FIX))
    teacher_image_tokens: Tensor | None = _declare(
        FieldSpec("teacher", model_attr="image_tower.forward_tokens", fix=_CELLS_FIX)
    )
    # Cells of the extra views (V x B x N x F) and where each view was cropped from (B x V x 4, dense terms).
    image_view_tokens: Tensor | None = _declare(_view_cells("student"))
    teacher_image_view_tokens: Tensor | None = _declare(_view_cells("teacher"))
    view_boxes: Tensor | None = _declare(
        FieldSpec(  # (x0, y0, x1, y1) of each view in its source image, fractions; x0 > x1 when flipped
            "data",
            batch_key="view_boxes",
            setting="data.views",
            fix="set data.views: 2 and data.view_image_augment: pixpro_crop (the views' crops record their boxes)",
        )
    )
    pad_token_id: int = _declare(FieldSpec("student", batched=False), default=0)
    # Rows of the global batch owned by this process (None: all rows).
    local_rows: slice | None = _declare(FieldSpec("engine", batched=False))
    # Engine-kept inputs attached after the gather (cluster ids) and a training loop's own.
    extras: dict[str, Any] = field(default_factory=dict, metadata={"spec": FieldSpec("engine", batched=False)})

    @property
    def batch_size(self) -> int:
        return int(self.image.shape[0])

    def require(self, term: str, *names: str) -> None:
        """Raise a clear error when a term needs fields the batch does not carry."""
        missing = [n for n in names if getattr(self, n, None) is None and n not in self.extras]
        if missing:
            raise ValueError(
                f"objective term {term!r} needs {', '.join(missing)} but the batch has none; "
                f"use a dataset / recipe that provides {', '.join(missing)} (see `contrastkit objectives`)"
            )

    def upcast(self) -> Encoded:
        """A copy whose half-precision tensors are float32 (losses are computed outside autocast)."""
        low = (torch.float16, torch.bfloat16)
        return self.map(lambda name, v: v.float() if isinstance(v, Tensor) and v.dtype in low else v)

    def to(self, device: torch.device | str) -> Encoded:
        return self.map(lambda name, v: v.to(device) if isinstance(v, Tensor) else v)

    def map(self, fn: Any) -> Encoded:
        """A new Encoded with ``fn(name, value)`` applied to every field."""
        return Encoded(**{f.name: fn(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)})


FIELDS: dict[str, FieldSpec] = {f.name: f.metadata["spec"] for f in dataclasses.fields(Encoded)}
"""The field table: name -> :class:`FieldSpec`, in declaration order."""


def batched_tensors(enc: Encoded) -> dict[str, Tensor]:
    """The fields of ``enc`` that hold a tensor with a batch dimension (gathered, concatenated, split)."""
    return {
        name: value
        for name, spec in FIELDS.items()
        if spec.batched and spec.producer != "engine" and isinstance(value := getattr(enc, name), Tensor)
    }
