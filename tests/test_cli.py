"""The command line: train, eval, embed, data export, objectives, --help and errors."""

import csv
import json
import sys

import numpy as np
import pytest
from PIL import Image

from contrastkit.cli import main

SMALL = [
    "data.train_size=128",
    "data.eval_size=48",
    "data.image_size=32",
    "model.width=32",
    "model.embed_dim=24",
    "train.batch_size=32",
    "train.steps=3",
    "train.warmup_steps=1",
    "eval.max_records=48",
    "train.eval_every=0",
    "train.checkpoint_every=0",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    args = ["train", "configs/demo.yaml", "--out", str(out), "--no-progress"]
    for item in SMALL:
        args += ["--set", item]
    assert main(args) == 0
    return out


@pytest.mark.slow
def test_train_writes_run_directory(run_dir, capsys):
    for name in ("config.json", "metrics.jsonl", "report.json", "report.md", "latest"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "config.json").read_text())["train"]["steps"] == 3


@pytest.mark.slow
def test_eval_on_another_split(run_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(run_dir),
                "--split",
                "val",
                "--max-records",
                "40",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["n_images"] == 40 and report["split"] == "val"
    assert "zero-shot shape" in capsys.readouterr().out


@pytest.mark.slow
def test_embed_texts_and_images(run_dir, tmp_path):
    texts = tmp_path / "captions.txt"
    texts.write_text("a red circle\na small blue square to the left of a star\n")
    out = tmp_path / "t.npy"
    assert main(["embed", "--checkpoint", str(run_dir), "--texts", str(texts), "--out", str(out)]) == 0
    emb = np.load(out)
    assert emb.shape == (2, 24)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    img = tmp_path / "x.png"
    Image.new("RGB", (50, 50), (255, 0, 0)).save(img)
    out_img = tmp_path / "i.npy"
    assert main(["embed", "--checkpoint", str(run_dir), "--images", str(img), str(img), "--out", str(out_img)]) == 0
    assert np.load(out_img).shape == (2, 24)


@pytest.mark.slow
def test_embed_rejects_blank_lines(run_dir, tmp_path, capsys):
    texts = tmp_path / "captions.txt"
    texts.write_text("a red circle\n\n")
    assert main(["embed", "--checkpoint", str(run_dir), "--texts", str(texts), "--out", str(tmp_path / "x.npy")]) == 2
    assert "empty lines (2)" in capsys.readouterr().err


def test_data_export(tmp_path):
    assert main(["data", "export", "synthetic:shapes", "--out", str(tmp_path), "--limit", "5"]) == 0
    csv_files = list(tmp_path.rglob("*.csv"))
    assert len(csv_files) == 1
    with csv_files[0].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    first_image = next(v for k, v in rows[0].items() if k.startswith("image"))
    with Image.open(csv_files[0].parent / first_image) as img:
        assert img.size == (64, 64)


def test_objectives_lists_terms_with_parameters(capsys):
    assert main(["objectives"]) == 0
    out = capsys.readouterr().out
    assert "clip\n" in out and "siglip\n" in out
    assert "label_smoothing" in out and "needs: image, text, logit_scale, logit_bias" in out


def test_config_error_exits_2_and_names_the_key(tmp_path, capsys):
    code = main(["train", "configs/demo.yaml", "--out", str(tmp_path), "--set", "train.stepz=3"])
    assert code == 2
    assert "train.stepz" in capsys.readouterr().err


def test_eval_of_a_folder_without_checkpoint(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train"], ["eval"], ["embed"], ["data", "export"], ["objectives"]])
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: contrastkit" in out


def test_every_option_has_help_text():
    import argparse

    from contrastkit.cli import make_parser

    def walk(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)
            elif not isinstance(action, argparse._HelpAction):
                yield parser.prog, action

    seen = list(walk(make_parser()))
    assert len(seen) > 15
    for prog, action in seen:
        assert action.help and len(action.help) > 8, f"{prog} {action.dest} has no help"


def test_reports_record_the_command_that_ran(monkeypatch):
    from contrastkit.invocation import command_line

    monkeypatch.setattr(sys, "argv", ["/x/.venv/bin/contrastkit", "adapt", "few-shot", "runs/a b"])
    assert command_line() == "contrastkit adapt few-shot 'runs/a b'"
    monkeypatch.setattr(sys, "argv", ["benchmarks/adaptation.py", "--parts", "few-shot"])
    assert command_line() == "python benchmarks/adaptation.py --parts few-shot"
