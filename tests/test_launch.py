"""The two ways a user starts scaled training for real: `torchrun ... contrastkit train` and `train.compile`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastkit.config import load_config
from contrastkit.engine.trainer import train
from test_scale import SMALL, _free_port, assert_same_training

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_launches_the_cli_on_two_gloo_ranks(tmp_path):
    """The README's command, through torchrun itself: 2 ranks train like one process on the global batch."""
    single = tmp_path / "single"
    train(load_config("configs/demo.yaml", SMALL + ["train.threads=1"]), single)
    torchrun = Path(sys.executable).with_name("torchrun")
    contrastkit = Path(sys.executable).with_name("contrastkit")
    assert torchrun.exists() and contrastkit.exists(), "torch and contrastkit install these entry points"
    ranked = tmp_path / "ranked"
    sets = [arg for item in SMALL + ["train.threads=1"] for arg in ("--set", item)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            str(torchrun),
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(_free_port()),
            "--no-python",
            str(contrastkit),
            "train",
            "configs/demo.yaml",
            "--out",
            str(ranked),
            "--no-progress",
            *sets,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((ranked / "report.json").read_text())
    assert report["timing"]["world_size"] == 2
    cfg = load_config("configs/demo.yaml", SMALL)
    assert_same_training(single, ranked, cfg.train.lr, cfg.train.steps)
    # Only rank 0 writes the run directory: one metrics line per logged step, not two.
    assert len((ranked / "metrics.jsonl").read_text().splitlines()) == cfg.train.steps


def test_compiled_towers_train_like_eager_towers(tmp_path):
    """`train.compile=true` really compiles both towers (dynamo captures graphs) and trains to the same losses."""
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    small = SMALL + ["train.steps=2", "eval.max_records=8"]
    train(load_config("configs/demo.yaml", small), tmp_path / "eager")
    assert counters["stats"]["unique_graphs"] == 0
    train(load_config("configs/demo.yaml", small + ["train.compile=true"]), tmp_path / "compiled")
    assert counters["stats"]["unique_graphs"] >= 2  # at least one graph per tower
    cfg = load_config("configs/demo.yaml", small)
    assert_same_training(tmp_path / "eager", tmp_path / "compiled", cfg.train.lr, cfg.train.steps)
    torch._dynamo.reset()


@pytest.mark.parametrize("value", ["yes please", "2"])
def test_compile_flag_rejects_non_booleans(value):
    with pytest.raises(Exception, match="train.compile"):
        load_config("configs/demo.yaml", [f"train.compile={value}"])
