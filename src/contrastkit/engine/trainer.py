"""The training loop: one batch, top-down.

    records -> transforms -> batch (this rank's share) -> towers -> Encoded -> gather
    -> objective -> backward (or exact accumulation) -> average gradients over ranks
    -> clip -> AdamW step -> clamp temperature -> EMA teacher -> log / evaluate / checkpoint

The engine knows nothing about particular losses: it asks the objective which
inputs its terms need and which model settings they want. Launched with
``torchrun --nproc-per-node N``, every rank trains on its share of the same global
batch and the gradients equal those of one process with the whole batch.
"""
from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import distributed as dist_utils
from ..config import Config
from ..data.pipeline import make_train_loader
from ..data.sources import open_source
from ..models.build import build_model
from ..models.checkpoint import latest_checkpoint, load_module, save_module
from ..objectives import NonFiniteLossError, build
from .clusters import cluster_table_for
from .encode import REFERENCE_FIELDS, TEACHER_FIELDS, encode_batch
from .evaluation import evaluate_model
from .host_memory import keep_freed_host_memory
from .inputs import missing_inputs
from .metrics_log import MetricsLog
from .optim import lr_at, make_optimizer
from .setup import (apply_speed_switches, autocast_for, ema_update, frozen_copy, pick_device,
                    training_set_for)
from .state import restore_state, resume_step, save_state
from .step import forward_backward, grad_cache_backward, no_extras, split_batch


