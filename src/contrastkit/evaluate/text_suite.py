"""The text tasks of the evaluation suite: STS, text retrieval and text geometry.

- ``sts``: every STS set of the request (``sts``: files of scored sentence pairs, read with
  ``sts_columns``, or ``builtin``: the shapes world's graded-similarity set,
  :func:`~contrastkit.data.shapes.similarity.graded_pairs`; a ``pairs:shapes...`` dataset adds it by itself);
  metrics of :mod:`~contrastkit.evaluate.sts`, results ``sts[<set name>]``.
- ``text_retrieval``: on a text-pair split, each anchor is a query and the distinct positives are the
  corpus, its own positive the relevant document (:mod:`~contrastkit.evaluate.text_retrieval`); skipped
  (and said so) on single sentences.
- ``text_classification``: on labelled pairs (``data.label_column``), the accuracy of the nearest class
  description (input–label contrast as a classifier).
- ``text_geometry``: alignment of the anchor / positive pairs (not for single sentences), uniformity and
  anisotropy (:mod:`~contrastkit.evaluate.text_geometry`).

Every string is embedded once per model through the suite's text cache.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..data.records import Dataset, Record
from ..data.shapes.similarity import graded_pairs
from ..data.text_pairs import ScoredPair, read_scored_pairs
from .request import EvalRequest, SuiteOutput, TaskLog, first_records
from .sts import EmbedTexts, evaluate_sts
from .text_geometry import text_geometry
from .text_retrieval import retrieval_metrics

TEXT_TASKS = ("sts", "text_retrieval", "text_classification", "text_geometry")
BUILTIN_STS = "builtin"
BUILTIN_STS_NAME = "shapes-sts"
BUILTIN_STS_PAIRS = 600


def sts_specs(req: EvalRequest, dataset: Dataset | None) -> list[str]:
    """The request's STS files (and ``builtin``); a ``pairs:shapes...`` dataset brings the built-in set."""
    specs = [str(s) for s in req.sts]
    if str(getattr(dataset, "name", "")).startswith("pairs:shapes") and BUILTIN_STS not in specs:
        specs.insert(0, BUILTIN_STS)
    return specs


def sts_sets(req: EvalRequest, dataset: Dataset | None) -> dict[str, list[ScoredPair]]:
    """The STS sets of :func:`sts_specs` by name, read."""
    specs = sts_specs(req, dataset)
    sets: dict[str, list[ScoredPair]] = {}
    for spec in specs:
        if spec == BUILTIN_STS:
            sets[BUILTIN_STS_NAME] = graded_pairs(BUILTIN_STS_PAIRS, seed=0)
        else:
            sets[Path(spec).stem] = read_scored_pairs(spec, columns=tuple(req.sts_columns)).rows
    return sets


def classify_by_label(dataset: Dataset, records: list[Record], inputs: Tensor, embed: EmbedTexts) -> dict[str, float]:
    """Accuracy of the class whose description (``data.class_template`` with its name) is nearest each input."""
    classnames = list(getattr(dataset, "classnames", []))
    labelled = [i for i, r in enumerate(records) if r.label is not None and r.label >= 0]
    if not classnames or not labelled:
        raise ValueError("text_classification needs labelled text pairs: set data.label_column")
    template = str(getattr(getattr(dataset, "cfg", None), "class_template", "{}"))
    descriptions = embed([template.format(c) for c in classnames])
    predicted = (inputs[labelled] @ descriptions.T).argmax(1)
    truth = torch.tensor([int(records[i].label or 0) for i in labelled])
    return {"acc1": float((predicted == truth).double().mean()), "classes": float(len(classnames))}


def _anchor(record: Record) -> str:
    return str(getattr(record, "anchor", "") or "")


def run_text_tasks(
    dataset: Dataset | None, tasks: list[str], req: EvalRequest, embed: EmbedTexts, log: TaskLog, out: SuiteOutput
) -> None:
    """The asked text tasks into ``out.results`` (and one CLIP_benchmark-style entry each into ``log``)."""
    if "sts" in tasks:
        sets = sts_sets(req, dataset)
        if not sets:
            raise ValueError("the sts task needs STS pairs: give --sts FILE (or --sts builtin)")
        out.results["sts"] = {}
        for name, pairs in sets.items():
            out.results["sts"][name] = metrics = evaluate_sts(embed, pairs)
            log.add("sts", name, metrics, split="test")
    pair_tasks = [t for t in tasks if t != "sts"]
    if not pair_tasks:
        return
    if dataset is None or not getattr(dataset, "text_pairs", False):
        raise ValueError(f"tasks {', '.join(pair_tasks)} need text pairs: give --data pairs:FILE or pairs:shapes")
    name = str(getattr(dataset, "name", "pairs"))
    # bad rows (data.on_error: skip) have no caption: left out, as in training
    records = [r for r in first_records(dataset, req.max_records) if r.captions and _anchor(r)]
    anchors = [_anchor(r) for r in records]
    positives = [r.captions[0] for r in records]
    if len(records) < 2:
        raise ValueError(f"dataset {name!r}: text tasks need at least 2 pairs, got {len(records)}")
    anchor_emb, positive_emb = embed(anchors), embed(positives)
    single = anchors == positives  # single sentences: retrieval and alignment would be trivial
    if single:
        out.results.setdefault("skipped", {})["text_retrieval"] = "each anchor is its own positive (single sentences)"
    if "text_retrieval" in tasks and not single:
        corpus = list(dict.fromkeys(positives))
        at = {t: i for i, t in enumerate(corpus)}
        scores = anchor_emb @ embed(corpus).T
        out.results["text_retrieval"] = metrics = retrieval_metrics(scores, [{at[p]} for p in positives])
        log.add("text_retrieval", name, metrics, split=req.split)
    if "text_classification" in tasks:
        out.results["text_classification"] = metrics = classify_by_label(dataset, records, anchor_emb, embed)
        log.add("text_classification", name, metrics, split=req.split)
    if "text_geometry" in tasks:
        metrics = text_geometry(anchor_emb.double(), positive_emb.double())
        if single:
            del metrics["alignment"]
        out.results["text_geometry"] = metrics
        log.add("text_geometry", name, metrics, split=req.split)
