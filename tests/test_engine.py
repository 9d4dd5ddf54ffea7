"""Training loop: determinism, exact resume, NaN stop, report contents."""

import json

import pytest
import torch
from safetensors.torch import load_file

from contrastkit.config import load_config
from contrastkit.engine import trainer as trainer_module
from contrastkit.engine.trainer import train
from contrastkit.models.checkpoint import latest_checkpoint
from contrastkit.objectives import NonFiniteLossError
from helpers import kill_at_step

SMALL = [
    "data.train_size=256",
    "data.eval_size=64",
    "data.image_size=32",
    "model.width=32",
    "model.embed_dim=32",
    "model.context_length=20",
    "train.batch_size=32",
    "train.steps=6",
    "train.warmup_steps=2",
    "train.log_every=1",
    "train.progress=false",
    "eval.max_records=64",
    "train.eval_every=0",
    "train.checkpoint_every=0",
]


def small_config(*extra: str):
    return load_config("configs/demo.yaml", SMALL + list(extra))


def final_weights(run_dir):
    return load_file(str(latest_checkpoint(run_dir) / "model.safetensors"))


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tmp_path):
    a = train(small_config(), tmp_path / "a")
    b = train(small_config(), tmp_path / "b")
    for key in ("zeroshot", "retrieval", "compositional", "geometry"):
        assert a[key] == b[key], key
    wa, wb = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_training_lowers_the_loss_and_writes_the_report(tmp_path):
    report = train(small_config("train.steps=12", "train.lr=3e-3"), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    saved = json.loads((tmp_path / "report.json").read_text())
    for key in ("zeroshot", "retrieval", "compositional", "geometry", "config", "timing"):
        assert key in saved
    assert set(saved["zeroshot"]) >= {"shape", "colour"}
    assert "text_retrieval_recall@1" in saved["retrieval"]
    assert 0 <= saved["geometry"]["modality_gap"] <= 2
    for png in ("loss_curve.png", "embedding_gap.png"):
        assert (tmp_path / png).stat().st_size > 5000
    assert "Zero-shot" in (tmp_path / "report.md").read_text()
    assert report["config"]["train"]["steps"] == 12


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(small_config("train.checkpoint_every=3"), straight)

    killed = tmp_path / "killed"
    revive = kill_at_step(monkeypatch, trainer_module, 4)
    with pytest.raises(KeyboardInterrupt):
        train(small_config("train.checkpoint_every=3"), killed)
    assert latest_checkpoint(killed).name == "step-000003"
    revive()

    report = train(small_config("train.checkpoint_every=3"), killed, resume=True)
    assert report["timing"]["resumed_from"] == 3
    a, b = final_weights(straight), final_weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the killed run's lines past the checkpoint are not duplicated


def test_nan_loss_stops_with_step_and_term(tmp_path, monkeypatch):
    from contrastkit.objectives import clip as clip_module

    real_loss = clip_module.ClipTerm.loss
    calls = {"n": 0}

    def poisoned(self, enc):
        calls["n"] += 1
        value = real_loss(self, enc)
        return value * float("nan") if calls["n"] == 4 else value  # call 1 is the start-up dry run

    monkeypatch.setattr(clip_module.ClipTerm, "loss", poisoned)
    with pytest.raises(NonFiniteLossError) as err:
        train(small_config(), tmp_path)
    assert err.value.term == "clip" and err.value.step == 2
    assert "at step 2" in str(err.value)


@pytest.mark.slow
def test_siglip_recipe_trains_with_bias(tmp_path):
    train(small_config("objective=[{name: siglip}]", "train.steps=3"), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["logit_scale"] == pytest.approx(10.0, rel=0.05)
    assert rows[0]["logit_bias"] == pytest.approx(-10.0, abs=0.05)
    assert "loss/siglip" in rows[0]


def test_negclip_style_inputs_are_encoded(tmp_path):
    from contrastkit.data.batch import collate
    from contrastkit.data.pipeline import StepBatchSampler
    from contrastkit.data.sources import open_source
    from contrastkit.data.training_set import TrainingSet
    from contrastkit.engine.encode import encode_batch
    from contrastkit.models.build import build_model

    cfg = small_config()
    model = build_model(cfg.model, cfg.data.image_size)
    data = open_source(cfg.data.source, "train", cfg.data)
    ds = TrainingSet(data, model.image_transform(True), seed=0, neg_per_image=3)
    batch = collate([ds[key] for key in next(iter(StepBatchSampler(len(data), 8, 1, 0)))])
    enc = encode_batch(model, batch, {"neg_text", "image_tokens", "caption_tokens"})
    assert enc.neg_text.shape[:2] == (8, 3) and enc.neg_text_mask.shape == (8, 3)
    assert enc.image_tokens.shape[0] == 8 and enc.caption_tokens.shape[0] == 8
    # a negative is never one of the record's own captions
    for i, idx in enumerate(batch.index.tolist()):
        assert not set(batch.neg_captions[i]) & set(data[idx].captions)
