"""The resumable results file of an adaptation run: ``OUT/request.json`` + one JSON line per measured point.

An adaptation command measures many independent points (an α of WiSE-FT, a (method, k, seed) of the
few-shot ladder). Each is appended to ``OUT/<name>`` as soon as it is measured, so a killed run loses at
most the point in progress; a rerun with the same request reads what is there and measures the rest.
A rerun with another request into the same ``OUT`` is refused, so results of different inputs never mix.
Keys in ``free`` (e.g. the list of α) may differ between reruns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class ResultLines:
    def __init__(self, out: Path, name: str, request: Mapping[str, Any], free: Iterable[str] = ()) -> None:
        self.out = Path(out)
        self.path = self.out / name
        spec_file = self.out / "request.json"
        free = set(free)
        if spec_file.exists():
            before = json.loads(spec_file.read_text())
            if {k: v for k, v in before.items() if k not in free} != {
                k: v for k, v in request.items() if k not in free
            }:
                raise ValueError(f"{self.out} holds results of other inputs ({spec_file}); choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(json.dumps(dict(request), indent=1))

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def append(self, row: Mapping[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(dict(row)) + "\n")
