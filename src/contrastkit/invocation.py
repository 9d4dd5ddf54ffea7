"""The command line that is running, as the reports of runs record it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def command_line() -> str:
    """``contrastkit ARGS`` under the command line tool; ``python SCRIPT ARGS`` when a script called the API."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if program in ("contrastkit", "__main__.py"):
        return shlex.join(["contrastkit", *sys.argv[1:]])
    return shlex.join(["python", *sys.argv]) if program else "python"
