"""The training loop, top-down: prepare the run, then per step the update and what follows it, then finish.

    records -> transforms -> batch (this rank's share) -> towers -> Encoded -> gather
    -> objective -> backward (or exact accumulation) -> average gradients over ranks
    -> clip -> AdamW step -> clamp temperature -> EMA teacher -> log / evaluate / checkpoint

The engine knows nothing about particular losses: it asks the objective which
inputs its terms need and which model settings they want. Launched with
``torchrun --nproc-per-node N``, every rank trains on its share of the same global
batch and the gradients equal those of one process with the whole batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import distributed as dist_utils
from ..config import Config
from ..data.batch import Batch
from ..data.sources import open_source
from ..evaluate.result_files import write_suite
from ..evaluate.summary import headline_metrics, summarize_results
from ..models.towers import truncated_captions
from ..objectives import NonFiniteLossError, ObjectiveOutput
from .evaluation import evaluate_model
from .optim import lr_at
from .prepare import Run, prepare_run
from .setup import ema_update
from .state import save_state
from .step import forward_backward, grad_cache_backward


@dataclass
class StepResult:
    """What one optimisation step reports to the steps after it."""

    out: ObjectiveOutput
    lr: float
    grad_norm: torch.Tensor


@dataclass
class Progress:
    """The progress bar and the samples/s window of the metrics log."""

    bar: Any
    started: float = field(default_factory=time.perf_counter)
    window_start: float = field(default_factory=time.perf_counter)
    window_samples: int = 0

    def rate(self) -> float:
        """Samples/s since the last call (the log window), and start a new window."""
        now = time.perf_counter()
        rate = self.window_samples / max(now - self.window_start, 1e-9)
        self.window_start, self.window_samples = now, 0
        return rate


def train(
    cfg: Config,
    run_dir: str | Path,
    resume: bool = False,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; with ``resume`` continue from its latest checkpoint.

    Returns the final report (also written to ``run_dir/report.json``; on rank 0 only
    when distributed — other ranks return an empty dict).
    """
    run = prepare_run(cfg, Path(run_dir), resume)
    run.model.train()
    progress = Progress(
        tqdm(
            total=cfg.train.steps,
            initial=run.start_step,
            desc="train",
            disable=not (cfg.train.progress and run.is_main),
            dynamic_ncols=True,
        )
    )
    try:
        for step, batch in enumerate(run.loader(), start=run.start_step):
            result = optimization_step(run, batch, step)
            after_step(run, step + 1, batch, result, progress)
        progress.bar.close()
        return finish(run, time.perf_counter() - progress.started)
    finally:
        if run.log is not None:
            run.log.close()


def optimization_step(run: Run, batch: Batch, step: int) -> StepResult:
    """lr, zero-grad, (re)clustering, plain or cached backward, gradient averaging, unscale, clip,
    optimizer, temperature clamp, EMA teacher."""
    cfg, ctx, optimizer = run.cfg, run.ctx, run.optimizer
    lr = lr_at(step, cfg.train)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    if run.clusters is not None and run.clusters.due(step):
        embedder = {"model": ctx.model, "teacher": ctx.teacher, "reference": ctx.reference}[cfg.clusters.embed]
        assert embedder is not None  # a run with clusters keeps the frozen copy they embed with
        run.clusters.refresh(
            embedder, run.train_set, step, cfg.train.seed, cfg.train.progress and run.is_main, run.dataset.on_error
        )
    try:
        if cfg.train.accum_steps > 1:
            out = grad_cache_backward(ctx, batch.split(cfg.train.accum_steps))
        else:
            out = forward_backward(ctx, batch)
    except NonFiniteLossError as err:
        raise NonFiniteLossError(err.term, err.value, step) from None
    dist_utils.average_gradients(run.params)
    if run.scaler is not None:
        run.scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, cfg.train.grad_clip or float("inf"))
    if not torch.isfinite(grad_norm) and run.scaler is None:
        raise NonFiniteLossError("gradient norm", float(grad_norm), step)
    if run.scaler is not None:
        run.scaler.step(optimizer)
        run.scaler.update()
    else:
        optimizer.step()
    ctx.model.clamp_logit_scale_()
    ctx.objective.on_step_end()
    if ctx.teacher is not None:
        ema_update(ctx.teacher, ctx.model, cfg.train.teacher_momentum)
    return StepResult(out, lr, grad_norm)


