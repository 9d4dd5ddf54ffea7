"""Training-time evaluation: the in-memory model through the one evaluation suite (no feature cache,
its weights change during training)."""

from __future__ import annotations

from ..config import Config
from ..data.records import Dataset
from ..evaluate.request import DEFAULT_TASKS, EvalRequest, SuiteOutput
from ..evaluate.retrieval import CURVE_KS
from ..evaluate.suite import run_suite
from ..models.dual_encoder import DualEncoder
from ..models.loaded import LoadedModel


def evaluate_model(
    model: DualEncoder, dataset: Dataset, cfg: Config, *, max_records: int | None, progress: bool
) -> SuiteOutput:
    """The default tasks on ``dataset`` at the model's own temperature, with a recall@k curve."""
    loaded = LoadedModel.of_dual_encoder(model, cfg.name, batch_size=cfg.eval.batch_size)
    req = EvalRequest(
        tasks=DEFAULT_TASKS,
        dataset=dataset,
        split=str(getattr(dataset, "split", "?")),
        max_records=max_records,
        curve_ks=CURVE_KS,
        batch_size=cfg.eval.batch_size,
        progress=progress,
        seed=cfg.train.seed,
    )
    return run_suite(loaded, req)
