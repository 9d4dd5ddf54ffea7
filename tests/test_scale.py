"""Exact accumulation (GradCache), 2-rank training == 1 process, precision and speed switches."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from contrastkit.config import ConfigError, ModelConfig, load_config
from contrastkit.data.batch import collate
from contrastkit.data.pipeline import StepBatchSampler
from contrastkit.data.sources import open_source
from contrastkit.data.training_set import TrainingSet
from contrastkit.engine.step import StepContext, forward_backward, grad_cache_backward
from contrastkit.engine.trainer import train
from contrastkit.models.build import build_model
from contrastkit.models.checkpoint import latest_checkpoint
from contrastkit.objectives import build

SMALL = [
    "data.train_size=128",
    "data.eval_size=32",
    "data.image_size=32",
    "model.width=32",
    "model.embed_dim=16",
    "train.batch_size=16",
    "train.steps=3",
    "train.warmup_steps=1",
    "train.progress=false",
    "eval.max_records=16",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.log_every=1",
]


def _batch(cfg, rows: int, neg: int = 0):
    model = build_model(cfg.model, cfg.data.image_size)
    data = open_source(cfg.data.source, "train", cfg.data)
    ds = TrainingSet(data, model.image_transform(True), seed=0, neg_per_image=neg)
    keys = next(iter(StepBatchSampler(len(data), rows, 1, 0)))
    return collate([ds[k] for k in keys])


def _grads(recipe, accum: int):
    cfg = load_config("configs/demo.yaml", SMALL)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.image_size, build(recipe).model_defaults).double()
    torch.manual_seed(1)
    objective = build(recipe).double()
    batch = _batch(cfg, 16, neg=2)
    batch.pixels = batch.pixels.double()
    ctx = StepContext(model, objective, frozenset(objective.requires))
    if accum == 1:
        out = forward_backward(ctx, batch)
    else:
        out = grad_cache_backward(ctx, batch.split(accum))
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    grads.update({f"objective.{n}": p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None})
    return float(out.loss.detach()), grads


@pytest.mark.parametrize(
    "recipe",
    [
        [{"name": "clip"}],
        [{"name": "siglip"}],
        [{"name": "negclip"}, {"name": "uniformity", "weight": 0.5}],
    ],
)
def test_accumulation_equals_one_big_batch(recipe):
    loss_big, big = _grads(recipe, accum=1)
    loss_acc, acc = _grads(recipe, accum=4)
    assert loss_acc == pytest.approx(loss_big, rel=1e-12)
    assert big.keys() == acc.keys() and "log_logit_scale" in big
    for name in big:
        torch.testing.assert_close(acc[name], big[name], rtol=1e-9, atol=1e-12, msg=name)


def test_naive_loss_summing_would_differ():
    """Guard the test above: per-micro-batch losses give a different gradient (why GradCache exists)."""
    cfg = load_config("configs/demo.yaml", SMALL)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.image_size).double()
    objective = build([{"name": "clip"}])
    batch = _batch(cfg, 16)
    batch.pixels = batch.pixels.double()
    for micro in batch.split(4):
        forward_backward(StepContext(model, objective, frozenset()), micro)
    naive = model.log_logit_scale.grad.clone()
    _, exact = _grads([{"name": "clip"}], accum=4)
    assert not torch.allclose(naive / 4, exact["log_logit_scale"], rtol=1e-3)


def test_split_batch_handles_uneven_parts():
    cfg = load_config("configs/demo.yaml", SMALL)
    parts = _batch(cfg, 16).split(3)  # a batch made smaller by skipped records still splits
    assert [len(p.captions) for p in parts] == [5, 5, 6]
    with pytest.raises(ValueError, match="accum_steps=20 is larger than this batch"):
        _batch(cfg, 16).split(20)
    with pytest.raises(ConfigError, match="train.accum_steps"):
        load_config("configs/demo.yaml", SMALL + ["train.accum_steps=3"])


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_training(a_dir, b_dir, lr: float, steps: int) -> None:
    """Same losses; weights equal up to float32 noise, which Adam can turn into at most lr per step."""
    assert _losses(b_dir) == pytest.approx(_losses(a_dir), rel=1e-4)
    a = load_file(str(latest_checkpoint(a_dir) / "model.safetensors"))
    b = load_file(str(latest_checkpoint(b_dir) / "model.safetensors"))
    assert a.keys() == b.keys()
    moved = 0.0
    for key in a:
        assert (a[key] - b[key]).abs().max() <= lr * steps, key
        moved = max(moved, float((a[key] - b[key]).abs().mean()))
    assert moved < lr / 10  # typical parameters agree far better than the worst one


@pytest.mark.slow
def test_accumulated_training_matches_plain_training(tmp_path):
    train(load_config("configs/demo.yaml", SMALL), tmp_path / "plain")
    train(load_config("configs/demo.yaml", SMALL + ["train.accum_steps=4"]), tmp_path / "accum")
    cfg = load_config("configs/demo.yaml", SMALL)
    assert_same_training(tmp_path / "plain", tmp_path / "accum", cfg.train.lr, cfg.train.steps)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, world: int, port: int, out: str, overrides: list[str] = SMALL) -> None:
    """One rank of a gloo run of configs/demo.yaml with ``overrides`` (the body of an mp.spawn test)."""
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    try:
        train(load_config("configs/demo.yaml", overrides + ["train.threads=1"]), out)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_two_gloo_ranks_train_like_one_process(tmp_path):
    single = tmp_path / "single"
    train(load_config("configs/demo.yaml", SMALL + ["train.threads=1"]), single)
    ranked = tmp_path / "ranked"
    mp.spawn(rank_main, args=(2, _free_port(), str(ranked)), nprocs=2, join=True)
    cfg = load_config("configs/demo.yaml", SMALL)
    assert_same_training(single, ranked, cfg.train.lr, cfg.train.steps)
    report = (ranked / "report.json").read_text()
    assert '"world_size": 2' in report


@pytest.mark.slow
def test_bf16_autocast_trains_on_cpu(tmp_path):
    report = train(load_config("configs/demo.yaml", SMALL + ["train.precision=bf16"]), tmp_path)
    assert report["config"]["train"]["precision"] == "bf16"
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3


def test_fp16_and_checkpointing_explain_what_they_need(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
            train(load_config("configs/demo.yaml", SMALL + ["train.precision=fp16"]), tmp_path / "a")
    with pytest.raises(ConfigError, match="grad_checkpointing: the image tower"):
        train(load_config("configs/demo.yaml", SMALL + ["train.grad_checkpointing=true"]), tmp_path / "b")


def test_grad_checkpointing_on_open_clip_towers_keeps_gradients(tmp_path):
    from helpers import register_tiny_open_clip

    name = register_tiny_open_clip(tmp_path / "cfg")
    cfg = ModelConfig(image_tower=f"open_clip:{name}", text_tower=f"open_clip:{name}", embed_dim=32)
    pixels = torch.randn(4, 3, 32, 32)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg)
        if checkpointing:
            model.image_tower.set_grad_checkpointing(True)
            model.text_tower.set_grad_checkpointing(True)
        tokens = model.tokenize(["a red square", "a blue star", "two circles", "a cross"])
        loss = (model.encode_image(pixels) * model.encode_text(tokens)).sum()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], rtol=1e-5, atol=1e-6)
