"""Export a trained run for other tools: open_clip's checkpoint, a Hugging Face CLIPModel or ONNX graphs, with a card.

    from contrastkit.export import export_run
    summary = export_run("runs/demo", "onnx", "exports/demo-onnx")

Every export is checked before it is reported done: the exported model (open_clip's own factory, or
onnxruntime) embeds probe images and captions, and the largest difference to contrastkit's embeddings
is written in the model card and returned. (open_clip's own factory, transformers' ``from_pretrained`` or
onnxruntime.)
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import torch

from ..models.load import load_run
from .hf_format import export_hf, verify_hf
from .model_card import write_model_card
from .onnx_format import export_onnx, verify_onnx
from .open_clip_format import ExportError, export_open_clip, open_clip_name, verify_open_clip

FORMATS = ("open_clip", "onnx", "hf")
PROBE_TEXTS = ["a red circle", "a small blue square left of a green star", "two yellow triangles", "a photo"]


def export_run(run_dir: str | Path, fmt: str, out: str | Path) -> dict[str, Any]:
    """Write ``run_dir``'s latest model to ``out`` in ``fmt``; raise :class:`ExportError` saying why it cannot."""
    run_dir, out = Path(run_dir), Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"--format: {fmt!r} is not a format; choose one of {', '.join(FORMATS)}")
    model, cfg = load_run(run_dir)
    if fmt in ("open_clip", "hf"):
        open_clip_name(cfg, fmt)  # refuse before writing anything
    if fmt == "onnx":
        for package in ("onnx", "onnxscript", "onnxruntime"):
            try:
                __import__(package)
            except ImportError:
                raise ExportError(f"--format onnx needs {package}: pip install 'contrastkit[export]'") from None
    size = int(getattr(model.image_tower, "image_size", cfg.data.image_size))
    pixels = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    if fmt == "open_clip":
        files = export_open_clip(model, cfg, out)
        diff = verify_open_clip(model, out, open_clip_name(cfg), PROBE_TEXTS, pixels)
        checked = "open_clip.create_model_and_transforms on the exported files"
    elif fmt == "hf":
        files = export_hf(model, cfg, out)
        diff = verify_hf(model, out, PROBE_TEXTS, pixels)
        checked = "transformers CLIPModel.from_pretrained and CLIPTokenizer.from_pretrained on the exported folder"
    else:
        files = export_onnx(model, cfg, out, PROBE_TEXTS)
        diff = verify_onnx(model, out, PROBE_TEXTS, pixels)
        checked = "onnxruntime, batch sizes 3 and 4"
    card = write_model_card(
        run_dir,
        cfg.to_dict(),
        out,
        export_format=fmt,
        files=files,
        max_abs_diff=diff,
        checked_with=checked,
        command=shlex.join(["contrastkit", "export", str(run_dir), "--format", fmt, "--out", str(out)]),
        parameters=sum(p.numel() for p in model.parameters()),
    )
    return {"format": fmt, "out": str(out), "files": {**files, "model_card": card.name}, "max_abs_diff": diff}


__all__ = ["FORMATS", "ExportError", "export_run"]