def train(cfg: Config, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; with ``resume`` continue from its latest checkpoint.

    Returns the final report (also written to ``run_dir/report.json``; on rank 0 only
    when distributed — other ranks return an empty dict).
    """
    run_dir = Path(run_dir)
    dist_utils.init_from_environment()
    rank, world = dist_utils.rank(), dist_utils.world_size()
    is_main = rank == 0
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    device = pick_device(cfg.train.device)
    if device.type == "cpu":
        keep_freed_host_memory()

    # Model, objective and the data view they need.
    objective = build(cfg.objective)
    model = build_model(cfg.model, cfg.data.image_size, objective.model_defaults)
    if cfg.model.init_from:
        load_module(model, latest_checkpoint(Path(cfg.model.init_from)) / "model.safetensors")
    train_set = open_source(cfg.data.source, "train", cfg.data)
    problems = missing_inputs(objective, cfg, train_set, model)
    if problems:
        raise ValueError("the recipe cannot run on this data/model:\n  " + "\n  ".join(problems))
    requires = objective.requires
    model.to(device)
    objective.to(device)
    clustered_by = cfg.clusters.embed if cfg.clusters.sizes else None
    teacher = (frozen_copy(model) if objective.needs_teacher or requires & TEACHER_FIELDS or clustered_by == "teacher"
               else None)
    reference = (frozen_copy(model)
                 if objective.needs_reference or requires & REFERENCE_FIELDS or clustered_by == "reference" else None)
    dataset = training_set_for(cfg, train_set, model, objective)
    clusters = cluster_table_for(cfg.clusters, train_set, model.embed_dim, dataset.streaming)
    attach = clusters.to(device).attach if clusters is not None else no_extras
    if is_main and dataset.tag_index is not None:
        (run_dir / "tag_vocabulary.json").write_text(json.dumps(list(dataset.tag_index)))

    # Lazily-sized heads are materialised by one dry forward (eval mode: BatchNorm statistics untouched).
    first = next(iter(make_train_loader(dataset, cfg.train.batch_size, 1, cfg.train.seed, 0, 0, rank, world)))
    objective.eval()
    with torch.no_grad():
        enc = dist_utils.gather_encoded(encode_batch(model, first, requires, teacher, reference))
        objective(attach(enc), check_finite=False)
    objective.train()
    dist_utils.broadcast_parameters([model, objective])
    apply_speed_switches(model, cfg)
    optimizer = make_optimizer([model, objective], cfg.train)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    autocast = autocast_for(cfg.train.precision, device)
    scaler = torch.amp.GradScaler("cuda") if cfg.train.precision == "fp16" else None
    scale = scaler.scale if scaler is not None else (lambda loss: loss)

    # Fresh start or resume.
    start_step, skipped, events = 0, Counter[str](), Counter[str]()
    truncated_before = getattr(getattr(model.text_tower, "tokenizer", None), "truncated", None)
    if reference is not None and resume:
        load_module(reference, run_dir / "reference.safetensors")
    elif reference is not None and is_main:
        save_module(reference, run_dir / "reference.safetensors")
    if resume:
        start_step, state = resume_step(run_dir)
        skipped = restore_state(run_dir, state, model, objective, optimizer, teacher, scaler, clusters)
    elif is_main:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    log = MetricsLog(run_dir / "metrics.jsonl", resume_step=start_step if resume else None) if is_main else None
    val_set = open_source(cfg.data.source, "val", cfg.data) if cfg.train.eval_every and is_main else None
    loader = make_train_loader(dataset, cfg.train.batch_size, cfg.train.steps, cfg.train.seed, start_step,
                               cfg.data.workers, rank, world)

    def checkpoint(step: int) -> None:
        if is_main:
            save_state(run_dir, step, model, objective, optimizer, teacher, skipped, scaler, clusters)
        if world > 1:
            torch.distributed.barrier()

    model.train()
    started = time.perf_counter()
    window_start, window_samples = started, 0
    bar = tqdm(total=cfg.train.steps, initial=start_step, desc="train", disable=not (cfg.train.progress and is_main),
               dynamic_ncols=True)
    for step, batch in enumerate(loader, start=start_step):
        lr = lr_at(step, cfg.train)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        if clusters is not None and clusters.due(step):
            embedder = {"model": model, "teacher": teacher, "reference": reference}[cfg.clusters.embed]
            clusters.refresh(embedder, train_set, step, cfg.train.seed, cfg.train.progress and is_main,
                             dataset.on_error)
        try:
            if cfg.train.accum_steps > 1:
                out = grad_cache_backward(model, objective, split_batch(batch, cfg.train.accum_steps), requires,
                                          teacher, reference, autocast, scale, attach)
            else:
                out = forward_backward(model, objective, batch, requires, teacher, reference, autocast, scale,
                                       attach)
        except NonFiniteLossError as err:
            raise NonFiniteLossError(err.term, err.value, step) from None
        dist_utils.average_gradients(params)
        if scaler is not None:
            scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip or float("inf"))
        if not torch.isfinite(grad_norm) and scaler is None:
            raise NonFiniteLossError("gradient norm", float(grad_norm), step)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        model.clamp_logit_scale_()
        objective.on_step_end()
        if teacher is not None:
            ema_update(teacher, model, cfg.train.teacher_momentum)

        window_samples += len(batch["captions"]) * world
        skipped.update(batch.get("skipped", {}))
        if "synonym_skipped" in batch:
            events["synonym_skipped"] += int(batch["synonym_skipped"].sum())
        bar.update(1)
        done = step + 1
        if log is not None and (done % cfg.train.log_every == 0 or done == cfg.train.steps):
            now = time.perf_counter()
            rate = window_samples / max(now - window_start, 1e-9)
            window_start, window_samples = now, 0
            record = {"step": done, "loss": float(out.loss.detach()), "lr": lr,
                      "logit_scale": float(model.logit_scale.detach()), "grad_norm": float(grad_norm),
                      "samples_per_s": rate, **{f"loss/{k}": float(v.detach()) for k, v in out.terms.items()}}
            if model.logit_bias is not None:
                record["logit_bias"] = float(model.logit_bias.detach())
            if skipped:
                record["data_skipped"] = dict(skipped)
            log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.1e}", sps=f"{rate:.0f}")
        if val_set is not None and log is not None and done % cfg.train.eval_every == 0 and done != cfg.train.steps:
            quick = evaluate_model(model, val_set, cfg, max_records=min(500, len(val_set)), progress=False)
            log.write({"step": done, "split": "val", **quick.flat()})
            model.train()
        if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done != cfg.train.steps:
            checkpoint(done)
    bar.close()
    train_seconds = time.perf_counter() - started
    checkpoint(cfg.train.steps)
    if not is_main:
        return {}

    eval_set = open_source(cfg.data.source, cfg.eval.split, cfg.data)
    eval_started = time.perf_counter()
    result = evaluate_model(model, eval_set, cfg, max_records=cfg.eval.max_records or None,
                            progress=cfg.train.progress)
    if truncated_before is not None:
        events["caption_truncations"] = model.text_tower.tokenizer.truncated - truncated_before
    timing = {"train_seconds": train_seconds, "eval_seconds": time.perf_counter() - eval_started,
              "steps": cfg.train.steps, "resumed_from": start_step if resume else None, "world_size": world}
    return result.write(run_dir, config=cfg.to_dict(), timing=timing, metrics_log=run_dir / "metrics.jsonl",
                        extra={"training_data": {"skipped_records": dict(skipped), "on_error": cfg.data.on_error,
                                                 **events}})
