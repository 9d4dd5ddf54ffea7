"""Residual directions (RAVE): the direction, threshold, guidance loss and AUC against direct computations; the
guided network and the command on a tiny run."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.adapt.residual import aligned_texts, guidance_loss, residual_direction, separation_auc
from contrastkit.adapt.residual_guide import GuideSettings, ResidualNet, train_guided
from contrastkit.cli import main
from contrastkit.config import load_config
from contrastkit.engine.trainer import train
from contrastkit.models.load import load_run
from helpers import TINY_TRAINING


def test_direction_and_threshold_follow_the_formula():
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.0, 2.0], [0.0, 3.0, 3.0]], dtype=torch.float64)
    direction = residual_direction(a, b)
    v_neg = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64) / math.sqrt(0.5)
    mean_b = (torch.tensor([0.0, 0.0, 1.0]) + torch.tensor([0.0, 1.0, 1.0]) / math.sqrt(2)) / 2
    v_pos = mean_b.double() / mean_b.double().norm()
    v_res = (v_pos - v_neg) / (v_pos - v_neg).norm()
    assert torch.allclose(direction.vector, v_res)
    assert direction.threshold == pytest.approx(float(v_pos @ v_res))
    assert torch.allclose(direction.score(b), F.normalize(b, dim=-1) @ v_res)
    with pytest.raises(ValueError, match="same mean embedding"):
        residual_direction(a, a)
    with pytest.raises(ValueError, match="at least one embedding"):
        residual_direction(a[:0], b)


def test_guidance_loss_auc_and_aligned_texts():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(30, 6, generator=g, dtype=torch.float64) + torch.tensor([2.0, 0, 0, 0, 0, 0]), dim=-1)
    b = F.normalize(torch.randn(30, 6, generator=g, dtype=torch.float64) + torch.tensor([0, 2.0, 0, 0, 0, 0]), dim=-1)
    direction = residual_direction(a, b)
    expected = sum((float(b[i] @ direction.vector) - direction.threshold) ** 2 for i in range(30)) / 30
    assert float(guidance_loss(b * 3.0, direction)) == pytest.approx(expected)  # scale-free: cosines
    sa, sb = direction.score(a).tolist(), direction.score(b).tolist()
    pairs = sum(1.0 if y > x else 0.5 if y == x else 0.0 for x in sa for y in sb) / (30 * 30)
    assert separation_auc(direction, a, b) == pytest.approx(pairs)
    assert separation_auc(direction, a, b) > 0.9
    texts = ["towards b", "towards a", "sideways"]
    emb = torch.stack([direction.vector, -direction.vector, F.normalize(torch.ones(6, dtype=torch.float64), dim=0)])
    ranked = aligned_texts(direction, texts, emb, k=2)
    assert [r["text"] for r in ranked] == ["towards b", "sideways"] and ranked[0]["cos"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("residual")
    train(load_config("configs/demo.yaml", TINY_TRAINING + ["data.train_size=300"]), root)
    return root


def test_the_network_starts_as_the_identity_and_the_guidance_moves_images(run):
    net = ResidualNet()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(net(x), x)
    model, _ = load_run(run)
    g = torch.Generator().manual_seed(1)
    dark = torch.rand(64, 3, 32, 32, generator=g) * 0.3 - 1.0  # dark pixels in the tiny tower's [-1, 1] units
    bright = dark + 1.5
    with torch.no_grad():
        direction = residual_direction(model.encode_image(dark), model.encode_image(bright))
        before = float(direction.score(model.encode_image(dark[:16])).mean())
        target = float(direction.score(model.encode_image(bright[:16])).mean())
    guided, losses = train_guided(
        model, direction, dark, GuideSettings(steps=100, lr=1e-2, reconstruction_weight=0.0), progress=False
    )
    with torch.no_grad():
        after = float(direction.score(model.encode_image(guided(dark[:16]))).mean())
    assert len(losses) == 100
    assert after - before > 0.5 * (target - before) > 0  # at least half way to the bright images
    assert not any(p.requires_grad for p in model.parameters())  # the encoder stays frozen


def test_the_command_writes_the_report(run, tmp_path, capsys):
    base = ["adapt", "residual", str(run), "--set", "data.eval_size=60", "--set", "data.train_size=60"]
    out = tmp_path / "r"
    code = main(
        [*base, "--from", "synthetic:shapes-dark", "--to", "synthetic:shapes", "--max-records", "60",
         "--guide-steps", "5", "--no-progress", "--out", str(out)]
    )  # fmt: skip
    assert code == 0 and "Residual direction (RAVE)" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert 0.5 <= report["test_auc"] <= 1.0 and len(report["words"]) == 10
    assert report["guided"]["settings"]["steps"] == 5
    for name in ("direction.safetensors", "guide.safetensors", "residual_examples.png", "residual_scores.png"):
        assert (out / name).stat().st_size > 0
    assert main([*base, "--from", "synthetic:shapes", "--to", "synthetic:shapes", "--out", str(tmp_path / "s")]) == 2
    assert "same mean embedding" in capsys.readouterr().err
    assert main([*base, "--from", "synthetic:nope", "--to", "synthetic:shapes", "--out", str(tmp_path / "n")]) == 2
    assert "synthetic:nope" in capsys.readouterr().err
