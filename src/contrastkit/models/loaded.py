"""A model ready for evaluation: its embedder plus what result files and the feature cache need.

:meth:`LoadedModel.fingerprint` is the feature-cache key of the model: a sha256 over the
content of its weight files (or its state dict), the architecture, the preprocessing, the
precision and the library version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from ..hashing import hash_json, sha256_file
from .dual_encoder import DualEncoder
from .embedder import Embedder, dual_encoder_embedder


class FileHasher(Protocol):
    """Something that hashes weight files, e.g. the feature cache (which memoises the hashes)."""

    def file_hash(self, path: str | Path) -> str: ...


WeightsHash = Callable[["FileHasher | None"], Any]


@dataclass
class LoadedModel:
    """A model ready for evaluation, with what its result JSON and the feature cache need.

    ``name`` / ``pretrained`` fill CLIP_benchmark's ``model`` / ``pretrained``
    fields; ``logit_scale`` (t = 1/tau) and ``logit_bias`` are the model's own.
    """

    embedder: Embedder
    kind: str  # "contrastkit" | "open_clip" | "hf" | "embedder"
    name: str
    pretrained: str | None
    logit_scale: float | None = None
    logit_bias: float | None = None
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able description (for the cache's model.json)
    config: Any = None  # a contrastkit run's Config (its data settings are the defaults for --data)
    batch_size: int = 256  # images / texts per forward pass of the embedder
    weights_hash: WeightsHash | None = None
    _fingerprint: str | None = None

    @classmethod
    def of_dual_encoder(
        cls,
        model: DualEncoder,
        name: str,
        *,
        batch_size: int = 256,
        precision: str = "fp32",
        config: Any = None,
        weights_hash: WeightsHash | None = None,
        info: dict[str, Any] | None = None,
    ) -> LoadedModel:
        """A contrastkit model as it is now (in training, or loaded from a run)."""
        return cls(
            dual_encoder_embedder(model, batch_size=batch_size, precision=precision),
            "contrastkit",
            name,
            None,
            logit_scale=float(model.logit_scale.detach()),
            logit_bias=scalar(model.logit_bias),
            info=info or {},
            config=config,
            batch_size=batch_size,
            weights_hash=weights_hash,
        )

    @classmethod
    def of_embedder(cls, embedder: Embedder, name: str | None = None) -> LoadedModel:
        """Any object with ``embed_images`` / ``embed_texts`` (no temperature, not cacheable by weights)."""
        return cls(embedder, "embedder", name or type(embedder).__name__, None)

    @property
    def temperature(self) -> float | None:
        return None if not self.logit_scale else 1.0 / self.logit_scale

    @property
    def precision(self) -> str:
        return str(getattr(self.embedder, "precision", "fp32"))

    def fingerprint(self, hasher: FileHasher | None = None) -> str:
        """sha256 identifying the model's weights, preprocessing and precision (feature-cache key)."""
        if self._fingerprint is None:
            weights = self.weights_hash(hasher) if self.weights_hash is not None else None
            self._fingerprint = hash_json(
                {"kind": self.kind, "info": self.info, "weights": weights, "precision": self.precision}
            )
        return self._fingerprint


def file_hash(hasher: FileHasher | None, path: Path) -> str:
    """sha256 of a weights file, memoised by ``hasher`` when there is one."""
    return hasher.file_hash(path) if hasher is not None else sha256_file(path)


def scalar(param: Any) -> float | None:
    return float(param.detach().float().cpu()) if isinstance(param, Tensor) else None
