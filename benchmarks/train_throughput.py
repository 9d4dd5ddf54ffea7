"""Training samples/s of contrastkit vs open_clip's own trainer, same architecture, data and batch, on CPU.

    python benchmarks/train_throughput.py                  # ~3 minutes on 2 cores
    python benchmarks/train_throughput.py --steps 20 --repeats 1

Both train a small open_clip ViT (registered from a config file, random init) on the same synthetic:shapes
images exported to a CSV, with open_clip's preprocessing and tokenizer, AdamW, fp32, batch B, one data worker.
contrastkit's rate comes from its metrics.jsonl (samples/s per logged step), open_clip's from its log lines
("N/s"); the trainers run in turn ``--repeats`` times (a shared machine's load drifts) and the median over
all their steps after the first few of each run (warm-up) is compared. The table goes to RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv as csv_module
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import command_line, write_section

MODEL = "ck-bench-ViT-small"
MODEL_CONFIG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 192, "patch_size": 8, "head_width": 64},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 4},
}
ROOT = Path(__file__).resolve().parents[1]


def export_data(folder: Path, n: int) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "contrastkit.cli",
            "data",
            "export",
            "synthetic:shapes",
            "--out",
            str(folder),
            "--limit",
            str(n),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return folder / "captions.csv"


def run_contrastkit(csv: Path, config_dir: Path, out: Path, steps: int, batch: int) -> list[float]:
    code = (
        f"import open_clip, sys; open_clip.add_model_config({str(config_dir)!r}); "
        "from contrastkit.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    sets = [
        f"data.source=csv:{csv}",
        f"model.image_tower=open_clip:{MODEL}",
        f"model.text_tower=open_clip:{MODEL}",
        "model.embed_dim=128",
        f"train.steps={steps}",
        f"train.batch_size={batch}",
        "train.log_every=1",
        "train.warmup_steps=1",
        "data.workers=1",
        "data.image_size=64",
        "eval.max_records=32",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "data.eval_size=32",
    ]
    args = ["train", "configs/demo.yaml", "--out", str(out), "--no-progress"]
    for item in sets:
        args += ["--set", item]
    subprocess.run(
        [sys.executable, "-c", code, *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["samples_per_s"] for r in rows if "samples_per_s" in r]


def run_open_clip(csv: Path, config_dir: Path, out: Path, steps: int, batch: int) -> list[float]:
    # open_clip's CSV loader opens paths relative to the working directory: give it absolute ones.
    absolute = out.parent / "captions-absolute.csv"
    with csv.open() as src, absolute.open("w", newline="") as dst:
        reader = csv_module.DictReader(src)
        writer = csv_module.DictWriter(dst, fieldnames=["image", "caption"])
        writer.writeheader()
        for row in reader:
            writer.writerow({"image": str(csv.parent / row["image"]), "caption": row["caption"]})
    csv = absolute
    code = (
        f"import open_clip, sys; open_clip.add_model_config({str(config_dir)!r}); "
        "from open_clip_train.main import main; main(sys.argv[1:])"
    )
    args = [
        "--train-data",
        str(csv),
        "--dataset-type",
        "csv",
        "--csv-img-key",
        "image",
        "--csv-caption-key",
        "caption",
        "--csv-separator",
        ",",
        "--model",
        MODEL,
        "--batch-size",
        str(batch),
        "--epochs",
        "1",
        "--train-num-samples",
        str(steps * batch),
        "--workers",
        "1",
        "--lr",
        "1e-3",
        "--warmup",
        "1",
        "--log-every-n-steps",
        "1",
        "--logs",
        str(out),
        "--name",
        "bench",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--save-frequency",
        "0",
        "--report-to",
        "",
        "--grad-clip-norm",
        "1.0",
    ]  # contrastkit clips at 1.0 by default: both do the same work
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"open_clip_train failed:\n{text[-3000:]}")
    return [float(m) for m in re.findall(r"Batch \(t\): [\d.]+, ([\d.]+)/s,", text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="training steps per run")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of both trainers")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the median (per run)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each trainer")
    parser.add_argument("--results", default="benchmarks/RESULTS.md", help="results file ('' to skip)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        config_dir = tmp_path / "configs"
        config_dir.mkdir()
        (config_dir / f"{MODEL}.json").write_text(json.dumps(MODEL_CONFIG))
        csv = export_data(tmp_path / "data", args.steps * args.batch_size)
        rates: dict[str, list[float]] = {"contrastkit": [], "open_clip_train": []}
        run_medians: dict[str, list[float]] = {"contrastkit": [], "open_clip_train": []}
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
        for repeat in range(args.repeats):  # alternating, so a change in the machine's load hits both
            for name, fn in (("contrastkit", run_contrastkit), ("open_clip_train", run_open_clip)):
                steps = fn(csv, config_dir, tmp_path / f"{name}-{repeat}", args.steps, args.batch_size)[args.warmup :]
                rates[name] += steps
                run_medians[name].append(statistics.median(steps))
                print(f"{name} run {repeat + 1}: median {run_medians[name][-1]:.1f} samples/s over {len(steps)} steps")
    ck, oc = (statistics.median(rates[k]) for k in ("contrastkit", "open_clip_train"))
    runs = {k: ", ".join(f"{m:.1f}" for m in v) for k, v in run_medians.items()}
    table = (
        "| trainer | samples/s (median) | per-run medians | steps measured | ratio |\n|---|---:|---|---:|---:|\n"
        f"| contrastkit | {ck:.1f} | {runs['contrastkit']} | {len(rates['contrastkit'])} | {ck / oc:.2f} |\n"
        f"| open_clip_train | {oc:.1f} | {runs['open_clip_train']} | {len(rates['open_clip_train'])} | 1.00 |\n"
    )
    command = command_line("train_throughput.py", argv)
    body = (
        f"Command: `{command.strip()}` ({started}; load average at start {load}). open_clip ViT "
        f"({MODEL_CONFIG['vision_cfg']}, text {MODEL_CONFIG['text_cfg']}), random init, synthetic:shapes "
        f"exported to CSV, batch {args.batch_size}, fp32, AdamW, one data worker, CPU; {args.repeats} alternating "
        f"runs each; median samples/s over the pooled steps of all runs after {args.warmup} warm-up steps per run. "
        f"Target: ratio >= 1.2.\n\n{table}"
    )
    print(table)
    if args.results:
        write_section(args.results, "Training throughput (CPU, vs open_clip_train)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
