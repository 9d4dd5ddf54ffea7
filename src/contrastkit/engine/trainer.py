"""The training loop: one batch, top-down.

    records -> transforms -> batch -> model -> Encoded -> objective -> backward
    -> clip -> AdamW step -> clamp temperature -> log / evaluate / checkpoint

The engine knows nothing about particular losses: it asks the objective which
inputs its terms need and which model settings they want.
"""
from __future__ import annotations

import json
import random
import time
from collections import Counter
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data.pipeline import TrainingSet, ViewSpec, make_train_loader, tag_vocabulary
from ..data.records import Dataset
from ..data.transforms import TextAugment, image_augment
from ..data.sources import open_source
from ..models.build import build_model
from ..models.checkpoint import (latest_checkpoint, load_module, optimizer_from_tensors, optimizer_to_tensors,
                                 save_checkpoint, save_module)
from ..models.dual_encoder import DualEncoder
from ..objectives import NonFiniteLossError, Objective, build
from .encode import REFERENCE_FIELDS, TEACHER_FIELDS, VIEW_FIELDS, encode_batch
from .evaluation import evaluate_model
from .inputs import missing_inputs
from .metrics_log import MetricsLog
from .optim import lr_at, make_optimizer


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _frozen_copy(model: DualEncoder) -> DualEncoder:
    copy = deepcopy(model)
    copy.eval()
    for p in copy.parameters():
        p.requires_grad_(False)
    return copy


