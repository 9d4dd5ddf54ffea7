"""`contrastkit data check` and `contrastkit data convert` on generated data."""

import json

import toy_data as toy
from contrastkit.cli import main


def make_csv(root, bad=True):
    items = toy.write_images(root, 12)
    rows = "".join(f"{rel},{f['caption']}\n" for rel, f in items)
    if bad:
        (root / "images" / "empty.png").write_bytes(b"")
        rows += "images/gone.png,a disc\nimages/empty.png,a disc\nimages/00001.png,  \n"
        rows += "images/00002.png," + " ".join(["word"] * 40) + "\n"
    (root / "m.csv").write_text("filepath,title\n" + rows)
    return root / "m.csv"


def test_check_prints_a_table_by_reason_and_exits_1(tmp_path, capsys):
    path = make_csv(tmp_path)
    code = main(
        [
            "data",
            "check",
            f"csv:{path}",
            "--set",
            "image_column=filepath",
            "--set",
            "caption_columns=title",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "checked 16 records" in out and "13 usable, 4 problems" in out  # the long caption is usable
    lines = {
        line.split()[0]: line
        for line in out.splitlines()
        if line and line.split()[0] in ("missing_file", "empty_image", "empty_caption", "caption_too_long")
    }
    assert set(lines) == {"missing_file", "empty_image", "empty_caption", "caption_too_long"}
    assert lines["missing_file"].split()[1] == "1" and "m.csv line 14" in lines["missing_file"]
    assert "gone.png" in lines["missing_file"]
    assert "40 tokens > 22 (context 24)" in lines["caption_too_long"]


def test_check_of_clean_data_exits_0_and_column_errors_exit_2(tmp_path, capsys):
    path = make_csv(tmp_path, bad=False)
    assert (
        main(
            [
                "data",
                "check",
                f"csv:{path}",
                "--set",
                "image_column=filepath",
                "--set",
                "data.caption_columns=title",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "no problems found" in capsys.readouterr().out
    assert main(["data", "check", f"csv:{path}", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "column 'image' (data.image_column) not found" in err and "filepath, title" in err


def test_convert_writes_shards_checks_counts_and_reads_back(tmp_path, capsys):
    path = make_csv(tmp_path)
    out = tmp_path / "wds"
    args = [
        "data",
        "convert",
        f"csv:{path}",
        "--out",
        str(out),
        "--set",
        "image_column=filepath",
        "--set",
        "caption_columns=title",
        "--shard-size",
        "5",
        "--no-progress",
    ]
    assert main(args) == 2  # raise mode: stops at the first bad row, naming it
    assert "m.csv line 14" in capsys.readouterr().err
    assert main([*args, "--set", "on_error=skip"]) == 0
    printed = capsys.readouterr().out
    assert "train: wrote 13 samples in 3 shards, read back 13 (count check passed)" in printed
    assert "'missing_file': 1" in printed and f"wds:{out}" in printed
    info = json.loads((out / "dataset.json").read_text())
    assert info["splits"]["train"]["count"] == 13
    assert main(["data", "check", f"wds:{out}", "--no-progress", "--context-length", "0"]) == 0
    assert "checked 13 records" in capsys.readouterr().out
