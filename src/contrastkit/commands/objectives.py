"""contrastkit objectives: list every registered objective term."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "objectives",
        help="list objective terms, their parameters and inputs",
        description="List every registered objective term with its description, parameters "
        "(defaults) and the inputs it needs.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..encoded import FIELDS
    from ..objectives import TERMS, term_parameters

    copies = {"teacher": "EMA teacher", "reference": "frozen reference model"}
    for name in TERMS.names():
        cls = TERMS.get(name)
        params = ", ".join(f"{k}={v!r}" for k, v in term_parameters(name).items()) or "-"
        needs = ", ".join(["image", "text", "logit_scale", *cls.requires])
        producers = {FIELDS[field].producer for field in cls.requires if field in FIELDS}
        extra = [label for who, label in copies.items() if who in producers]
        print(
            f"{name}\n    {cls.description}\n    parameters: {params}\n    needs: {needs}"
            + (f" + {', '.join(extra)}" if extra else "")
        )
    return 0
