"""Text-only transfer (CLOSE / CapDec): noise injection and mean shift against their formulas, a head trained on
text that transfers to shifted "images" only with the correction, and the resumable command."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from contrastkit.adapt.text_only import inject_noise, modality_shift, train_text_head
from contrastkit.adapt.text_only_run import TextOnlyRequest, best_noise, run_text_only, summarise
from contrastkit.cli import main
from contrastkit.config import load_config
from contrastkit.engine.trainer import train
from helpers import TINY_TRAINING


def test_noise_injection_draws_gaussian_noise_of_std_w_then_renormalises():
    text = F.normalize(torch.randn(1, 64, dtype=torch.float64), dim=-1).expand(20000, 64)
    g = torch.Generator().manual_seed(0)
    noisy = inject_noise(text, 0.1, g)
    assert torch.allclose(noisy.norm(dim=-1), torch.ones(20000, dtype=torch.float64))
    # before renormalisation the noise is N(0, 0.01 I): recompute it with the same draws
    raw = text + torch.randn(text.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    assert torch.allclose(noisy, F.normalize(raw, dim=-1))
    assert (raw - text).std().item() == pytest.approx(0.1, rel=0.02)
    assert (raw - text).mean().abs().item() < 0.002
    assert torch.allclose(inject_noise(text[:3], 0.0, g), text[:3])
    with pytest.raises(ValueError, match="w must be >= 0"):
        inject_noise(text, -0.1, g)


def test_mean_shift_is_the_difference_of_the_modalities_means():
    image = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=-1)
    expected = [sum(image[i, d] for i in range(5)) / 5 - sum(text[i, d] for i in range(5)) / 5 for d in range(4)]
    assert torch.allclose(modality_shift(image, text), torch.tensor(expected, dtype=torch.float64))
    with pytest.raises(ValueError, match="paired embeddings"):
        modality_shift(image, text[:4])


def _gap_world(n: int, seed: int):
    """Two balanced classes along axis 0; the image side sits 0.3 lower on that axis than the text side."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    text = torch.zeros(n, 8, dtype=torch.float64)
    text[:, 0] = torch.where(labels == 1, 0.5, 0.1)
    text[:, 1] = 1.0
    text[:, 2:] = 0.05 * torch.randn(n, 6, generator=g, dtype=torch.float64)
    image = text.clone()
    image[:, 0] -= 0.3  # the gap: images of class 1 look like texts of class 0
    return text, image, labels


def test_the_text_head_fits_text_and_the_shift_carries_it_to_images():
    text, image, labels = _gap_world(400, 0)
    plain = train_text_head(text, labels, 2, w=0.0, steps=200, seed=0)
    assert plain.accuracy(text, labels) > 0.95
    shift = modality_shift(image, text)
    assert shift[0] < -0.2 and shift[1:].abs().max() < 0.05
    shifted = train_text_head(text, labels, 2, w=0.0, shift=shift, steps=200, seed=0)
    _, test_image, test_labels = _gap_world(400, 1)
    assert plain.accuracy(test_image, test_labels) < 0.75
    assert shifted.accuracy(test_image, test_labels) > 0.95
    with pytest.raises(ValueError, match="one label per text"):
        train_text_head(text, labels[:5], 2, w=0.1)


def test_summary_and_best_noise_over_seeds():
    rows = [
        {"w": w, "shift": s, "seed": seed, "acc1": acc}
        for (w, s, seed, acc) in [
            (0.0, False, 0, 0.40), (0.0, False, 1, 0.50), (0.1, False, 0, 0.70), (0.1, False, 1, 0.80),
            (0.0, True, 0, 0.60), (0.0, True, 1, 0.60), (0.1, True, 0, 0.50), (0.1, True, 1, 0.60),
        ]
    ]  # fmt: skip
    summary = summarise(rows)
    first = summary[0]
    assert (first["shift"], first["w"], first["n"]) == (False, 0.0, 2)
    assert first["mean"] == pytest.approx(0.45) and first["sd"] == pytest.approx(0.0707107, rel=1e-5)
    best = best_noise(summary)
    assert best["noise_only"]["w"] == 0.1 and best["noise_only"]["gain_over_w0"] == pytest.approx(0.30)
    assert best["mean_shift"]["w"] == 0.0 and best["mean_shift"]["gain_over_w0"] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-only")
    train(load_config("configs/demo.yaml", TINY_TRAINING + ["data.train_size=300"]), root)
    return root


def test_a_text_only_run_writes_the_report_and_resumes(run, tmp_path, monkeypatch):
    request = TextOnlyRequest(str(run), "synthetic:shapes", "colour", [0.0, 0.1], [0, 1], max_records=150, steps=40)
    report = run_text_only(request, tmp_path, data_overrides=["data.eval_size=150"], progress=False)
    assert {(s["shift"], s["w"], s["n"]) for s in report["summary"]} == {
        (False, 0.0, 2), (False, 0.1, 2), (True, 0.0, 2), (True, 0.1, 2)
    }  # fmt: skip
    for name in ("report.md", "report.json", "text_only.png", "sweep.jsonl"):
        assert (tmp_path / name).stat().st_size > 0
    assert all(0.0 <= r["acc1"] <= 1.0 for r in report["rows"])
    heads = {p.name: load_file(p) for p in (tmp_path / "heads").iterdir()}  # every trained head is kept
    assert len(heads) == 8 and heads["w0.1-shift-s1.safetensors"]["weight"].shape[0] == 8  # 8 colours
    assert not torch.equal(heads["w0-plain-s0.safetensors"]["weight"], heads["w0.1-plain-s0.safetensors"]["weight"])
    # a rerun with one more noise level measures only that level
    calls = []
    import contrastkit.adapt.text_only_run as module

    real = module.measure
    monkeypatch.setattr(module, "measure", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    more = TextOnlyRequest(str(run), "synthetic:shapes", "colour", [0.0, 0.1, 0.2], [0, 1], max_records=150, steps=40)
    run_text_only(more, tmp_path, data_overrides=["data.eval_size=150"], progress=False)
    assert calls == [0.2] * 4
    assert len((tmp_path / "sweep.jsonl").read_text().splitlines()) == 12


def test_the_command_checks_its_arguments(run, tmp_path, capsys):
    base = ["adapt", "text-only", str(run), "--set", "data.eval_size=100", "--max-records", "100", "--no-progress"]
    assert main([*base, "--steps", "0", "--out", str(tmp_path / "a")]) == 2
    assert "--steps must be positive, got 0" in capsys.readouterr().err
    assert main([*base, "--task", "texture", "--out", str(tmp_path / "b")]) == 2
    assert "--task 'texture': the data defines shape, colour, size" in capsys.readouterr().err
    assert main([*base, "--noise", "0,-1", "--out", str(tmp_path / "c")]) == 2
    assert "--noise: give noise levels w >= 0" in capsys.readouterr().err
    out = tmp_path / "d"
    assert (
        main([*base, "--task", "colour", "--noise", "0,0.1", "--seeds", "0", "--steps", "20", "--out", str(out)]) == 0
    )
    assert "Text-only transfer" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["request"]["noise"] == [0.0, 0.1]
