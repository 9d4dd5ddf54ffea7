"""Dense terms on the engine: cell masks, the views' crop boxes, exact accumulation, runs and their errors."""

from __future__ import annotations

import json

import pytest
import torch

from contrastkit.cli import main
from contrastkit.config import load_config
from contrastkit.data.batch import collate
from contrastkit.data.pipeline import StepBatchSampler
from contrastkit.data.sources import open_source
from contrastkit.data.training_set import TrainingSet, ViewSpec
from contrastkit.data.transforms import image_augment
from contrastkit.engine.cell_masks import mask_pixels, random_cell_masks
from contrastkit.engine.setup import frozen_copy
from contrastkit.engine.step import StepContext, forward_backward, grad_cache_backward
from contrastkit.models.build import build_model
from contrastkit.objectives import build

TINY = ["data.image_size=32", "model.width=32", "model.embed_dim=16", "data.train_size=64", "data.eval_size=32"]


def test_cell_masks_are_seeded_by_the_record_and_hide_10_to_50_percent():
    index, epoch = torch.arange(200), torch.zeros(200, dtype=torch.long)
    masks = random_cell_masks(index, epoch, 16)
    counts = masks.sum(1)
    assert counts.min() >= 2 and counts.max() <= 8  # round(0.1 * 16) .. round(0.5 * 16)
    assert torch.equal(random_cell_masks(index[50:60], epoch[50:60], 16), masks[50:60])  # per row, not per batch
    assert not torch.equal(random_cell_masks(index, epoch + 1, 16), masks)
    assert random_cell_masks(torch.tensor([3]), torch.tensor([0]), 4).sum() >= 1  # at least one cell


def test_masking_zeroes_exactly_the_masked_blocks():
    pixels = torch.rand(2, 3, 8, 8) + 1
    mask = torch.tensor([[True, False, False, True], [False, False, False, False]])
    out = mask_pixels(pixels, mask, 2)
    assert torch.equal(out[0, :, :4, :4], torch.zeros(3, 4, 4)) and torch.equal(out[0, :, 4:, 4:], torch.zeros(3, 4, 4))
    assert torch.equal(out[0, :, :4, 4:], pixels[0, :, :4, 4:]) and torch.equal(out[1], pixels[1])


def _grads(recipe, accum: int, views: int):
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.image_size).double()
    objective = build(recipe).double()
    data = open_source("synthetic:shapes", "train", cfg.data)
    spec = ViewSpec(views, image_augment("pixpro_crop", 32)) if views else None
    training = TrainingSet(data, model.image_transform(True), seed=0, views=spec)
    batch = collate([training[k] for k in next(iter(StepBatchSampler(len(data), 8, 1, 0)))])
    batch.pixels, batch.image_views = (
        batch.pixels.double(),
        None if batch.image_views is None else batch.image_views.double(),
    )
    teacher = frozen_copy(model)
    with torch.no_grad():  # the teacher differs from the student, as after some EMA steps
        for p in teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ctx = StepContext(model, objective, frozenset(objective.requires), teacher=teacher)
    with torch.no_grad():  # materialise the lazy heads on the whole batch first, as the engine's dry run
        objective(ctx.encode(batch), check_finite=False)
    out = forward_backward(ctx, batch) if accum == 1 else grad_cache_backward(ctx, batch.split(accum))
    return float(out.loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "recipe,views",
    [
        ([{"name": "clip"}, {"name": "pixpro", "hidden_dim": 16, "out_dim": 8}], 2),
        ([{"name": "clip"}, {"name": "ibot_patch", "hidden_dim": 16, "bottleneck_dim": 8, "prototypes": 10}], 0),
    ],
)
def test_dense_accumulation_equals_one_big_batch(recipe, views):
    loss_big, big = _grads(recipe, 1, views)
    loss_acc, acc = _grads(recipe, 4, views)
    assert loss_acc == pytest.approx(loss_big, rel=1e-10)
    assert any(n.startswith("image_tower.body") for n in big)  # the dense term reached the convolutions
    for name in big:
        torch.testing.assert_close(acc[name], big[name], rtol=1e-8, atol=1e-11, msg=name)


@pytest.mark.parametrize("config", ["configs/pixpro.yaml", "configs/tips_patch.yaml"])
def test_the_dense_recipes_train_and_log_their_terms(tmp_path, config, no_plots):
    out = tmp_path / "run"
    args = ["train", config, "--out", str(out), "--no-progress"]
    for item in [*TINY, "train.steps=3", "train.batch_size=8", "train.log_every=1", "train.eval_every=0"]:
        args += ["--set", item]
    args += ["--set", "eval.max_records=16"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    term = "pixpro" if "pixpro" in config else "ibot_patch"
    losses = [r[f"loss/{term}"] for r in rows if f"loss/{term}" in r]
    assert len(losses) == 3 and all(abs(v) < 1e3 for v in losses)
    assert (out / "checkpoints").exists() and any((out / "checkpoints").glob("*/teacher.safetensors"))


def test_pixpro_without_boxed_views_is_refused_with_the_fix(tmp_path, capsys):
    args = ["train", "configs/pixpro.yaml", "--out", str(tmp_path / "r"), "--no-progress"]
    for item in [*TINY, "train.steps=1", "data.view_image_augment=shapes_safe"]:
        args += ["--set", item]
    assert main(args) != 0
    assert "data.view_image_augment: pixpro_crop" in capsys.readouterr().err
    args[-1] = "data.views=0"
    assert main(args) != 0
    assert "data.views is 0" in capsys.readouterr().err
