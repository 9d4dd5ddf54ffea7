"""Write one benchmark's section of benchmarks/RESULTS.md, leaving the other sections alone."""

from __future__ import annotations

import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

HEADER = "# Benchmark results\n\nEvery table says the command that made it. Numbers are from the machine named.\n"


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How the benchmark was started, for the "Command:" line of its section (shell-quoted)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"benchmarks/{script}", *(shlex.quote(a) for a in args)])


def write_section(path: str | Path, heading: str, body: str) -> None:
    """Replace the ``## heading`` section of ``path`` (or append it) with ``body``."""
    path = Path(path)
    text = path.read_text() if path.exists() else HEADER
    marker = f"## {heading}"
    section = f"{marker}\n\n{body.strip()}\n"
    start = text.find(marker + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(marker))
        text = text[:start] + section + ("" if nxt < 0 else "\n" + text[nxt + 1 :])
    path.write_text(text)


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name), for the tables' "CPU:" notes."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "?"
