"""Column names as given in DataConfig: a list, or one string with comma-separated names."""
from __future__ import annotations

from typing import Sequence


def column_list(value: str | Sequence[str] | None) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``; ``["a"]`` -> ``["a"]``; ``""`` / None -> ``[]``."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]
