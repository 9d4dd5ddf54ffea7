"""The contrastkit command line.

    contrastkit train CONFIG [--set key=value]... [--out DIR] [--resume RUN_DIR]
    contrastkit eval (--checkpoint RUN_DIR | --model open_clip:NAME --pretrained FILE | --model hf:DIR)
                     [--task ...] [--data SPEC] [--split test] [--out DIR]
    contrastkit eval --compare A B
    contrastkit adapt wise-ft --start RUN_DIR --finetuned RUN_DIR --out DIR [--alphas 0,0.5,1]
    contrastkit export RUN_DIR --format open_clip|onnx --out DIR
    contrastkit index RUN_DIR --images SPEC --out INDEX
    contrastkit serve INDEX [--host 127.0.0.1 --port 8000]
    contrastkit embed --checkpoint RUN_DIR (--images PATH... | --texts FILE) --out FILE.npy
    contrastkit data export SPEC --out DIR [--split train] [--limit N]
    contrastkit objectives

Each sub-command lives in ``contrastkit/commands/<name>.py`` with its own ``register``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .commands import adapt, data, embed, export, index, objectives, serve
from .commands import eval as eval_command
from .commands import train as train_command
from .config import ConfigError

COMMANDS = (train_command, eval_command, adapt, export, index, serve, embed, data, objectives)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrastkit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, FileNotFoundError, ValueError) as err:  # ExportError is a ValueError
        print(f"contrastkit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
