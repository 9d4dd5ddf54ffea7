"""LoRA through peft: adapters start as the identity, only they train, merging keeps the embeddings, and
``contrastkit adapt lora`` writes a run every command loads as a plain model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from contrastkit.cli import main
from contrastkit.config import ConfigError, LoraConfig, ModelConfig, load_config
from contrastkit.engine.trainer import train
from contrastkit.models.build import build_model
from contrastkit.models.checkpoint import latest_checkpoint, load_module
from contrastkit.models.load import load_run
from contrastkit.models.lora import add_lora, image_side_targets, merge_lora, trainable_share
from helpers import TINY_TRAINING, register_tiny_open_clip

PIXELS = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
CAPTIONS = ["a red circle", "a blue square to the left of a green star", "there is a small white cross"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    train(load_config("configs/demo.yaml", TINY_TRAINING + ["data.train_size=200"]), root)
    return root


def _embed(model):
    model.eval()
    with torch.no_grad():
        return model.encode_image(PIXELS), model.encode_text(model.tokenize(CAPTIONS))


def test_adapters_start_as_identity_train_alone_and_merge_exactly(run):
    model, _ = load_run(run)
    before = _embed(model)
    adapted = add_lora(model, LoraConfig(rank=4, alpha=8))
    trainable, total = trainable_share(model)
    assert 0 < trainable < 0.1 * total
    assert all(("lora_" in name) == p.requires_grad for name, p in model.named_parameters())
    after = _embed(model)
    assert torch.allclose(before[0], after[0], atol=1e-5) and torch.allclose(before[1], after[1], atol=1e-5)  # B = 0
    with torch.no_grad():  # move every adapter away from zero, as training would
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.2)
    tuned = _embed(model)
    assert not torch.allclose(tuned[1], before[1], atol=1e-3)
    merged = merge_lora(adapted)
    assert not any("lora_" in k or "base_layer" in k for k in merged.state_dict())
    assert set(merged.state_dict()) == set(load_run(run)[0].state_dict())
    again = _embed(merged)
    assert torch.allclose(again[0], tuned[0], atol=1e-5) and torch.allclose(again[1], tuned[1], atol=1e-5)


def test_targets_by_name_or_expression_and_bad_settings_are_named(run):
    model, _ = load_run(run)
    add_lora(model, LoraConfig(rank=8, targets=["text_proj", r"re:image_tower\.body\.\d+\.0"]))  # convolutions too
    adapted = {k.split(".lora_")[0] for k in model.state_dict() if ".lora_A." in k}
    assert "text_proj" in adapted and "image_tower.body.0.0" in adapted and "image_proj" not in adapted
    model, _ = load_run(run)
    with pytest.raises(ValueError, match="LoRA targets c_fc match no module of this model; its module names include"):
        add_lora(model, LoraConfig(rank=8, targets=["c_fc"]))
    with pytest.raises(ValueError, match="rank must be >= 1"):
        add_lora(model, LoraConfig(rank=0))


def test_adapt_lora_writes_a_run_that_loads_merged_and_resumes(run, tmp_path, capsys):
    out = tmp_path / "lora"
    tiny = [
        f"--set={s}" for s in ("train.steps=4", "train.checkpoint_every=2", "data.eval_size=40", "eval.max_records=40")
    ]
    args = ["adapt", "lora", str(run), "--data", "synthetic:shapes-clutter", "--rank", "4", *tiny, "--no-progress"]
    assert main([*args, "--steps", "4", "--lr", "0.05", "--out", str(out)]) == 0
    assert "LoRA run written to" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["lora"]["rank"] == 4  # the recipe holds the adapters
    summary = json.loads((out / "lora_summary.json").read_text())
    assert 0 < summary["share"] < 0.1 and json.loads((out / "config.json").read_text())["data"]["source"].endswith(
        "clutter"
    )
    adapter = load_file(out / "lora_adapter.safetensors")
    assert (
        adapter
        and all("lora_" in k for k in adapter)
        and any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    )

    merged, _ = load_run(out)  # every command reads it as a plain model
    start, _ = load_run(run)
    assert set(merged.state_dict()) == set(start.state_dict())
    frozen = [k for k in start.state_dict() if k.startswith("image_tower.body") or k.endswith("embed.weight")]
    assert frozen and all(torch.equal(merged.state_dict()[k], start.state_dict()[k]) for k in frozen)
    unmerged, _ = load_run(run)
    add_lora(unmerged, LoraConfig(rank=4))
    load_module(unmerged, latest_checkpoint(out) / "model.safetensors")
    a, b = _embed(merged), _embed(unmerged)
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)
    assert not torch.allclose(a[1], _embed(start)[1], atol=1e-4)  # the adapters did change the model

    assert main([*args, "--rank", "8", "--steps", "4", "--lr", "0.05", "--out", str(out)]) == 2
    assert "holds a run with other LoRA settings" in capsys.readouterr().err
    assert main([*args, "--steps", "4", "--lr", "0.05", "--out", str(out)]) == 0  # finished: resumes at the end
    assert main([*args, "--targets", "c_fc", "--out", str(tmp_path / "bad")]) == 2
    assert "LoRA targets c_fc match no module" in capsys.readouterr().err


def test_image_side_targets_adapt_what_embeds_an_image_and_nothing_else(run, tmp_path):
    model, _ = load_run(run)
    targets = image_side_targets(model)
    assert r"re:image_proj" in targets and r"re:image_tower\.body\.0\.0" in targets
    assert not any("text" in t or "out_proj" in t for t in targets)  # attention blocks are adapted whole
    before = _embed(model)
    add_lora(model, LoraConfig(rank=2, alpha=4, targets=targets))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.2)
    after = _embed(model)
    assert not torch.allclose(after[0], before[0], atol=1e-3)
    assert torch.allclose(after[1], before[1], atol=1e-5)  # (the slow path of the text layers, not the fast one)
    assert not any("lora_" in n for n, _ in model.named_parameters() if n.startswith("text"))

    name = register_tiny_open_clip(tmp_path / "cfg")  # a ViT: patch convolution, attention blocks, MLPs
    vit = build_model(ModelConfig(image_tower=f"open_clip:{name}", text_tower=f"open_clip:{name}", embed_dim=32))
    found = image_side_targets(vit)
    assert any("conv1" in t for t in found) and any(t.endswith("attn") for t in found)
    assert any("c_fc" in t for t in found) and not any("transformer" in t and "image" not in t for t in found)
    add_lora(vit, LoraConfig(rank=2, alpha=4, targets=found))
    assert all(not p.requires_grad for n, p in vit.named_parameters() if n.startswith("text_tower"))


def test_a_recipe_with_a_lora_section_trains_adapters_and_loads_merged(run, tmp_path):
    settings = [*TINY_TRAINING, "data.train_size=200", f"model.init_from={run}", "lora.rank=2", "lora.alpha=4"]
    out = tmp_path / "recipe-lora"
    train(load_config("configs/demo.yaml", [*settings, "lora.targets=[text_proj, image_proj]"]), out)
    saved = load_file(latest_checkpoint(out) / "model.safetensors")
    assert {k.split(".lora_")[0] for k in saved if ".lora_A." in k} == {"text_proj", "image_proj"}
    merged, cfg = load_run(out)
    start, _ = load_run(run)
    assert cfg.lora.rank == 0 and set(merged.state_dict()) == set(start.state_dict())  # a plain model
    moved = [k for k in start.state_dict() if not torch.equal(merged.state_dict()[k], start.state_dict()[k])]
    assert set(moved) == {"text_proj.weight", "image_proj.weight"}  # only the adapted layers changed
    for bad, key in (
        ("lora.rank=-1", "lora.rank"),
        ("lora.targets=[]", "lora.targets"),
        ("lora.alpha=0", "lora.alpha"),
    ):
        with pytest.raises(ConfigError, match=key):
            load_config("configs/demo.yaml", [*settings, bad])