def after_step(run: Run, done: int, batch: Batch, result: StepResult, progress: Progress) -> None:
    """Count, log, evaluate on val and checkpoint as the config asks, after step ``done``."""
    cfg = run.cfg
    progress.window_samples += len(batch) * run.world
    run.skipped.update(batch.skipped)
    for name, counts in batch.events.items():
        run.events[name] += int(counts.sum())
    progress.bar.update(1)
    last = done == cfg.train.steps
    if run.log is not None and (done % cfg.train.log_every == 0 or last):
        _log_step(run, done, result, progress)
    if run.val_set is not None and run.log is not None and done % cfg.train.eval_every == 0 and not last:
        quick = evaluate_model(run.model, run.val_set, cfg, max_records=min(500, len(run.val_set)), progress=False)
        run.log.write({"step": done, "split": "val", **headline_metrics(quick.results)})
        run.model.train()
    if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and not last:
        checkpoint(run, done)


def _log_step(run: Run, done: int, result: StepResult, progress: Progress) -> None:
    model, out, rate = run.model, result.out, progress.rate()
    record: dict[str, Any] = {
        "step": done,
        "loss": float(out.loss.detach()),
        "lr": result.lr,
        "logit_scale": float(model.logit_scale.detach()),
        "grad_norm": float(result.grad_norm),
        "samples_per_s": rate,
        **{f"loss/{k}": float(v.detach()) for k, v in out.terms.items()},
    }
    if model.logit_bias is not None:
        record["logit_bias"] = float(model.logit_bias.detach())
    if run.skipped:
        record["data_skipped"] = dict(run.skipped)
    assert run.log is not None
    run.log.write(record)
    progress.bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{result.lr:.1e}", sps=f"{rate:.0f}")


def checkpoint(run: Run, step: int) -> None:
    """Write the checkpoint of ``step`` (rank 0) and wait for every rank."""
    if run.is_main:
        save_state(
            run.run_dir,
            step,
            run.model,
            run.objective,
            run.optimizer,
            run.ctx.teacher,
            run.skipped,
            run.scaler,
            run.clusters,
        )
    if run.world > 1:
        torch.distributed.barrier()


def finish(run: Run, train_seconds: float) -> dict[str, Any]:
    """The final checkpoint, then (rank 0) the evaluation and the report."""
    cfg = run.cfg
    checkpoint(run, cfg.train.steps)
    if not run.is_main:
        return {}
    eval_set = open_source(cfg.data.source, cfg.eval.split, cfg.data)
    eval_started = time.perf_counter()
    output = evaluate_model(
        run.model, eval_set, cfg, max_records=cfg.eval.max_records or None, progress=cfg.train.progress
    )
    if run.truncated_before is not None:
        truncated = truncated_captions(run.model.text_tower)
        assert truncated is not None  # the tokenizer counted truncations when the run started
        run.events["caption_truncations"] = truncated - run.truncated_before
    timing = {
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - eval_started,
        "steps": cfg.train.steps,
        "resumed_from": run.start_step if run.resumed else None,
        "world_size": run.world,
    }
    report = write_suite(
        run.run_dir,
        output,
        config=cfg.to_dict(),
        timing=timing,
        metrics_log=run.run_dir / "metrics.jsonl",
        extra={"training_data": {"skipped_records": dict(run.skipped), "on_error": cfg.data.on_error, **run.events}},
    )
    report["markdown_summary"] = summarize_results(output.results, with_model=False)
    assert run.log is not None  # rank 0
    run.log.final(cfg.train.steps, headline_metrics(output.results, prefix="eval"), run.run_dir)
    return report
