"""contrastkit export: write a trained run in a format other tools read, with a model card.

contrastkit export runs/mine --format onnx --out exports/mine-onnx
contrastkit export runs/openclip-ft --format open_clip --out exports/ft
contrastkit export runs/openclip-ft --format hf --out exports/ft-hf
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a run as open_clip weights, a Hugging Face CLIPModel or ONNX graphs, with a model card",
        description="open_clip: <arch>.json + open_clip_model.safetensors that open_clip's own factory loads "
        "(runs with open_clip towers). onnx: image_encoder.onnx + text_encoder.onnx + preprocessing.json, "
        "checked with onnxruntime. hf: a transformers CLIPModel folder (config, weights, CLIPTokenizer files) that "
        "from_pretrained loads offline (runs with a plain open_clip CLIP). "
        "Every export is checked against contrastkit's embeddings and writes README.md, the model card.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("run", metavar="RUN_DIR", help="a contrastkit run directory")
    p.add_argument("--format", required=True, choices=("open_clip", "onnx", "hf"), help="what to write")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import export_run

    summary = export_run(args.run, args.format, args.out)
    files = ", ".join(summary["files"].values())
    print(f"wrote {files} to {summary['out']}")
    print(f"checked: exported embeddings differ from contrastkit's by at most {summary['max_abs_diff']:.2e}")
    return 0
