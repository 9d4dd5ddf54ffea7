"""contrastkit embed: write image or text embeddings of a trained model as .npy."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="embed images or texts with a trained model",
        description="Write L2-normalised embeddings (N x D float32) as a .npy file.",
    )
    p.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="run directory of a trained model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", metavar="PATH", help="image files to embed")
    src.add_argument("--texts", metavar="FILE", help="UTF-8 text file, one caption per line")
    p.add_argument("--out", required=True, metavar="FILE.npy", help="output .npy file")
    p.add_argument("--batch-size", type=int, default=256, help="items per forward pass")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from ..models.embedder import dual_encoder_embedder
    from ..models.load import load_run

    model, _ = load_run(args.checkpoint)
    embedder = dual_encoder_embedder(model, batch_size=args.batch_size)
    if args.images:
        images = []
        for path in args.images:
            if not Path(path).exists():
                raise FileNotFoundError(f"--images: {path} does not exist")
            with Image.open(path) as img:
                images.append(img.convert("RGB"))
        emb = embedder.embed_images(images)
    else:
        path = Path(args.texts)
        if not path.exists():
            raise FileNotFoundError(f"--texts: {path} does not exist")
        texts = [line for line in path.read_text(encoding="utf-8").splitlines()]
        empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(
                f"--texts: {path} has empty lines ({', '.join(map(str, empty[:5]))}); "
                "one caption per line, no blank lines"
            )
        emb = embedder.embed_texts(texts)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, emb.numpy())
    print(f"wrote {tuple(emb.shape)} embeddings to {out}")
    return 0
