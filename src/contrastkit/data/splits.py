"""The deterministic hash split of a source without split files, and its fallback for an empty held-out split."""

from __future__ import annotations

import hashlib

from ..config import DataConfig


def hash_unit(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key): the basis of the deterministic hash split."""
    digest = hashlib.blake2b(f"{seed}/{key}".encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_of(key: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """``test`` when hash < test_fraction, ``val`` when below test + val, else ``train``."""
    u = hash_unit(seed, key)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def fallback_split(split: str, cfg: DataConfig) -> str:
    """A held-out split with fraction 0 reads the other held-out split (rule 4)."""
    if split == "test" and cfg.test_fraction == 0 and cfg.val_fraction > 0:
        return "val"
    if split == "val" and cfg.val_fraction == 0 and cfg.test_fraction > 0:
        return "test"
    return split
