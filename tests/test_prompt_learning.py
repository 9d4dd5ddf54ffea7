"""Prompt learning: CoOp's prompt assembly against the tower run on the words, CoCoOp / TOMM / GOPro shapes
and starting points, SimCLR's loss against its formula, base-to-new arithmetic, a resumable run, bad input."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from contrastkit.adapt import prompt_run
from contrastkit.adapt.base_to_new import among, harmonic_mean, split_classes
from contrastkit.adapt.coop import CoCoOp, CoOp
from contrastkit.adapt.gopro import GOPro, nt_xent
from contrastkit.adapt.prompt_inputs import PromptInputs
from contrastkit.adapt.prompt_report import comparisons
from contrastkit.adapt.prompt_run import PromptRequest, run_prompts
from contrastkit.adapt.prompt_tokens import PromptedText, assemble_prompts
from contrastkit.adapt.prompt_training import PromptSettings, prompt_accuracy, train_prompts
from contrastkit.adapt.tomm import TommStyle
from contrastkit.cli import main
from contrastkit.models.load import load_run
from helpers import tiny_demo_run

CLASSES = ["circle", "square", "triangle", "star"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_demo_run(tmp_path_factory.mktemp("prompts"), 300)


@pytest.fixture(scope="module")
def model(run):
    loaded, _ = load_run(run)
    return loaded.eval().requires_grad_(False)


def inputs(n: int, dim: int = 32, seed: int = 0) -> PromptInputs:
    g = torch.Generator().manual_seed(seed)
    return PromptInputs(F.normalize(torch.randn(n, dim, generator=g), dim=-1), torch.randn(n, 64, generator=g))


def test_prompts_put_the_class_at_the_end_middle_or_front():
    assert assemble_prompts(["red circle"], 4) == ["X X X X red circle."]
    assert assemble_prompts(["star"], 4, "middle") == ["X X star X X."]
    assert assemble_prompts(["star"], 3, "front") == ["star X X X."]
    with pytest.raises(ValueError, match="--class-position 'top'"):
        assemble_prompts(["star"], 2, "top")
    with pytest.raises(ValueError, match="--n-ctx"):
        assemble_prompts(["star"], 0)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_context_set_to_words_embeds_like_the_written_prompt(model, position):
    text = PromptedText(model, CLASSES, 4, position)
    ctx = text.initial_context("a photo of a", torch.Generator())
    got = text.encode(ctx.expand(len(CLASSES), -1, -1), torch.arange(len(CLASSES)))
    written = [p.replace("X X X X", "a photo of a") if position == "end" else p for p in text.prompts]
    if position == "middle":
        written = [f"a photo {c} of a." for c in CLASSES]
    if position == "front":
        written = [f"{c} a photo of a." for c in CLASSES]
    with torch.no_grad():
        direct = F.normalize(model.encode_text(model.tokenize(written)), dim=-1)
    assert torch.allclose(got, direct, atol=1e-6)
    slots = text.slots[0].nonzero().flatten().tolist()
    assert slots == {"end": [1, 2, 3, 4], "middle": [1, 2, 4, 5], "front": [2, 3, 4, 5]}[position]


def test_gradients_reach_the_context_and_not_the_model(model):
    text = PromptedText(model, CLASSES, 2)
    ctx = torch.zeros(len(CLASSES), 2, text.width, requires_grad=True)
    text.encode(ctx, torch.arange(len(CLASSES))).sum().backward()
    assert ctx.grad is not None and float(ctx.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="--ctx-init 'a photo' gives 2 tokens; --n-ctx is 4"):
        PromptedText(model, CLASSES, 4).initial_context("a photo", torch.Generator())
    with pytest.raises(ValueError, match="'x ray'"):
        PromptedText(model, ["x ray", "star"], 2)


def test_coop_logits_are_the_scaled_cosines_and_class_specific_context_is_per_class(model):
    text = PromptedText(model, CLASSES, 2)
    coop = CoOp(text, len(CLASSES), seed=0)
    x, classes = inputs(5), torch.tensor([3, 1])
    t = text.encode(coop.ctx.expand(2, -1, -1), classes)
    assert torch.allclose(coop.logits(text, x, classes), coop.scale * x.features @ t.T, atol=1e-6)
    assert coop.scale == pytest.approx(float(model.logit_scale))
    specific = CoOp(text, len(CLASSES), class_specific=True, seed=0)
    assert specific.ctx.shape == (len(CLASSES), 2, text.width)
    assert torch.equal(specific.context(classes), specific.ctx[classes])


def test_cocoop_meta_net_shapes_and_a_zero_meta_net_is_coop(model):
    text = PromptedText(model, CLASSES, 2)
    cocoop = CoCoOp(text, len(CLASSES), seed=0)
    first, last = cocoop.meta_net[0], cocoop.meta_net[2]
    assert (first.in_features, first.out_features, last.out_features) == (32, 2, text.width)  # D -> D/16 -> W
    x, classes = inputs(3), torch.arange(4)
    assert cocoop.class_text(text, x, classes).shape == (3, 4, 32)
    assert cocoop.shift(x).shape == (3, text.width)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    coop = CoOp(text, len(CLASSES), seed=0)
    coop.ctx.data.copy_(cocoop.ctx.data)
    assert torch.allclose(cocoop.logits(text, x, classes), coop.logits(text, x, classes), atol=1e-5)


def test_tomm_starts_as_coop_and_its_gate_guides_the_image_feature(model):
    text = PromptedText(model, CLASSES, 2)
    tomm, coop = TommStyle(text, 4, seed=0), CoOp(text, 4, seed=0)
    x, classes = inputs(4), torch.arange(4)
    assert torch.allclose(tomm.logits(text, x, classes), coop.logits(text, x, classes), atol=1e-5)
    with torch.no_grad():
        tomm.gate.fill_(0.5)
    t = text.encode(coop.ctx.expand(4, -1, -1), classes)
    attended = torch.softmax(tomm.scale * x.features @ t.T, dim=1) @ t
    expected = tomm.scale * F.normalize(x.features + 0.5 * attended, dim=-1) @ t.T
    assert torch.allclose(tomm.logits(text, x, classes), expected, atol=1e-5)


def test_nt_xent_follows_simclr_formula():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64)
    za, zb = F.normalize(a, dim=-1), F.normalize(b, dim=-1)

    def one_side(x, y):
        total = 0.0
        for i in range(4):
            denom = sum(math.exp(float(x[i] @ y[j]) / 0.1) for j in range(4))
            denom += sum(math.exp(float(x[i] @ x[j]) / 0.1) for j in range(4) if j != i)
            total += -math.log(math.exp(float(x[i] @ y[i]) / 0.1) / denom)
        return total / 4

    assert float(nt_xent(a, b)) == pytest.approx((one_side(za, zb) + one_side(zb, za)) / 2, rel=1e-9)


def test_gopro_prompts_start_alike_for_every_image_and_need_views(model):
    text = PromptedText(model, CLASSES, 2)
    gopro = GOPro(text, 4, stats_dim=64, seed=0)
    x, classes = inputs(3), torch.arange(4)
    t = gopro.class_text(text, x, classes)
    assert torch.allclose(t[0], t[1], atol=1e-6) and torch.allclose(t[1], t[2], atol=1e-6)
    with pytest.raises(ValueError, match="two augmented views"):
        gopro.loss(text, x, torch.tensor([0, 1, 2]), classes)
    loss = gopro.loss(text, x, torch.tensor([0, 1, 2]), classes, (inputs(3, seed=1), inputs(3, seed=2)))
    loss.backward()
    assert gopro.meta_net.weight.grad is not None and float(gopro.meta_net.weight.grad.abs().sum()) > 0


def test_training_fits_the_shots(model):
    text = PromptedText(model, CLASSES, 4)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(24) % 2 + 2  # classes 2 and 3
    centres = F.normalize(torch.randn(4, 32, generator=g), dim=-1)
    shots = PromptInputs(
        F.normalize(centres[labels] + 0.1 * torch.randn(24, 32, generator=g), dim=-1), torch.zeros(24, 64)
    )
    classes = torch.tensor([2, 3])
    coop = CoOp(text, 4, ctx_init="a photo of a", seed=0)
    before = prompt_accuracy(coop, text, shots, labels, classes)
    losses = train_prompts(coop, text, shots, labels, classes, PromptSettings(n_ctx=4, steps=60, lr=0.05), 0)
    assert losses[-1] < losses[0] and prompt_accuracy(coop, text, shots, labels, classes) >= max(before, 0.9)
    with pytest.raises(ValueError, match="a label outside"):
        prompt_accuracy(coop, text, shots, labels, torch.tensor([2]))


def test_base_to_new_arithmetic():
    base, new = split_classes(5)
    assert base.tolist() == [0, 1, 2] and new.tolist() == [3, 4]
    assert harmonic_mean(0.8, 0.6) == pytest.approx(2 * 0.8 * 0.6 / 1.4)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert among(torch.tensor([4, 0, 3, 1]), new).tolist() == [0, 2]
    with pytest.raises(ValueError, match="at least 2 classes"):
        split_classes(1)
    rows = [
        {"method": m, "k": 4, "seed": s, "base": b, "new": 0.5, "harmonic": 0.5}
        for m, bases in (("coop", (0.7, 0.8, 0.75)), ("zero_shot", (0.6, 0.6, 0.65)))
        for s, b in enumerate(bases)
    ]
    found = {(c["method"], c["score"]): c for c in comparisons(rows)}
    diff = found[("coop", "base")]
    half = 4.302653 * math.sqrt(((0.1 - 0.4 / 3) ** 2 * 2 + (0.2 - 0.4 / 3) ** 2) / 2) / math.sqrt(3)  # t(0.975, 2)
    assert diff["mean"] == pytest.approx(0.4 / 3) and diff["n"] == 3  # differences +0.10, +0.20, +0.10
    assert (diff["low"], diff["high"]) == pytest.approx((0.4 / 3 - half, 0.4 / 3 + half), rel=1e-5)
    assert found[("coop", "new")]["mean"] == 0.0


def test_a_prompt_run_writes_weights_and_report_and_resumes(run, tmp_path, monkeypatch):
    settings = PromptSettings(n_ctx=2, ctx_init="a photo", steps=3, batch_size=8)
    request = PromptRequest(
        str(run), "synthetic:shapes", "colour", ["coop", "gopro"], [1, 2], [0], max_records=40, settings=settings,
        views=2,
    )  # fmt: skip
    report = run_prompts(request, tmp_path, data_overrides=["data.eval_size=40"], progress=False)
    assert {(e["method"], e["k"]) for e in report["summary"]} == {
        (m, k) for m in ("zero_shot", "coop", "gopro") for k in (1, 2)
    }
    for row in report["rows"]:
        assert row["harmonic"] == pytest.approx(harmonic_mean(row["base"], row["new"]))
    assert (tmp_path / "prompts" / "gopro-k2-s0.safetensors").exists()
    assert (tmp_path / "prompts.png").stat().st_size > 10_000 and "| coop | 2 |" in (tmp_path / "report.md").read_text()

    lines = (tmp_path / "prompts.jsonl").read_text().splitlines()
    (tmp_path / "prompts.jsonl").write_text("\n".join(lines[:4]) + "\n")  # killed after four rows
    measured = []
    real = prompt_run._measure
    monkeypatch.setattr(
        prompt_run,
        "_measure",
        lambda scene, req, m, k, s, out: measured.append((m, k)) or real(scene, req, m, k, s, out),
    )
    again = run_prompts(request, tmp_path, data_overrides=["data.eval_size=40"], progress=False)
    assert measured == [("gopro", 1), ("gopro", 2)]
    assert len(again["rows"]) == 6 and json.loads((tmp_path / "report.json").read_text())["rows"] == again["rows"]
    fewer = replace(request, methods=["coop"], shots=[2])  # a narrower rerun reports only what it asks for
    narrow = run_prompts(fewer, tmp_path, data_overrides=["data.eval_size=40"], progress=False)
    assert {(r["method"], r["k"]) for r in narrow["rows"]} == {("zero_shot", 2), ("coop", 2)} and len(measured) == 2


def test_bad_prompt_inputs_are_named(run, tmp_path, capsys):
    base = ["adapt", "prompt", str(run), "--set", "data.eval_size=40", "--max-records", "40", "--no-progress"]
    assert main([*base, "--task", "colour", "--shots", "500", "--out", str(tmp_path / "a")]) == 2
    assert "--shots 500: these classes have fewer training images: red" in capsys.readouterr().err
    assert main([*base, "--methods", "coop,maple", "--out", str(tmp_path / "b")]) == 2
    assert "--methods maple: choose from coop, cocoop, tomm, gopro" in capsys.readouterr().err
    assert main([*base, "--n-ctx", "0", "--out", str(tmp_path / "c")]) == 2
    assert "--n-ctx must be positive" in capsys.readouterr().err
    assert main([*base, "--methods", "gopro", "--views", "1", "--out", str(tmp_path / "d")]) == 2
    assert "--views 1: GOPro needs at least 2" in capsys.readouterr().err
    names = tmp_path / "names.txt"
    for text, message in (
        ("ball\nbox\nball\nstar\ncross\ngem\n", "'ball' is on lines 1 and 3"),
        ("ball\n\nbox\n", "line 2 is empty"),
        ("ball\nbox\n", "--classnames .*: 2 names for the 6 classes of task 'shape'"),
    ):
        names.write_text(text)
        assert main([*base, "--classnames", str(names), "--shots", "1", "--out", str(tmp_path / "e")]) == 2
        assert re.search(message, capsys.readouterr().err)


def test_open_clip_towers_take_prompt_context_like_written_words(tmp_path):
    from contrastkit.config import ModelConfig
    from contrastkit.models.build import build_model
    from helpers import save_tiny_open_clip

    name, weights = save_tiny_open_clip(tmp_path)
    spec = f"open_clip:{name}"
    model = build_model(ModelConfig(image_tower=spec, text_tower=spec, embed_dim=32, pretrained=str(weights)))
    model.eval().requires_grad_(False)
    text = PromptedText(model, CLASSES, 4, "end")
    assert text.table is model.text_tower.model.token_embedding
    ctx = text.initial_context("a photo of a", torch.Generator())
    got = text.encode(ctx.expand(len(CLASSES), -1, -1), torch.arange(len(CLASSES)))
    with torch.no_grad():
        direct = F.normalize(model.encode_text(model.tokenize([f"a photo of a {c}." for c in CLASSES])), dim=-1)
    assert torch.allclose(got, direct, atol=1e-5)
    coop = CoOp(text, len(CLASSES), seed=0)
    shots = PromptInputs(F.normalize(torch.randn(8, 32), dim=-1), torch.zeros(8, 64))
    losses = train_prompts(coop, text, shots, torch.arange(8) % 4, torch.arange(4), PromptSettings(steps=5), 0)
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("position", ["end", "middle"])
def test_hugging_face_towers_take_prompt_context_like_written_words(position):
    """MiniLM (BERT WordPiece, [CLS] ... [SEP], mean pooling): the hook fills ``word_embeddings`` at the slots."""
    from contrastkit.config import ModelConfig
    from contrastkit.models.build import build_model

    model = build_model(ModelConfig(text_tower="hf:minilm", embed_dim=16, context_length=32, lock_text=True))
    model.eval().requires_grad_(False)
    text = PromptedText(model, CLASSES, 4, position)
    assert text.table is model.text_tower.model.embeddings.word_embeddings
    assert text.slots.sum(dim=1).tolist() == [4] * len(CLASSES)
    ctx = text.initial_context("a photo of a", torch.Generator())
    got = text.encode(ctx.expand(len(CLASSES), -1, -1), torch.arange(len(CLASSES)))
    written = [f"a photo of a {c}." if position == "end" else f"a photo {c} of a." for c in CLASSES]
    with torch.no_grad():
        direct = F.normalize(model.encode_text(model.tokenize(written)), dim=-1)
    assert torch.allclose(got, direct, atol=1e-5)
    with torch.no_grad():
        placeholders = F.normalize(model.encode_text(text.tokens), dim=-1)
    assert (got - placeholders).abs().max() > 1e-2  # the slots really were replaced
    coop = CoOp(text, len(CLASSES), seed=0)
    start = coop.ctx.detach().clone()
    shots = PromptInputs(F.normalize(torch.randn(8, 16), dim=-1), torch.zeros(8, 64))
    losses = train_prompts(coop, text, shots, torch.arange(8) % 4, torch.arange(4), PromptSettings(steps=5), 0)
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)
    assert not torch.equal(coop.ctx.detach(), start)  # the context learned through the BERT tower
