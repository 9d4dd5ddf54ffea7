"""The few-shot ladder: Tip-Adapter against its formula, α/β chosen on validation, a resumable run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from contrastkit.adapt import few_shot, lp_ft
from contrastkit.adapt.few_shot_run import LadderRequest, run_ladder
from contrastkit.adapt.tip_adapter import affinity, choose_alpha_beta, tip_adapter_logits
from contrastkit.cli import main
from contrastkit.config import load_config
from contrastkit.engine.trainer import train
from helpers import TINY_TRAINING


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def test_tip_adapter_logits_follow_the_formula():
    query, weights, keys = unit(3, 4), unit(2, 4, seed=1), unit(5, 4, seed=2)
    labels = torch.tensor([0, 1, 1, 0, 1])
    logits = tip_adapter_logits(query, weights, keys, labels, alpha=0.7, beta=5.5, scale=20.0)
    for q in range(3):
        for c in range(2):
            cache = sum(math.exp(-5.5 * (1 - float(query[q] @ keys[n]))) for n in range(5) if labels[n] == c)
            assert float(logits[q, c]) == pytest.approx(20.0 * float(query[q] @ weights[c]) + 0.7 * cache, rel=1e-12)
    assert torch.allclose(affinity(keys, keys, 3.0).diagonal(), torch.ones(5, dtype=torch.float64))
    zero = tip_adapter_logits(query, weights, keys, labels, alpha=0.0, beta=5.5, scale=20.0)
    assert torch.allclose(zero, 20.0 * query @ weights.T)


def test_alpha_and_beta_come_from_validation():
    # the zero-shot head is wrong for class 1; the cache holds the right answer: a large alpha must win
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    keys = F.normalize(torch.tensor([[1.0, 0.2], [1.0, -0.2]], dtype=torch.float64), dim=-1)
    key_labels = torch.tensor([0, 1])
    val = F.normalize(torch.tensor([[1.0, 0.19], [1.0, -0.21]], dtype=torch.float64), dim=-1)
    alpha, beta, accuracy = choose_alpha_beta(val, torch.tensor([0, 1]), weights, keys, key_labels, scale=1.0)
    assert accuracy == 1.0 and alpha > 0.25 and beta > 1.0
    plain = tip_adapter_logits(val, weights, keys, key_labels, alpha=0.0, beta=beta, scale=1.0)
    assert (plain.argmax(1) == torch.tensor([0, 1])).float().mean() == 0.5


def test_the_probe_head_scores_like_sklearn_also_for_two_classes():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    for n_present in (2, 3):
        labels = torch.arange(30) % n_present
        x = F.normalize(torch.randn(30, 5, generator=g) + F.one_hot(labels, 5).float() * 2, dim=-1)
        weight, bias = lp_ft.probe_head(x, labels, 4, c=1.0)  # class 3 (and 2) have no shots
        reference = LogisticRegression(C=1.0, max_iter=1000).fit(x.double().numpy(), labels.numpy())
        ours = (x @ weight.T + bias).argmax(1)
        assert torch.equal(ours, torch.from_numpy(reference.predict(x.double().numpy())))
        assert (ours < n_present).all()
        if n_present == 2:  # the two rows differ by sklearn's one row: same probabilities
            assert torch.allclose(weight[1] - weight[0], torch.from_numpy(reference.coef_[0]).float(), atol=1e-5)


def _tuning_inputs(run):
    """The run's model, a copy of its weights, 12 images of 3 classes and a random unit head."""
    from contrastkit.models.load import load_run

    model, _ = load_run(run)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pixels = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, before, pixels, torch.arange(12) % 3, F.normalize(torch.randn(3, 32), dim=-1)


def test_fine_tuning_starts_from_the_head_and_leaves_the_model_alone(run):
    model, before, pixels, labels, weight = _tuning_inputs(run)
    untouched = lp_ft.fine_tune(model, weight, torch.zeros(3), 5.0, pixels, labels, lp_ft.FineTuneSettings(steps=0), 0)
    with torch.no_grad():
        direct = 5.0 * F.normalize(model.encode_image(pixels), dim=-1) @ weight.T
    assert torch.allclose(untouched(pixels), direct, atol=1e-5)
    tuned = lp_ft.fine_tune(
        model, weight, torch.zeros(3), 5.0, pixels, labels, lp_ft.FineTuneSettings(steps=30, lr=1e-2), 0
    )
    assert lp_ft.accuracy(tuned, pixels, labels) > lp_ft.accuracy(untouched, pixels, labels)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy was tuned


