"""Class names that never occur in the training captions are named in the evaluation report."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from contrastkit.cli import main
from contrastkit.config import load_config
from contrastkit.engine.trainer import train
from contrastkit.evaluate.class_coverage import coverage_warning, unseen_classnames
from helpers import TINY_TRAINING


def test_class_names_match_whole_words_case_insensitively():
    captions = ["A Red Circle left of a blue square", "there is a large white star", "an ice-cream cone"]
    names = ["circle", "Square", "star", "sta", "white star", "large star", "ice cream", "zebra", ""]
    assert unseen_classnames(names, captions) == ["sta", "large star", "zebra", ""]
    assert unseen_classnames(["circle"], []) == ["circle"]


def test_the_warning_names_the_classes_and_what_to_do():
    text = coverage_warning("shape", [f"c{i}" for i in range(12)], 20, 500)
    assert text.startswith("zero-shot 'shape': 12 of 20 class names never occur in 500 training captions")
    assert "'c9'" in text and "'c10'" not in text and "and 2 more" in text and "--classnames" in text


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("coverage")
    train(load_config("configs/demo.yaml", TINY_TRAINING + ["data.train_size=200"]), root)
    return root


def test_eval_of_a_run_warns_about_class_names_its_captions_never_had(run, tmp_path, capsys):
    for name in ("circle", "zebra"):  # folder names are the class names
        (tmp_path / "folder" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(tmp_path / "folder" / name / f"{i}.png")
    out = tmp_path / "e"
    args = ["eval", "--checkpoint", str(run), "--task", "zeroshot", "--no-progress", "--no-plots"]
    assert main([*args, "--data", f"folder:{tmp_path / 'folder'}", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    (warning,) = report["warnings"]
    assert "1 of 2 class names never occur in" in warning and "'zebra'" in warning and "'circle'" not in warning
    assert f"**Warning:** {warning}." in (out / "report.md").read_text()
    assert f"WARNING: {warning}" in capsys.readouterr().out
    # the world's own class names all occur in its captions: no warning
    assert main([*args, "--max-records", "60", "--out", str(tmp_path / "f")]) == 0
    assert json.loads((tmp_path / "f" / "report.json").read_text())["warnings"] == []
