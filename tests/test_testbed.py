"""benchmarks/recipes.py on a tiny schedule: arms run per seed, reuse, shards, claim verdicts in RESULTS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import recipes  # noqa: E402 - benchmarks/ is a folder of scripts, put on the path above
import testbed_claims  # noqa: E402
import testbed_runs  # noqa: E402

TINY = testbed_runs.Schedule(
    common=(
        "data.image_size=32",
        "model.width=32",
        "model.embed_dim=16",
        "data.train_size=96",
        "data.eval_size=24",
        "eval.max_records=24",
        "train.batch_size=16",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.log_every=1",
    ),
    scratch_steps=3,
    scratch=("train.warmup_steps=1",),
    finetune_steps=2,
    finetune=("train.warmup_steps=1",),
)
BASE = testbed_runs.Arm(
    "base", "configs/clip.yaml", ("train.steps=3",), start="own", evaluations=testbed_claims.SOURCE_AND_TARGET
)


@pytest.fixture
def tiny_testbed(monkeypatch, no_plots):
    monkeypatch.setattr(recipes, "SCHEDULE", TINY)
    monkeypatch.setitem(recipes.ARMS, "base", BASE)
    trained: list[str] = []
    real_train = testbed_runs.train

    def counting_train(cfg, run_dir, resume=False):
        trained.append(Path(run_dir).name)
        return real_train(cfg, run_dir, resume=resume)

    monkeypatch.setattr(testbed_runs, "train", counting_train)
    return trained


def test_every_claim_names_known_arms_and_metrics():
    for claim in testbed_claims.CLAIMS:
        assert claim.method in testbed_claims.ARMS and claim.control in testbed_claims.ARMS, claim
        for cond in claim.conditions:
            evaluation = cond.metric.split("/")[0]
            assert evaluation in testbed_runs.EVALUATIONS, cond
            for arm in (claim.method, claim.control):
                assert evaluation in testbed_claims.ARMS[arm].evaluations, (claim, arm, cond)
    papers = {c.paper.split(" (")[0] for c in testbed_claims.CLAIMS}
    for needed in (
        "CL2L",
        "Contrastive gap",
        "CWCL",
        "MoCHi",
        "m2-mix",
        "CLIP-Refine",
        "DeGLA",
        "HQ-CLIP",
        "LaCLIP",
        "ALIGN",
        "SigLIP",
        "MEOW",
        "CoCa",
        "Temperature",
        "NegCLIP",
    ):
        assert needed in papers, needed


@pytest.mark.slow
def test_claims_run_per_seed_reuse_shards_and_write_verdicts(tiny_testbed, tmp_path):
    results = tmp_path / "RESULTS.md"
    args = [
        "--claims",
        "SigLIP,NegCLIP,CoCa,Temperature",
        "--seeds",
        "0,1",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--max-records",
        "24",
        "--results",
        str(results),
    ]
    # two shards each train their half (the base first, by whoever needs it), then a call writes the report
    assert recipes.main([*args, "--shard", "0/2"]) == 0
    assert not results.exists()
    assert recipes.main([*args, "--shard", "1/2"]) == 0
    arms = [
        "base",
        "clip-s0",
        "clip-s1",
        "siglip-s0",
        "siglip-s1",
        "coca-s0",
        "coca-s1",
        "temperature_t5-s0",
        "temperature_t5-s1",
        "temperature_t14-s0",
        "temperature_t14-s1",
        "temperature_t50-s0",
        "temperature_t50-s1",
        "clip_ft-s0",
        "clip_ft-s1",
        "negclip-s0",
        "negclip-s1",
        "clip_ft_long-s0",
        "clip_ft_long-s1",
        "negclip_long-s0",
        "negclip_long-s1",
    ]
    assert sorted(tiny_testbed) == sorted(arms)
    text = results.read_text()
    assert "## Claims on the testbed" in text and "| SigLIP | at least CLIP's accuracy" in text
    assert text.count("| NegCLIP |") == 4 and "swap_attributes" in text  # at 200 and at 1000 steps
    assert any(f"**{v}**" in text for v in ("reproduced", "against", "within noise"))
    assert "CoCa's greedy captions" in text and "CIDEr-D" in text  # read back through the saved decoder
    assert "(temperature_sweep.png)" in text and (tmp_path / "temperature_sweep.png").stat().st_size > 1000
    # a second call reuses every finished run and its evaluations
    before = len(tiny_testbed)
    assert recipes.main(args) == 0 and len(tiny_testbed) == before
    config = json.loads((tmp_path / "runs" / "negclip-s1" / "testbed.json").read_text())
    assert config["train"]["seed"] == 1 and config["model"]["init_from"] == str(tmp_path / "runs" / "base")
    assert config["train"]["steps"] == TINY.finetune_steps
    assert (tmp_path / "runs" / "negclip-s1" / "eval-shapes-val" / "report.json").exists()
