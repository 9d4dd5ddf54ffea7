"""CapDec text-only captioning: the vocabulary round trip, the decoder's causal next-word loss against a direct
computation, a decoder that learns to caption from embeddings, and the resumable command."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from contrastkit.adapt import capdec_run
from contrastkit.adapt.capdec import (
    BOS,
    EOS,
    PAD,
    CaptionVocab,
    DecoderSettings,
    PrefixCaptioner,
    caption_loss,
    train_captioner,
)
from contrastkit.adapt.capdec_run import CaptionRequest, run_text_caption
from contrastkit.cli import main
from helpers import tiny_demo_run

CAPTIONS = ["A red circle.", "a blue square", "a green star left of a red circle"]


def test_vocabulary_encodes_and_decodes_captions():
    vocab = CaptionVocab(CAPTIONS)
    ids = vocab.encode(["a red circle.", "a purple circle"], 6)
    assert ids[0].tolist() == [BOS, *(vocab.index[w] for w in ("a", "red", "circle", ".")), EOS]
    assert ids[1, 2].item() == 3 and ids[1].tolist()[-2:] == [EOS, PAD]  # "purple" is unknown
    assert vocab.decode(ids[0, 1:].tolist()) == "a red circle ."
    assert vocab.decode(vocab.encode(["a green star left of a red circle"], 5)[0, 1:].tolist()) == "a green star"


def test_the_loss_is_next_word_cross_entropy_and_the_future_is_masked():
    torch.manual_seed(0)
    model = PrefixCaptioner(8, 12, width=32, layers=1, prefix=2, length=6).eval()
    emb = F.normalize(torch.randn(2, 8), dim=-1)
    tokens = torch.tensor([[BOS, 5, 6, 7, EOS, PAD], [BOS, 8, EOS, PAD, PAD, PAD]])
    logits = model(emb, tokens[:, :-1])
    targets = tokens[:, 1:]
    direct = [
        -torch.log_softmax(logits[b, t], -1)[targets[b, t]] for b in range(2) for t in range(5) if targets[b, t] != PAD
    ]
    with torch.no_grad():
        loss = caption_loss(model, emb, tokens)
    assert float(loss) == pytest.approx(float(torch.stack(direct).mean()), rel=1e-5)
    changed = tokens.clone()
    changed[0, 3] = 9  # a later word must not change the predictions made before it
    assert torch.allclose(model(emb, changed[:, :-1])[0, :3], logits[0, :3], atol=1e-6)


def test_a_decoder_learns_to_caption_from_the_embedding():
    torch.manual_seed(0)
    captions = ["a red circle", "a blue square", "a green star", "a white cross"]
    vocab = CaptionVocab(captions)
    text = F.normalize(torch.randn(4, 16), dim=-1)
    tokens = vocab.encode(captions, 6)
    model = train_captioner(
        text, tokens, len(vocab), w=0.02, shift=None, settings=DecoderSettings(steps=150, width=32, layers=1), seed=0
    )
    assert [vocab.decode(ids.tolist()) for ids in model.generate(text)] == captions


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_demo_run(tmp_path_factory.mktemp("capdec"), 100)


def test_a_text_caption_run_writes_the_report_and_resumes(run, tmp_path, monkeypatch):
    request = CaptionRequest(str(run), "synthetic:shapes", [0.0, 0.2], [0], 40, DecoderSettings(steps=5, width=32))
    report = run_text_caption(request, tmp_path, data_overrides=["data.eval_size=40"], progress=False)
    assert {(e["w"], e["shift"], e["n"]) for e in report["summary"]} == {(w, s, 1) for w in (0.0, 0.2) for s in (0, 1)}
    assert all(r["cider"] >= 0 and 0 <= r["bleu4"] <= 1 and len(r["examples"]) == 5 for r in report["rows"])
    assert (tmp_path / "text_caption.png").stat().st_size > 10_000
    assert "| noise only | CIDEr-D |" in (tmp_path / "report.md").read_text()
    decoders = sorted(p.name for p in (tmp_path / "decoders").iterdir())  # every trained decoder is kept
    assert decoders == [f"w{w}-{s}-s0.safetensors" for w in ("0", "0.2") for s in ("plain", "shift")]
    words = json.loads((tmp_path / "vocab.json").read_text())
    assert words[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and "circle" in words
    measured = []
    real = capdec_run.measure
    monkeypatch.setattr(capdec_run, "measure", lambda d, w, s, seed, st: measured.append(w) or real(d, w, s, seed, st))
    wider = CaptionRequest(str(run), "synthetic:shapes", [0.0, 0.2, 0.4], [0], 40, DecoderSettings(steps=5, width=32))
    again = run_text_caption(wider, tmp_path, data_overrides=["data.eval_size=40"], progress=False)
    assert measured == [0.4, 0.4] and len(again["rows"]) == 6  # only the new w, with and without the shift


def test_the_text_caption_command_checks_its_arguments(run, tmp_path, capsys):
    base = ["adapt", "text-caption", str(run), "--set", "data.eval_size=40", "--no-progress"]
    assert main([*base, "--noise", "-0.1", "--out", str(tmp_path / "a")]) == 2
    assert "--noise: give noise levels w >= 0" in capsys.readouterr().err
    assert main([*base, "--steps", "0", "--out", str(tmp_path / "b")]) == 2
    assert "--steps must be positive" in capsys.readouterr().err
