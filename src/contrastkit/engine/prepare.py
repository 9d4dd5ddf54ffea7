"""Everything a training run builds before its first step, held in one :class:`Run`.

seed and device -> objective and model (+ EMA teacher / frozen reference when a term reads
them) -> input preflight -> the training view of the data (+ engine-kept clusters) ->
lazily sized heads materialised -> optimizer, precision -> fresh start or resume -> loader
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import distributed as dist_utils
from ..config import Config
from ..data.batch import Batch
from ..data.pipeline import make_train_loader
from ..data.records import Dataset
from ..data.sources import open_source
from ..data.training_set import TrainingSet
from ..encoded import FIELDS
from ..models.build import build_model
from ..models.checkpoint import latest_checkpoint, load_module, save_module
from ..models.dual_encoder import DualEncoder
from ..models.lora import add_lora
from ..models.towers import truncated_captions
from ..objectives import Objective
from .clusters import ClusterTable, cluster_table_for
from .experiment_log import RunLog
from .host_memory import keep_freed_host_memory
from .optim import make_optimizer
from .preflight import mismatch, missing_inputs
from .recipe import check_recipe
from .setup import apply_speed_switches, autocast_for, frozen_copy, pick_device, training_set_for
from .state import restore_state, resume_step
from .step import StepContext, no_extras


@dataclass
class Run:
    """A training run between steps: models, data, optimizer, counters and where they are written."""

    cfg: Config
    run_dir: Path
    rank: int
    world: int
    ctx: StepContext
    train_set: Dataset  # the source's training split, as records
    dataset: TrainingSet  # its training view (transforms, seeded choices)
    clusters: ClusterTable | None
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    scaler: Any  # torch.amp.GradScaler for fp16, else None
    start_step: int
    resumed: bool
    log: RunLog | None  # rank 0 only
    val_set: Dataset | None  # rank 0, when train.eval_every is set
    skipped: Counter[str] = field(default_factory=Counter)  # bad records skipped so far, by reason
    events: Counter[str] = field(default_factory=Counter)  # augmentation events (synonym_skipped, ...)
    truncated_before: int | None = None  # the tokenizer's truncation count at the start

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def model(self) -> DualEncoder:
        return self.ctx.model

    @property
    def objective(self) -> Objective:
        return self.ctx.objective

    def loader(self) -> Iterable[Batch]:
        """This rank's batches of the steps still to run."""
        cfg = self.cfg
        return make_train_loader(
            self.dataset,
            cfg.train.batch_size,
            cfg.train.steps,
            cfg.train.seed,
            self.start_step,
            cfg.data.workers,
            self.rank,
            self.world,
        )


def _with_model_facts(cfg: Config, model: DualEncoder) -> Config:
    """``cfg`` with the bias the objective gave the model written in (``model.logit_bias_init``), so that
    config.json rebuilds the same architecture without the objective (``models/load.py``)."""
    if model.logit_bias is None or cfg.model.logit_bias_init is not None:
        return cfg
    bias = float(model.logit_bias.detach())
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, logit_bias_init=bias))


def _frozen_copies(cfg: Config, model: DualEncoder, requires: set[str]) -> tuple[DualEncoder | None, ...]:
    """An EMA teacher / frozen reference copy when a term reads one or the clusters embed with one."""
    producers = {FIELDS[name].producer for name in requires if name in FIELDS}
    clustered_by = cfg.clusters.embed if cfg.clusters.sizes else None
    return tuple(
        frozen_copy(model) if who in producers or clustered_by == who else None for who in ("teacher", "reference")
    )


def _materialise_heads(ctx: StepContext, dataset: TrainingSet, cfg: Config, rank: int, world: int) -> None:
    """One dry forward sizes the objective's lazy heads (eval mode: BatchNorm statistics untouched)."""
    first = next(iter(make_train_loader(dataset, cfg.train.batch_size, 1, cfg.train.seed, 0, 0, rank, world)))
    ctx.objective.eval()
    with torch.no_grad():
        ctx.objective_on(ctx.encode(first), check_finite=False)
    ctx.objective.train()


