"""Shared test helpers: a tiny open_clip architecture registered from a temp folder."""
from __future__ import annotations

import json
from pathlib import Path

TINY_OPEN_CLIP = "ck-test-ViT-tiny"


def register_tiny_open_clip(folder: Path) -> str:
    """Register a 2-layer ViT/text open_clip config (32 px) and return its name."""
    import open_clip

    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TINY_OPEN_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return TINY_OPEN_CLIP