@torch.no_grad()
def _ema_update(teacher: DualEncoder, student: DualEncoder, momentum: float) -> None:
    """teacher <- m teacher + (1 - m) student, over parameters and floating buffers."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.lerp_(s.detach(), 1 - momentum)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.dtype.is_floating_point:
            t.lerp_(s, 1 - momentum)
        else:
            t.copy_(s)


def _tag_vocabulary(objective: Objective, train_set: Dataset) -> list[str]:
    """The tag order of the targets: a term's own ``vocabulary``, else the tags found in the data.

    A term that states ``num_tags`` must agree with the vocabulary size.
    """
    terms = [(label, term) for label, term in zip(objective.labels, objective.terms) if "tags" in term.requires]
    vocabulary = next((list(t.vocabulary) for _, t in terms if getattr(t, "vocabulary", None)), None)
    vocabulary = vocabulary or tag_vocabulary(train_set)
    for label, term in terms:
        size = getattr(term, "num_tags", len(vocabulary))
        if size != len(vocabulary):
            raise ValueError(f"objective term {label!r}: num_tags is {size} but the data has {len(vocabulary)} tags; "
                             f"set num_tags: {len(vocabulary)} (or give the term its vocabulary)")
    return vocabulary


def _training_set(cfg: Config, train_set: Dataset, model: DualEncoder, objective: Objective) -> TrainingSet:
    """The training view of the data: only the per-record work the objective needs."""
    size = cfg.data.image_size
    requires = objective.requires
    views = ViewSpec()
    if requires & VIEW_FIELDS:
        views = ViewSpec(cfg.data.views, image_augment(cfg.data.view_image_augment, size),
                         TextAugment(cfg.data.view_text_augment))
    neg_per_image = cfg.data.neg_per_image if requires & {"neg_text", "neg_text_mask", "teacher_neg_text"} else 0
    augment = None if cfg.data.image_augment == "none" else image_augment(cfg.data.image_augment, size)
    vocabulary = _tag_vocabulary(objective, train_set) if "tags" in requires else None
    return TrainingSet(train_set, model.image_transform(train=True), cfg.train.seed, neg_per_image, augment,
                       views, vocabulary)


def train(cfg: Config, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; with ``resume`` continue from its latest checkpoint.

    Returns the final report (also written to ``run_dir/report.json``).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    _seed_everything(cfg.train.seed)

    objective = build(cfg.objective)
    model = build_model(cfg.model, cfg.data.image_size, objective.model_defaults)
    if cfg.model.init_from:
        load_module(model, latest_checkpoint(Path(cfg.model.init_from)) / "model.safetensors")
    train_set = open_source(cfg.data.source, "train", cfg.data)
    problems = missing_inputs(objective, cfg, train_set, model)
    if problems:
        raise ValueError("the recipe cannot run on this data/model:\n  " + "\n  ".join(problems))
    requires = objective.requires
    teacher = _frozen_copy(model) if objective.needs_teacher or requires & TEACHER_FIELDS else None
    reference = _frozen_copy(model) if objective.needs_reference or requires & REFERENCE_FIELDS else None
    dataset = _training_set(cfg, train_set, model, objective)
    if dataset.tag_index is not None:
        (run_dir / "tag_vocabulary.json").write_text(json.dumps(list(dataset.tag_index)))

    start_step = 0
    if resume:
        ckpt = latest_checkpoint(run_dir)
        state = json.loads((ckpt / "trainer.json").read_text())
        start_step = int(state["step"])
    else:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))

    loader = make_train_loader(dataset, cfg.train.batch_size, cfg.train.steps, cfg.train.seed, start_step,
                               workers=cfg.data.workers)
    # Lazily-sized heads in the objective are materialised by one forward before the optimizer sees them.
    first = next(iter(make_train_loader(dataset, cfg.train.batch_size, 1, cfg.train.seed, 0, workers=0)))
    # eval mode: materialise heads without touching BatchNorm running statistics.
    objective.eval()
    with torch.no_grad():
        objective(encode_batch(model, first, requires, teacher, reference), check_finite=False)
    objective.train()
    optimizer = make_optimizer([model, objective], cfg.train)
    params = [p for group in optimizer.param_groups for p in group["params"]]

    if reference is not None:
        reference_file = run_dir / "reference.safetensors"
        if resume:
            load_module(reference, reference_file)
        else:
            save_module(reference, reference_file)
    if resume:
        load_module(model, ckpt / "model.safetensors")
        if (ckpt / "objective.safetensors").exists():
            load_module(objective, ckpt / "objective.safetensors")
        if teacher is not None:
            load_module(teacher, ckpt / "teacher.safetensors")
        from safetensors.torch import load_file

        tensors = load_file(str(ckpt / "trainer.safetensors"))
        optimizer_from_tensors(optimizer, tensors, state["optimizer"])
        torch.set_rng_state(tensors["rng.torch"])
        random.setstate((state["python_rng"][0], tuple(state["python_rng"][1]), state["python_rng"][2]))

    log = MetricsLog(run_dir / "metrics.jsonl", resume_step=start_step if resume else None)
    val_set = open_source(cfg.data.source, "val", cfg.data) if cfg.train.eval_every else None

    def checkpoint(step: int) -> None:
        tensors, meta = optimizer_to_tensors(optimizer)
        tensors["rng.torch"] = torch.get_rng_state()
        save_checkpoint(run_dir, step, model, objective, tensors,
                        {"optimizer": meta, "python_rng": list(random.getstate()), "skipped": dict(skipped)},
                        extra_modules={"teacher": teacher} if teacher is not None else None)

    model.train()
    started = time.perf_counter()
    window_start, window_samples = started, 0
    bar = tqdm(total=cfg.train.steps, initial=start_step, desc="train", disable=not cfg.train.progress,
               dynamic_ncols=True)
    skipped: Counter[str] = Counter(state.get("skipped", {})) if resume else Counter()
    step = start_step
    for step, batch in enumerate(loader, start=start_step):
        lr = lr_at(step, cfg.train)
        for group in optimizer.param_groups:
            group["lr"] = lr
        enc = encode_batch(model, batch, requires, teacher, reference)
        try:
            out = objective(enc)
        except NonFiniteLossError as err:
            raise NonFiniteLossError(err.term, err.value, step) from None
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip or float("inf"))
        if not torch.isfinite(grad_norm):
            raise NonFiniteLossError("gradient norm", float(grad_norm), step)
        optimizer.step()
        model.clamp_logit_scale_()
        objective.on_step_end()
        if teacher is not None:
            _ema_update(teacher, model, cfg.train.teacher_momentum)

        window_samples += len(batch["captions"])
        skipped.update(batch.get("skipped", {}))
        bar.update(1)
        done = step + 1
        if done % cfg.train.log_every == 0 or done == cfg.train.steps:
            now = time.perf_counter()
            rate = window_samples / max(now - window_start, 1e-9)
            window_start, window_samples = now, 0
            record = {"step": done, "loss": float(out.loss.detach()), "lr": lr, "logit_scale": float(model.logit_scale.detach()),
                      "grad_norm": float(grad_norm), "samples_per_s": rate,
                      **{f"loss/{k}": float(v.detach()) for k, v in out.terms.items()}}
            if skipped:
                record["data_skipped"] = dict(skipped)
            if model.logit_bias is not None:
                record["logit_bias"] = float(model.logit_bias.detach())
            log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.1e}", sps=f"{rate:.0f}")
        if val_set is not None and done % cfg.train.eval_every == 0 and done != cfg.train.steps:
            quick = evaluate_model(model, val_set, cfg, max_records=min(500, len(val_set)), progress=False)
            log.write({"step": done, "split": "val", **quick.flat()})
            model.train()
        if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done != cfg.train.steps:
            checkpoint(done)
    bar.close()
    train_seconds = time.perf_counter() - started
    checkpoint(cfg.train.steps)

    eval_set = open_source(cfg.data.source, cfg.eval.split, cfg.data)
    eval_started = time.perf_counter()
    result = evaluate_model(model, eval_set, cfg, max_records=cfg.eval.max_records or None,
                            progress=cfg.train.progress)
    data_report = {"skipped_records": dict(skipped), "on_error": cfg.data.on_error}
    timing = {"train_seconds": train_seconds, "eval_seconds": time.perf_counter() - eval_started,
              "steps": cfg.train.steps, "resumed_from": start_step if resume else None}
    return result.write(run_dir, config=cfg.to_dict(), timing=timing, metrics_log=run_dir / "metrics.jsonl",
                        extra={"training_data": data_report})
