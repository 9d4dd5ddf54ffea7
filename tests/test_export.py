"""contrastkit export: open_clip's own factory and onnxruntime reproduce the run's embeddings; a model card."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from contrastkit.cli import main
from contrastkit.config import load_config
from contrastkit.engine.trainer import train
from contrastkit.export import ExportError, export_run
from contrastkit.export.hf_format import hf_config, projected
from contrastkit.export.open_clip_format import load_exported
from contrastkit.models.load import load_run
from contrastkit.models.tokenizer import HashedWordTokenizer
from helpers import TINY_TRAINING, save_tiny_open_clip

CAPTIONS = ["a large purple hexagon above a small red circle", "a green star"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    train(load_config("configs/demo.yaml", TINY_TRAINING + ["data.train_size=32", "model.text_causal=true"]), root)
    return root


@pytest.fixture(scope="module")
def open_clip_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_oc")
    name, weights = save_tiny_open_clip(root)
    towers = [f"model.image_tower=open_clip:{name}", f"model.text_tower=open_clip:{name}", "model.embed_dim=32"]
    extra = [*towers, f"model.pretrained={weights}", "objective=[{name: siglip}]"]  # a run with a bias
    train(load_config("configs/demo.yaml", TINY_TRAINING + ["data.train_size=32", *extra]), root / "run")
    return root / "run", name


@pytest.mark.slow
def test_open_clip_export_loads_with_open_clips_factory_and_embeds_the_same(open_clip_run, tmp_path):
    run, name = open_clip_run
    summary = export_run(run, "open_clip", tmp_path / "oc")
    assert summary["max_abs_diff"] <= 1e-5
    theirs, preprocess, tokenizer = load_exported(tmp_path / "oc", name)
    ours, _ = load_run(run)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8))
    with torch.no_grad():
        pixels = preprocess(image)[None]
        assert torch.allclose(pixels, ours.image_transform(train=False)(image)[None])
        diff_image = (theirs.encode_image(pixels, normalize=True) - ours.encode_image(pixels)).abs().max()
        text = theirs.encode_text(tokenizer(CAPTIONS), normalize=True) - ours.encode_text(ours.tokenize(CAPTIONS))
    assert float(diff_image) <= 1e-5 and float(text.abs().max()) <= 1e-5
    assert float(theirs.logit_scale.detach().exp()) == pytest.approx(float(ours.logit_scale.detach()))
    assert float(theirs.logit_bias.detach()) == pytest.approx(float(ours.logit_bias.detach()))
    card = (tmp_path / "oc" / "README.md").read_text()
    assert f"open_clip:{name}" in card and "siglip" in card and "zeroshot/shape/acc1" in card


@pytest.mark.slow
def test_hf_export_loads_with_from_pretrained_and_embeds_the_same(tmp_path_factory, open_clip_run, tmp_path):
    from transformers import CLIPModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("export_hf")
    name, weights = save_tiny_open_clip(root, seed=1)
    towers = [f"model.image_tower=open_clip:{name}", f"model.text_tower=open_clip:{name}", "model.embed_dim=32"]
    train(
        load_config(
            "configs/demo.yaml", [*TINY_TRAINING, "data.train_size=32", *towers, f"model.pretrained={weights}"]
        ),
        root / "run",
    )
    summary = export_run(root / "run", "hf", tmp_path / "hf")
    assert summary["max_abs_diff"] <= 1e-4
    theirs = CLIPModel.from_pretrained(str(tmp_path / "hf")).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(tmp_path / "hf"))
    ours, _ = load_run(root / "run")
    ids = tokenizer(CAPTIONS, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
    mine = ours.tokenize(CAPTIONS)
    assert torch.equal(ids[mine != 0], mine[mine != 0])  # open_clip's ids; HF pads with end-of-text, open_clip with 0
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        image = F.normalize(projected(theirs.get_image_features(pixel_values=pixels)), dim=-1)
        text = F.normalize(projected(theirs.get_text_features(input_ids=ids)), dim=-1)
        image, text = image - ours.encode_image(pixels), text - ours.encode_text(mine)
    assert float(image.abs().max()) <= 1e-4 and float(text.abs().max()) <= 1e-4
    assert float(theirs.logit_scale.detach().exp()) == pytest.approx(float(ours.logit_scale.detach()), rel=1e-5)
    assert "CLIPModel.from_pretrained" in (tmp_path / "hf" / "README.md").read_text()
    with pytest.raises(ExportError, match="--format hf: this run has a logit bias"):
        export_run(open_clip_run[0], "hf", tmp_path / "siglip")
    arch = json.loads((root / "cfg" / f"{name}.json").read_text())
    arch["vision_cfg"]["attentional_pool"] = True
    with pytest.raises(ExportError, match="sets vision_cfg.attentional_pool=True, which CLIPModel has no place for"):
        hf_config(arch, name)


@pytest.mark.slow
def test_onnx_export_matches_in_onnxruntime_and_describes_its_inputs(tiny_run, tmp_path):
    summary = export_run(tiny_run, "onnx", tmp_path / "onnx")
    assert summary["max_abs_diff"] <= 1e-4
    model, _ = load_run(tiny_run)
    meta = json.loads((tmp_path / "onnx" / "preprocessing.json").read_text())
    assert meta["logit_scale"] == pytest.approx(float(model.logit_scale.detach()))

    # a user who follows preprocessing.json by hand gets contrastkit's embeddings
    tok = meta["tokenizer"]
    by_hand = HashedWordTokenizer(tok["vocab_size"], tok["context_length"])(CAPTIONS).numpy()
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 50, 3), dtype=np.uint8))
    size = meta["image"]["size"]
    scaled = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255
    pixels = ((scaled - meta["image"]["mean"]) / meta["image"]["std"]).transpose(2, 0, 1)[None].astype(np.float32)
    images = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "image_encoder.onnx"))
    texts = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "text_encoder.onnx"))
    (text_embeds,) = texts.run(None, {"tokens": by_hand})
    with torch.no_grad():
        assert np.abs(text_embeds - model.encode_text(model.tokenize(CAPTIONS)).numpy()).max() <= 1e-4
        reference = model.encode_image(model.image_transform(train=False)(image)[None]).numpy()
    (image_embeds,) = images.run(None, {"pixels": pixels})
    assert np.abs(image_embeds - reference).max() <= 2e-2  # PIL's and torchvision's bilinear resize differ slightly
    assert "onnxruntime" in (tmp_path / "onnx" / "README.md").read_text()


def test_what_cannot_be_exported_is_refused_with_the_reason(tiny_run, tmp_path, capsys, monkeypatch):
    with pytest.raises(ExportError, match="needs both towers from one open_clip model"):
        export_run(tiny_run, "open_clip", tmp_path / "a")
    with pytest.raises(ExportError, match="--format hf needs both towers from one open_clip model"):
        export_run(tiny_run, "hf", tmp_path / "b")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "onnxscript", None)  # as if not installed
        with pytest.raises(ExportError, match=r"--format onnx needs onnxscript: pip install 'contrastkit\[export\]'"):
            export_run(tiny_run, "onnx", tmp_path / "e")
    assert not any((tmp_path / name).exists() for name in "abe")
    assert main(["export", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "c")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["export", str(tiny_run), "--format", "onnx", "--out", str(tmp_path / "d")]) == 0
    assert "differ from contrastkit's by at most" in capsys.readouterr().out
