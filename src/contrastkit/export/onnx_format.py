"""Export both towers as ONNX graphs, checked against onnxruntime.

``image_encoder.onnx``: ``pixels`` (N x 3 x S x S float32, already preprocessed) -> ``image_embeds`` (N x D,
L2-normalised). ``text_encoder.onnx``: ``tokens`` (N x context_length int64) -> ``text_embeds`` (N x D,
L2-normalised). The batch dimension is dynamic. ``preprocessing.json`` says how to make the inputs (image
size, resize, mean / std; the tokenizer) and how to score (``logit_scale``, ``logit_bias``):
``logits = logit_scale * image_embeds @ text_embeds.T + logit_bias``.

Graphs come from ``torch.onnx.export``'s torch.export-based exporter (opset 18).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import Config
from ..models.dual_encoder import DualEncoder
from ..models.tiny import TINY_MEAN, TINY_STD, TinyCNN
from ..models.tokenizer import BOS, EOS, PAD, HashedWordTokenizer

IMAGE, TEXT = "image_encoder.onnx", "text_encoder.onnx"


class _ImageEncoder(nn.Module):
    def __init__(self, model: DualEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: Tensor) -> Tensor:
        return self.model.encode_image(pixels)


class _TextEncoder(nn.Module):
    def __init__(self, model: DualEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model.encode_text(tokens)


def tokenizer_description(model: DualEncoder, cfg: Config) -> dict[str, Any]:
    """How to turn a caption into the ``tokens`` input, for the tokenizer the run used."""
    tokenizer = getattr(model.text_tower, "tokenizer", None)
    if isinstance(tokenizer, HashedWordTokenizer):
        return {
            "kind": "contrastkit hashed words",
            "words": "regular expression [a-z0-9]+|[^\\sa-z0-9] on the lower-cased caption",
            "word_id": f"3 + crc32(utf-8 word) mod {tokenizer.vocab_size - 3}",
            "sequence": f"[{BOS}, word ids..., {EOS}], truncated to context_length - 2 words, padded with {PAD}",
            "context_length": tokenizer.context_length,
            "vocab_size": tokenizer.vocab_size,
        }
    return {
        "kind": "the text tower's own tokenizer",
        "text_tower": cfg.model.text_tower,
        "context_length": int(model.tokenize(["x"]).shape[1]),
        "how": "open_clip.get_tokenizer(NAME) for open_clip towers; AutoTokenizer.from_pretrained(DIR) for hf towers",
    }


def image_preprocessing(model: DualEncoder, image_size: int) -> dict[str, Any]:
    """How to turn an image into the ``pixels`` input: the run's evaluation transform, in words and numbers."""
    tower = model.image_tower
    size = int(getattr(tower, "image_size", image_size))
    if isinstance(tower, TinyCNN):
        resize, mean, std = "to size x size (bilinear, antialiased)", TINY_MEAN, TINY_STD
    else:
        resize = "shorter side to size (bicubic), then centre crop to size x size"
        mean, std = getattr(tower, "mean", TINY_MEAN), getattr(tower, "std", TINY_STD)
    return {"size": size, "resize": resize, "scale": "RGB values / 255", "mean": list(mean), "std": list(std)}


def export_onnx(model: DualEncoder, cfg: Config, out: Path, texts: list[str]) -> dict[str, str]:
    """Write the two graphs and ``preprocessing.json``; the files written, by role."""
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    pre = image_preprocessing(model, cfg.data.image_size)
    pixels = torch.randn(2, 3, pre["size"], pre["size"])
    tokens = model.tokenize(texts[:2])
    batch = torch.export.Dim("batch")
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > 1 << 30
    for wrapper, example, name, inp, outp in (
        (_ImageEncoder(model), pixels, IMAGE, "pixels", "image_embeds"),
        (_TextEncoder(model), tokens, TEXT, "tokens", "text_embeds"),
    ):
        torch.onnx.export(
            wrapper.eval(),
            (example,),
            str(out / name),
            input_names=[inp],
            output_names=[outp],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=large,  # one self-contained file unless the weights exceed protobuf's 2 GB
            opset_version=18,
            verbose=False,
        )
    bias = model.logit_bias
    meta = {
        "image": pre,
        "tokenizer": tokenizer_description(model, cfg),
        "logit_scale": float(model.logit_scale.detach()),
        "logit_bias": None if bias is None else float(bias.detach()),
        "scoring": "logits = logit_scale * image_embeds @ text_embeds.T (+ logit_bias)",
    }
    (out / "preprocessing.json").write_text(json.dumps(meta, indent=1))
    return {"image_encoder": IMAGE, "text_encoder": TEXT, "preprocessing": "preprocessing.json"}


@torch.no_grad()
def verify_onnx(model: DualEncoder, out: Path, texts: list[str], pixels: Tensor) -> float:
    """Max |difference| between the run's embeddings and onnxruntime's on the exported graphs (other batch sizes
    than the export's example, to exercise the dynamic batch)."""
    import onnxruntime

    model.eval()
    tokens = model.tokenize(texts)
    worst = 0.0
    for name, inputs, ours in (
        (IMAGE, pixels, model.encode_image(pixels)),
        (TEXT, tokens, model.encode_text(tokens)),
    ):
        session = onnxruntime.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        (theirs,) = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
        worst = max(worst, float(np.abs(theirs - ours.numpy()).max()))
    return worst
