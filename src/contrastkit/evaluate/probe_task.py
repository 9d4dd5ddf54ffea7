"""The linear-probe task of the suite: embed the train (and val) split, fit a probe per task and per k shots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..data.records import Record, ZeroShotTask
from .features import Features
from .linear_probe import linear_probe
from .request import EvalRequest, TaskLog, first_records, open_split
from .zeroshot import zeroshot_tasks_for


def _record_key(rec: Record) -> str:
    """What identifies a record across splits: its key, else its image path (in-memory images: unique)."""
    if rec.key:
        return f"key:{rec.key}"
    return f"path:{rec.image}" if not hasattr(rec.image, "tobytes") else f"object:{id(rec.image)}"


def _split_features(
    req: EvalRequest, feats: Features, split: str, test_keys: set[str]
) -> tuple[dict[str, ZeroShotTask], Tensor]:
    """The labelled tasks and image embeddings of ``split``; refuses a split that is the evaluated one."""
    ds = open_split(req, split)
    records = first_records(ds, req.max_train_records)
    shared = sum(_record_key(r) in test_keys for r in records)
    if shared > 0.5 * min(len(records), len(test_keys)):
        raise ValueError(
            f"linear_probe: {shared} of the {len(records)} records of the {split!r} split are also in the "
            f"{req.split!r} split (a source without splits serves every split whole); give split files "
            "({split} in the spec) or a hash split (--set data.test_fraction=0.2 --set data.val_fraction=0.1)"
        )
    tasks = zeroshot_tasks_for(ds, records, classnames=req.classnames)
    emb = feats.record_images(records, {"data": req.data, "split": split, "dataset": getattr(ds, "name", "")})
    return {t.name: t for t in tasks}, emb


def linear_probe_task(
    req: EvalRequest,
    feats: Features,
    test_tasks: Sequence[ZeroShotTask],
    test_emb: Tensor,
    log: TaskLog,
    dataset_name: Callable[[str], str],
    test_records: Sequence[Record],
) -> dict[str, Any]:
    """``{task: {"full" | "<k>-shot": metrics}}`` for every task the train split shares with the test split."""
    if not test_tasks:
        raise ValueError("linear_probe: the evaluated split defines no labelled task")
    if req.data is None:
        raise ValueError("linear_probe: give the data as a spec (--data) so its train split can be opened")
    test_keys = {_record_key(r) for r in test_records}
    train_tasks, train_emb = _split_features(req, feats, req.train_split, test_keys)
    val_tasks, val_emb = _split_features(req, feats, req.val_split, test_keys) if req.val_split else ({}, None)
    out: dict[str, Any] = {}
    for task in test_tasks:
        tr = train_tasks.get(task.name)
        if tr is None:
            continue
        if len(tr.classnames) != len(task.classnames):
            raise ValueError(
                f"linear_probe {task.name!r}: {len(tr.classnames)} classes in the "
                f"{req.train_split} split but {len(task.classnames)} in {req.split}"
            )
        va = val_tasks.get(task.name)
        per_k: dict[str, Any] = {}
        for k in [None, *req.fewshot]:
            metrics = linear_probe(
                train_emb[torch.as_tensor(tr.indices)],
                tr.labels,
                test_emb[torch.as_tensor(task.indices)],
                task.labels,
                val_x=val_emb[torch.as_tensor(va.indices)] if va is not None and val_emb is not None else None,
                val_y=va.labels if va is not None else None,
                classnames=task.classnames,
                fewshot_k=k,
                seed=req.seed,
                max_iter=req.probe_max_iter,
            )
            per_k["full" if k is None else f"{k}-shot"] = metrics
            log.add(
                "linear_probe",
                dataset_name(task.name),
                metrics,
                split=req.split,
                fewshot_k=k,
                train_split=req.train_split,
            )
        out[task.name] = per_k
    if not out:
        raise ValueError(
            f"linear_probe: the {req.train_split} split shares no labelled task with {req.split} "
            f"({', '.join(t.name for t in test_tasks)})"
        )
    return out
