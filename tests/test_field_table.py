"""The Encoded field table drives encode, gather, preflight and the training set; class labels reach batches."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import toy_data as toy
from contrastkit.config import ConfigError, load_config
from contrastkit.data.batch import collate
from contrastkit.data.pipeline import StepBatchSampler
from contrastkit.data.sources import open_source
from contrastkit.encoded import FIELDS, Encoded, batched_tensors
from contrastkit.engine.encode import encode_batch
from contrastkit.engine.preflight import missing_inputs
from contrastkit.engine.setup import training_set_for
from contrastkit.engine.step import REPLAYED
from contrastkit.models.build import build_model
from contrastkit.objectives import Objective, Term
from contrastkit.objectives import build as build_objective

SMALL = ["data.train_size=32", "data.eval_size=8", "data.image_size=32", "model.width=32", "model.embed_dim=16"]


class NeedsLabels(Term):
    """A test-only term (not registered) that reads class labels."""

    name = "needs_labels"
    requires: tuple[str, ...] = ("labels",)

    def loss(self, enc: Encoded) -> torch.Tensor:
        return (enc.image.sum(1) * enc.labels).mean()


def test_every_field_declares_its_spec_and_the_derived_sets_are_the_known_ones():
    assert set(FIELDS) == {f.name for f in dataclasses.fields(Encoded)}
    assert {name for name, spec in FIELDS.items() if spec.batch_dim == 1} == {
        "image_views",
        "text_views",
        "image_view_features",
        "text_view_features",
        "image_view_tokens",
        "teacher_image_view_tokens",
    }
    assert set(REPLAYED) == {
        "image",
        "text",
        "image_features",
        "text_features",
        "image_views",
        "text_views",
        "image_view_features",
        "text_view_features",
        "neg_text",
        "image_tokens",
        "image_view_tokens",
        "masked_image_tokens",
    }
    unbatched = {name for name, spec in FIELDS.items() if not spec.batched}
    assert unbatched == {
        "logit_scale",
        "logit_bias",
        "teacher_logit_scale",
        "reference_logit_scale",
        "pad_token_id",
        "local_rows",
        "extras",
    }
    enc = Encoded(
        image=torch.zeros(3, 4),
        text=torch.zeros(3, 4),
        logit_scale=torch.tensor(1.0),
        image_views=torch.zeros(2, 3, 4),
        labels=torch.zeros(3),
    )
    assert set(batched_tensors(enc)) == {"image", "text", "image_views", "labels"}


def test_class_labels_reach_the_encoded_batch_only_when_a_term_reads_them(tmp_path):
    toy.write_folder(tmp_path / "folder", per_class=6)
    cfg = load_config("configs/demo.yaml", SMALL + [f"data.source=folder:{tmp_path / 'folder'}"])
    data = open_source(cfg.data.source, "train", cfg.data)
    model = build_model(cfg.model, cfg.data.image_size)
    keys = next(iter(StepBatchSampler(len(data), 8, 1, 0)))
    reading = Objective([NeedsLabels()], [1.0], ["needs_labels"])
    assert missing_inputs(reading, cfg, data, model) == []
    dataset = training_set_for(cfg, data, model, reading)
    batch = collate([dataset[k] for k in keys])
    assert batch.rows["labels"].tolist() == [data[i].label for _, i in keys]
    enc = encode_batch(model, batch, reading.requires)
    assert enc.labels is not None and enc.labels.tolist() == [data[i].label for _, i in keys]

    plain = Objective([], [], [])
    assert "labels" not in collate([training_set_for(cfg, data, model, plain)[k] for k in keys]).rows


def test_preflight_names_the_setting_that_provides_a_missing_input():
    cfg = load_config("configs/demo.yaml", SMALL)
    data = open_source(cfg.data.source, "train", cfg.data)
    model = build_model(cfg.model, cfg.data.image_size)
    problems = missing_inputs(Objective([NeedsLabels()], [1.0], ["needs_labels"]), cfg, data, model)
    assert problems == [
        "objective term 'needs_labels' needs labels: the data (synthetic:shapes) has no class labels; "
        "set data.label_column, or use folder: data (one sub-folder per class)"
    ]


@pytest.mark.parametrize(
    "field, fragment",
    [
        ("logit_bias", "the model has no logit_bias; set model.logit_bias_init"),
        ("image_views", "data.views is 0; set the number of extra augmented views"),
        ("cluster_ids", "the recipe has no clusters"),
        ("not_a_field", "'not_a_field' is not something the engine computes"),
    ],
)
def test_preflight_reads_the_table_for_every_kind_of_need(field, fragment):
    cfg = load_config("configs/demo.yaml", SMALL)
    term = NeedsLabels()
    term.requires = (field,)
    problems = missing_inputs(
        Objective([term], [1.0], ["t"]),
        cfg,
        open_source(cfg.data.source, "train", cfg.data),
        build_model(cfg.model, cfg.data.image_size),
    )
    assert len(problems) == 1 and fragment in problems[0]


def test_hard_negatives_come_only_from_the_chosen_categories():
    cfg = load_config("configs/demo.yaml", SMALL + ["data.neg_per_image=2", "data.neg_categories=swap_attributes"])
    data = open_source(cfg.data.source, "train", cfg.data)
    model = build_model(cfg.model, cfg.data.image_size)
    reading = build_objective([{"name": "negclip"}])
    dataset = training_set_for(cfg, data, model, reading)
    for index in range(12):
        allowed = set(data[index].neg_captions.get("swap_attributes", []))
        drawn = dataset[(0, index)].neg_captions
        assert len(drawn) == min(2, len(allowed)) and set(drawn) <= allowed
    everything = training_set_for(
        load_config("configs/demo.yaml", SMALL + ["data.neg_per_image=8"]), data, model, reading
    )
    others = {c for i in range(12) for c in everything[(0, i)].neg_captions}
    assert others - {c for i in range(12) for c in data[i].neg_captions.get("swap_attributes", [])}

    wrong = load_config("configs/demo.yaml", SMALL + ["data.neg_categories=swap_colour"])
    with pytest.raises(ConfigError, match=r"data.neg_categories: swap_colour not among .*swap_attributes"):
        training_set_for(wrong, data, model, reading)
