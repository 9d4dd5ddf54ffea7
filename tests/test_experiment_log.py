"""train.log: TensorBoard event files and an offline wandb run carry what metrics.jsonl and the report say."""

from __future__ import annotations

import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from contrastkit.config import ConfigError, load_config
from contrastkit.engine.experiment_log import RunLog
from contrastkit.engine.recipe import check_recipe
from contrastkit.engine.trainer import train
from helpers import TINY_TRAINING

LOGGED = TINY_TRAINING + [
    "data.train_size=64",
    "train.steps=4",
    "train.eval_every=2",
    "train.log=[jsonl, tensorboard, wandb]",
]


def events(folder) -> EventAccumulator:
    return EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0}).Reload()


@pytest.mark.slow
def test_tensorboard_and_wandb_receive_the_training_lines_the_val_checks_and_the_final_evaluation(tmp_path):
    report = train(load_config("configs/demo.yaml", LOGGED), tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "split" not in line]
    board = events(tmp_path / "tensorboard")
    tags = set(board.Tags()["scalars"])
    assert {"train/loss", "train/loss/clip", "train/lr", "train/logit_scale", "train/samples_per_s"} <= tags
    loss = board.Scalars("train/loss")
    assert [e.step for e in loss] == [line["step"] for line in steps]
    assert [e.value for e in loss] == pytest.approx([line["loss"] for line in steps], rel=1e-6)
    val = next(line for line in lines if line.get("split") == "val")
    assert board.Scalars("val/zeroshot/shape/acc1")[0].value == pytest.approx(val["val/zeroshot/shape/acc1"])
    final = board.Scalars("eval/zeroshot/shape/acc1")
    assert final[0].step == 4 and final[0].value == pytest.approx(report["zeroshot"]["shape"]["acc1"])
    assert "eval/embedding_gap" in board.Tags()["images"]

    (wandb_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    recorded = wandb_file.read_bytes()
    for key in (b"train/loss/clip", b"val/zeroshot/shape/acc1", b"eval/zeroshot/shape/acc1", b"eval/embedding_gap"):
        assert key in recorded, key


def test_a_resumed_tensorboard_log_drops_what_came_after_the_resume_step(tmp_path):
    first = RunLog(tmp_path, ["tensorboard"])
    for step in (1, 2, 3, 4):
        first.write({"step": step, "loss": float(step)})
    first.close()
    resumed = RunLog(tmp_path, ["tensorboard"], resume_step=2)
    for step in (3, 4):
        resumed.write({"step": step, "loss": 10.0 * step})
    resumed.close()
    loss = events(tmp_path / "tensorboard").Scalars("train/loss")
    assert [(e.step, e.value) for e in loss] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        1.0,
        2.0,
        30.0,
        40.0,
    ]


def test_an_unknown_sink_or_a_missing_package_stops_before_training(monkeypatch):
    with pytest.raises(ConfigError, match=r"train.log\[1\]: 'csv' is not allowed"):
        load_config("configs/demo.yaml", ["train.log=[jsonl, csv]"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"train.log: 'wandb' needs the wandb package: pip install"):
        check_recipe(load_config("configs/demo.yaml", ["train.log=[wandb]"]))
    check_recipe(load_config("configs/demo.yaml", ["train.log=[jsonl]"]))
