"""benchmarks/adaptation.py on a tiny run: parts run, missing inputs are reported, RESULTS.md gets the section."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import adaptation  # noqa: E402 - benchmarks/ is a folder of scripts, put on the path above
from contrastkit.config import load_config  # noqa: E402
from contrastkit.engine.trainer import train  # noqa: E402
from helpers import TINY_TRAINING  # noqa: E402


def test_the_benchmark_writes_its_section_and_names_what_is_missing(tmp_path, capsys):
    base = tmp_path / "base"
    train(load_config("configs/demo.yaml", TINY_TRAINING + ["data.train_size=200", "data.eval_size=80"]), base)
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Other\n\nkept\n")
    args = ["--base", str(base), "--runs-dir", str(tmp_path / "none"), "--out", str(tmp_path / "out")]
    args += ["--parts", "few-shot,base-to-new,text-only,text-caption,residual,wise-ft", "--seeds", "0,1"]
    args += ["--max-records", "60", "--shots", "1,2", "--finetune-steps", "2"]
    args += [
        "--noise",
        "0,0.2",
        "--guide-steps",
        "5",
        "--prompt-steps",
        "2,3",
        "--prompt-lrs",
        "0.003",
        "--prompt-shots",
        "2",
        "--caption-steps",
        "3",
        "--caption-noise",
        "0,0.2",
        "--results",
        str(results),
    ]
    assert adaptation.main(args) == 0
    text = results.read_text()
    assert "## Other\n\nkept" in text and "## Adaptation on the testbed" in text
    assert "**Few-shot ladder and k-shot curves**" in text and "| lora | " in text and "| CoOp | " in text
    assert "k = 2: lr 0.003 x " in text  # CoOp's settings, chosen on val per k
    assert "**Text-only transfer**" in text and "| noise only |" in text
    assert "**Base-to-new prompt learning, M = 4 context vectors, from 'a photo of a'**" in text
    assert "**Base-to-new prompt learning, M = 16 context vectors, random start**" in text and "| gopro | 2 |" in text
    assert "k = 2: coop base" in text  # the paired comparison with the zero-shot head, over the two seeds
    assert text.count("chosen by 8 trials on the test split (seed 0") == 2  # 4 learners x 2 step counts, per setting
    assert "**Text-only captioning (CapDec)**" in text and "| mean shift + noise | CIDEr-D |" in text
    assert "**Residual direction**" in text and "held-out AUC" in text
    assert "WiSE-FT**: not measured, missing fine-tuned runs" in text
    assert (tmp_path / "out" / "residual" / "residual_examples.png").exists()
    with pytest.raises(SystemExit, match="--prompt-contexts: unknown wide; choose from literature, coop16"):
        adaptation.main([*args[:6], "--parts", "base-to-new", "--prompt-contexts", "wide", "--results", ""])
    with pytest.raises(SystemExit, match="unknown lora"):
        adaptation.main([*args[:6], "--parts", "lora"])
    with pytest.raises(SystemExit, match="not a finished run"):
        adaptation.main(["--base", str(tmp_path / "nothing")])
