"""What an evaluation is asked for (:class:`EvalRequest`) and what it gives back (:class:`SuiteOutput`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from ..config import DataConfig
from ..data.records import Dataset, Record
from ..data.sources import open_source
from ..models.loaded import LoadedModel
from .retrieval import CURVE_KS, DEFAULT_KS

IMAGE_TASKS = ("zeroshot", "retrieval", "linear_probe", "compositional", "geometry", "dense")
TASKS = (*IMAGE_TASKS, "sts", "text_retrieval", "text_classification", "text_geometry")
DEFAULT_TASKS = ("zeroshot", "retrieval", "compositional", "geometry")
BENCHMARK_TASK = {
    "zeroshot": "zeroshot_classification",
    "retrieval": "zeroshot_retrieval",
    "linear_probe": "linear_probe",
    "compositional": "compositional",
    "geometry": "geometry",
    "dense": "dense_probe",
    "sts": "sts",
    "text_retrieval": "text_retrieval",
    "text_classification": "text_classification",
    "text_geometry": "text_geometry",
}


def parse_tasks(spec: str | Sequence[str]) -> list[str]:
    """``"all"`` (the image tasks), ``"default"`` or a comma-separated subset of :data:`TASKS` -> task list."""
    names = [s.strip() for part in ([spec] if isinstance(spec, str) else spec) for s in part.split(",") if s.strip()]
    out: list[str] = []
    for name in names:
        expand = IMAGE_TASKS if name == "all" else DEFAULT_TASKS if name == "default" else (name,)
        for task in expand:
            if task not in TASKS:
                raise ValueError(f"--task: unknown task {task!r}; choose from {', '.join(TASKS)}, default, all")
            if task not in out:
                out.append(task)
    return out or list(DEFAULT_TASKS)


@dataclass
class EvalRequest:
    """What to evaluate (see the module docstring); paths may be str or Path."""

    tasks: Sequence[str] = DEFAULT_TASKS
    data: str | None = None  # data spec (contrastkit.data.sources); None: no dataset (compositional benchmarks only)
    split: str = "test"
    data_config: Any = None  # a DataConfig (the run's, for contrastkit runs); None: defaults
    max_records: int | None = None
    classnames: list[str] | None = None
    templates: list[str] | None = None
    train_split: str = "train"
    val_split: str | None = None
    max_train_records: int | None = None
    fewshot: Sequence[int] = ()
    probe_max_iter: int = 1000
    sugarcrepe: Sequence[str | Path] = ()
    aro: Sequence[str | Path] = ()
    images: str | Path | None = None  # image root of the sugarcrepe / aro files
    recall_ks: Sequence[int] = DEFAULT_KS
    curve_ks: Sequence[int] = CURVE_KS
    temperature: float | None = None
    hardness_ks: Sequence[int] = (1, 10)
    tie_tol: float = 1e-6
    batch_size: int = 256
    num_workers: int = 0
    progress: bool = True
    seed: int = 0
    dataset: Any = None  # an already opened dataset (API use); overrides ``data``
    training_captions: Sequence[str] | None = None  # a sample of the model's training captions (class coverage)
    sts: Sequence[str | Path] = ()  # STS files of scored sentence pairs, or "builtin" (the shapes world's)
    sts_columns: Sequence[str] = ("sentence1", "sentence2", "score")  # text a, text b, gold score


@dataclass
class SuiteOutput:
    """Results by task, the CLIP_benchmark-style entries, and the matched image / caption embeddings."""

    results: dict[str, Any]
    task_results: list[dict[str, Any]]
    image_emb: Tensor | None = None  # matched pairs (captioned records) for the plots
    text_emb: Tensor | None = None
    model: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Callable[[Path], None]] = field(default_factory=dict)  # name -> draws <name>.png at a path


class TaskLog:
    """The per-task result entries of CLIP_benchmark's format, for one model."""

    def __init__(self, model: LoadedModel, entries: list[dict[str, Any]]) -> None:
        self.model, self.entries = model, entries

    def add(self, task: str, dataset_name: str, metrics: dict[str, Any], **extra: Any) -> None:
        self.entries.append(
            {
                "dataset": dataset_name,
                "model": self.model.name,
                "pretrained": self.model.pretrained,
                "task": BENCHMARK_TASK[task],
                "metrics": metrics,
                "language": "en",
                **extra,
            }
        )


def open_split(req: EvalRequest, split: str) -> Dataset:
    """``split`` of ``req.data`` read with ``req.data_config`` (defaults when None)."""
    if req.data is None:
        raise ValueError("no data spec to open a split of: give --data SPEC")
    return open_source(req.data, split, req.data_config if req.data_config is not None else DataConfig())


def first_records(dataset: Dataset, limit: int | None) -> list[Record]:
    n = len(dataset) if limit is None else min(len(dataset), limit)
    return [dataset[i] for i in range(n)]
