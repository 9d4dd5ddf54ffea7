"""``contrastkit eval`` on external models: open_clip + local weights, image folders, SugarCrepe, --compare.

The image-folder input (``--data folder:DIR``) is read by contrastkit.data.sources.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from contrastkit.cli import main
from helpers import save_tiny_open_clip

CLASSES = ("red_things", "green_things", "blue_things")
RGB = {"red_things": (220, 20, 20), "green_things": (20, 200, 20), "blue_things": (20, 20, 220)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    name, weights = save_tiny_open_clip(root)
    g = torch.Generator().manual_seed(0)
    for cls in CLASSES:
        (root / "folder" / cls).mkdir(parents=True)
        for i in range(4):
            noise = (torch.rand(8, 8, 3, generator=g) * 60).to(torch.int32)
            arr = (torch.tensor(RGB[cls]).int() + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(arr).resize((36, 36)).save(root / "folder" / cls / f"{i}.png")
    (root / "classes.txt").write_text("red thing\ngreen thing\nblue thing\n")
    (root / "templates.txt").write_text("a photo of a {}.\na {} in the picture.\n")
    return {"root": root, "model": f"open_clip:{name}", "weights": weights}


def _eval(world, *extra, out):
    args = [
        "eval",
        "--model",
        world["model"],
        "--pretrained",
        str(world["weights"]),
        "--out",
        str(out),
        "--cache-dir",
        str(world["root"] / "cache"),
        "--no-progress",
        "--device",
        "cpu",
        *extra,
    ]
    return main(args)


@pytest.mark.slow
def test_zeroshot_on_an_image_folder_writes_clip_benchmark_json_and_reuses_features(world, capsys):
    out = world["root"] / "out1"
    assert (
        _eval(
            world,
            "--task",
            "zeroshot,retrieval,geometry",
            "--data",
            f"folder:{world['root'] / 'folder'}",
            "--classnames",
            str(world["root"] / "classes.txt"),
            "--templates",
            str(world["root"] / "templates.txt"),
            "--batch-size",
            "5",
            out=out,
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "0 image set(s) read, 1 computed" in printed
    files = sorted(p.name for p in (out / "results").iterdir())
    zs = [json.loads((out / "results" / f).read_text()) for f in files if f.startswith("zeroshot_classification")]
    assert len(zs) == 1
    (dump,) = zs
    assert {"dataset", "model", "pretrained", "task", "metrics", "language"} <= set(dump)
    assert dump["task"] == "zeroshot_classification" and dump["model"] == world["model"]
    assert dump["pretrained"] == str(world["weights"])
    assert dump["templates"] == ["a photo of a {}.", "a {} in the picture."]
    assert dump["metrics"]["classnames"] == ["red thing", "green thing", "blue thing"]
    assert dump["metrics"]["n_samples"] == 12 and 0.0 <= dump["metrics"]["acc1"] <= 1.0
    assert {f.split("_")[0] for f in files} == {"geometry", "zeroshot"}
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["name"] == world["model"] and report["split"] == "test"
    assert "hardness_top1" in report["geometry"] and "tolerance_image" in report["geometry"]
    for png in (
        "recall_at_k.png",
        "embedding_gap.png",
        "similarity_hist.png",
        "per_class_class.png",
        "confusion_class.png",
    ):
        assert (out / png).stat().st_size > 5000, png
    assert "## Result files (CLIP_benchmark format)" in (out / "report.md").read_text()

    # Same model, same folder: every feature comes from the cache, the numbers are identical.
    out2 = world["root"] / "out2"
    assert (
        _eval(
            world,
            "--task",
            "zeroshot,retrieval,geometry",
            "--data",
            f"folder:{world['root'] / 'folder'}",
            "--classnames",
            str(world["root"] / "classes.txt"),
            "--templates",
            str(world["root"] / "templates.txt"),
            "--no-plots",
            out=out2,
        )
        == 0
    )
    assert "1 image set(s) read, 0 computed" in capsys.readouterr().out
    again = json.loads((out2 / "report.json").read_text())
    assert again["zeroshot"] == report["zeroshot"] and again["retrieval"] == report["retrieval"]
    assert again["plots"] == {} and not list(out2.glob("*.png"))

    # --compare prints both side by side with the differences, and writes compare.md with --out
    assert main(["eval", "--compare", str(out), str(out2 / "report.json"), "--out", str(world["root"] / "cmp")]) == 0
    table = capsys.readouterr().out
    assert "zeroshot.class.acc1" in table and "geometry.modality_gap" in table and "+0.0000" in table
    assert "zeroshot.class.per_class_recall" not in table
    assert "| metric | A | B | B − A |" in (world["root"] / "cmp" / "compare.md").read_text()


@pytest.mark.slow
def test_sugarcrepe_without_data_and_linear_probe_on_synthetic(world, capsys):
    folder = world["root"] / "folder"
    ann = {
        str(i): {
            "filename": f"{cls}/{i}.png",
            "caption": f"a {cls.split('_')[0]} square",
            "negative_caption": f"a square {cls.split('_')[0]}",
        }
        for i, cls in enumerate(CLASSES)
    }
    (world["root"] / "swap_obj.json").write_text(json.dumps(ann))
    out = world["root"] / "sc"
    assert (
        _eval(
            world, "--sugarcrepe", str(world["root"] / "swap_obj.json"), "--images", str(folder), "--no-plots", out=out
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["compositional_benchmarks"]["sugarcrepe"]["n_pairs"] == {"swap_obj": 3}
    (dump,) = [json.loads(p.read_text()) for p in (out / "results").iterdir()]
    assert dump["task"] == "compositional" and dump["dataset"] == "sugarcrepe"
    assert "sugarcrepe swap_obj" in capsys.readouterr().out

    out = world["root"] / "probe"
    assert (
        _eval(
            world,
            "--data",
            "synthetic:shapes",
            "--task",
            "linear_probe",
            "--fewshot",
            "2",
            "--no-plots",
            "--probe-max-iter",
            "100",
            "--set",
            "data.train_size=60",
            "--set",
            "data.eval_size=30",
            "--set",
            "data.image_size=32",
            out=out,
        )
        == 0
    )
    probe = json.loads((out / "report.json").read_text())["linear_probe"]
    assert set(probe) == {"shape", "colour", "size"} and set(probe["shape"]) == {"full", "2-shot"}
    assert probe["shape"]["2-shot"]["fewshot_k"] == 2 and probe["shape"]["full"]["n_train"] > 0
    names = sorted(p.name for p in (out / "results").iterdir())
    assert "linear_probe_synthetic_shapes_shape_2shot.json" in names
    assert "## Linear probe" in (out / "report.md").read_text()


def test_eval_errors_name_what_is_missing(world, tmp_path, capsys):
    assert _eval(world, "--task", "retrieval", out=tmp_path / "x") == 2
    assert "need a dataset" in capsys.readouterr().err
    assert main(["eval", "--task", "zeroshot"]) == 2
    assert "--checkpoint RUN_DIR" in capsys.readouterr().err
    assert _eval(world, "--task", "nonsense", "--data", "synthetic:shapes", out=tmp_path / "y") == 2
    assert "unknown task 'nonsense'" in capsys.readouterr().err
    assert main(["eval", "--compare", str(tmp_path), str(tmp_path)]) == 2
    assert "no report.json" in capsys.readouterr().err
    # a folder without splits serves every split whole: probing on it would score the training data
    assert (
        _eval(
            world,
            "--task",
            "linear_probe",
            "--data",
            f"folder:{world['root'] / 'folder'}",
            "--no-plots",
            out=tmp_path / "z",
        )
        == 2
    )
    assert "are also in the 'test' split" in capsys.readouterr().err
