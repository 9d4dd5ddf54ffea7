"""The ``--set data.KEY=VALUE`` option the commands that read a data source share."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def add_data_settings(parser: argparse.ArgumentParser | argparse._ArgumentGroup, help: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE", help=help)


def data_overrides(items: Sequence[str]) -> list[str]:
    """``--set`` items as dotted config overrides: ``label_column=x`` and ``data.label_column=x`` alike."""
    return [item if item.startswith("data.") else f"data.{item}" for item in items]