def test_the_lora_rung_starts_as_ft_and_trains_only_adapters_and_head(run):
    from contrastkit.config import LoraConfig

    model, before, pixels, labels, weight = _tuning_inputs(run)
    head = (weight, torch.zeros(3), 5.0, pixels, labels)
    lora = LoraConfig(rank=4, alpha=8)
    start = lp_ft.fine_tune(model, *head, lp_ft.FineTuneSettings(steps=0), 0, lora)
    assert torch.allclose(start(pixels), lp_ft.fine_tune(model, *head, lp_ft.FineTuneSettings(steps=0), 0)(pixels))
    tuned = lp_ft.fine_tune(model, *head, lp_ft.FineTuneSettings(steps=30, lr=1e-2), 0, lora)
    trained = {n for n, p in tuned.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or n in ("weight", "bias") for n in trained)
    frozen = {n.replace(".base_layer", ""): p for n, p in tuned.model.named_parameters() if "lora_" not in n}
    # only adapters and head moved (peft adapts attention by merging and unmerging: float rounding at most)
    assert all(torch.allclose(before[n], p, rtol=0, atol=1e-6) for n, p in frozen.items())
    assert lp_ft.accuracy(tuned, pixels, labels) > lp_ft.accuracy(start, pixels, labels)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ladder")
    train(load_config("configs/demo.yaml", TINY_TRAINING + ["data.train_size=300"]), root)
    return root


def test_a_ladder_run_writes_the_report_and_resumes(run, tmp_path, monkeypatch):
    request = LadderRequest(str(run), "synthetic:shapes", "colour", [1, 2], [0, 1], max_records=200, finetune_steps=3)
    settings = ["data.eval_size=200"]
    report = run_ladder(request, tmp_path, data_overrides=settings, progress=False)
    assert {(s["method"], s["k"], s["n"]) for s in report["summary"]} == {
        (m, k, 2) for m in few_shot.METHODS for k in (1, 2)
    }
    assert (tmp_path / "few_shot.png").stat().st_size > 10_000 and "tip adapter" in (tmp_path / "report.md").read_text()
    zero = {r["acc1"] for r in report["rows"] if r["method"] == "zero_shot"}
    kept = {p.name: load_file(p) for p in (tmp_path / "weights").iterdir()}  # what each method adapted
    assert set(kept) == {f"{m}-k{k}-s{s}.safetensors" for m in few_shot.METHODS[1:] for k in (1, 2) for s in (0, 1)}
    assert kept["tip_adapter-k2-s0.safetensors"]["keys"].shape[0] == 2 * 8  # 2 shots of each of 8 colours
    assert kept["linear_probe-k1-s1.safetensors"]["weight"].shape[0] == 8
    assert any("lora_" in name for name in kept["lora-k1-s0.safetensors"]) and "weight" in kept["ft-k2-s1.safetensors"]
    assert len(zero) == 1  # the zero-shot head does not depend on the shots

    lines = (tmp_path / "ladder.jsonl").read_text().splitlines()
    per_point = len(few_shot.METHODS)
    (tmp_path / "ladder.jsonl").write_text("\n".join(lines[: 2 * per_point]) + "\n")  # killed after two points
    measured = []
    real = few_shot.ladder_rows
    monkeypatch.setattr("contrastkit.adapt.few_shot_run.ladder_rows", lambda *a: measured.append(a[-2:]) or real(*a))
    again = run_ladder(request, tmp_path, data_overrides=settings, progress=False)
    assert measured == [(2, 0), (2, 1)] and again["summary"] == report["summary"]


def test_bad_ladder_inputs_are_named(run, tmp_path, capsys):
    base = ["adapt", "few-shot", str(run), "--set", "data.eval_size=40", "--max-records", "40", "--no-progress"]
    assert main([*base, "--task", "texture", "--out", str(tmp_path / "a")]) == 2
    assert "--task 'texture': the data defines shape, colour, size" in capsys.readouterr().err
    assert main([*base, "--task", "colour", "--shots", "500", "--out", str(tmp_path / "b")]) == 2
    assert "--shots 500: these classes have fewer training images" in capsys.readouterr().err
    assert main([*base, "--shots", "0", "--out", str(tmp_path / "c")]) == 2
    assert "--shots: give positive numbers" in capsys.readouterr().err