def _start_or_resume(run: Run, teacher: DualEncoder | None, reference: DualEncoder | None) -> None:
    """Save the reference and config of a fresh run, or load the latest checkpoint of a resumed one."""
    if reference is not None and run.resumed:
        load_module(reference, run.run_dir / "reference.safetensors")
    elif reference is not None and run.is_main:
        save_module(reference, run.run_dir / "reference.safetensors")
    if run.resumed:
        run.start_step, state = resume_step(run.run_dir)
        run.skipped = restore_state(
            run.run_dir, state, run.model, run.objective, run.optimizer, teacher, run.scaler, run.clusters
        )
    elif run.is_main:
        (run.run_dir / "config.json").write_text(json.dumps(run.cfg.to_dict(), indent=1))


def prepare_run(cfg: Config, run_dir: Path, resume: bool) -> Run:
    """Build the run of ``cfg`` in ``run_dir`` (see the module docstring).

    With ``lora.rank`` > 0 the model gets LoRA adapters after its start weights are loaded and before anything
    reads its parameters; every other parameter is frozen (:mod:`~contrastkit.models.lora`).
    """
    dist_utils.init_from_environment()
    rank, world = dist_utils.rank(), dist_utils.world_size()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    device = pick_device(cfg.train.device)
    if device.type == "cpu":
        keep_freed_host_memory()

    objective = check_recipe(cfg)
    model = build_model(cfg.model, cfg.data.image_size, objective.model_defaults)
    cfg = _with_model_facts(cfg, model)
    if cfg.model.init_from:
        load_module(model, latest_checkpoint(Path(cfg.model.init_from)) / "model.safetensors")
    if cfg.lora.rank:
        add_lora(model, cfg.lora)
    train_set = open_source(cfg.data.source, "train", cfg.data)
    problems = [p for p in [mismatch(cfg, train_set)] if p] + missing_inputs(objective, cfg, train_set, model)
    if problems:
        raise ValueError("the recipe cannot run on this data/model:\n  " + "\n  ".join(problems))
    model.to(device)
    objective.to(device)
    teacher, reference = _frozen_copies(cfg, model, objective.requires)
    dataset = training_set_for(cfg, train_set, model, objective)
    clusters = cluster_table_for(cfg.clusters, train_set, model.embed_dim, dataset.streaming)
    if rank == 0 and dataset.tag_index is not None:
        (run_dir / "tag_vocabulary.json").write_text(json.dumps(list(dataset.tag_index)))
    ctx = StepContext(
        model,
        objective,
        frozenset(objective.requires),
        teacher,
        reference,
        autocast=autocast_for(cfg.train.precision, device),
        attach=clusters.to(device).attach if clusters is not None else no_extras,
    )
    _materialise_heads(ctx, dataset, cfg, rank, world)
    dist_utils.broadcast_parameters([model, objective])
    apply_speed_switches(model, cfg)
    optimizer = make_optimizer([model, objective], cfg.train)
    scaler = torch.amp.GradScaler("cuda") if cfg.train.precision == "fp16" else None
    if scaler is not None:
        ctx.scale = scaler.scale
    run = Run(
        cfg,
        run_dir,
        rank,
        world,
        ctx,
        train_set,
        dataset,
        clusters,
        optimizer,
        params=[p for group in optimizer.param_groups for p in group["params"]],
        scaler=scaler,
        start_step=0,
        resumed=resume,
        log=None,
        val_set=None,
        truncated_before=truncated_captions(model.text_tower),
    )
    _start_or_resume(run, teacher, reference)
    if run.is_main:
        run.log = RunLog(
            run_dir, cfg.train.log, resume_step=run.start_step if resume else None, name=cfg.name, config=cfg.to_dict()
        )
        if cfg.train.eval_every:
            run.val_set = open_source(cfg.data.source, "val", cfg.data)
    return run
