"""Evaluation: zero-shot, retrieval, compositional, geometry, and the run report.

    from contrastkit.evaluate import evaluate_dataset_with_embeddings, write_suite
    out = evaluate_dataset_with_embeddings(embedder, dataset)
    write_suite(run_dir, out, config=cfg)

An embedder is anything with ``embed_images(images)`` and ``embed_texts(texts)``
returning L2-normalised float32 CPU tensors (:class:`~contrastkit.models.embedder.Embedder`).
Every evaluation, at training time and from the command line, runs :func:`run_suite`.

Any loadable model (run directory, ``open_clip:<name>`` + local weights,
``hf:<CLIP/SigLIP folder>``), every task, the feature cache and the
CLIP_benchmark-style result files: :mod:`contrastkit.evaluate.suite`
(``contrastkit eval``). Linear probe: :func:`linear_probe`; SugarCrepe / ARO:
:func:`evaluate_choices` with :mod:`contrastkit.evaluate.benchmark_files`; two reports
side by side: :mod:`contrastkit.evaluate.compare`.
"""

from ..models.embedder import Embedder, PixelEmbedder
from .benchmark_files import ChoiceItem, read_aro, read_classnames, read_sugarcrepe, read_templates
from .cache import FeatureCache, TextStore
from .compare import compare_reports, format_comparison, load_report
from .compositional import evaluate_choices, evaluate_compositional, evaluate_triples, pair_correct
from .embedding import TextEmbeddingCache, embed_images
from .geometry import (
    alignment,
    centroid_cosine,
    effective_rank,
    geometry_metrics,
    linear_separability,
    mean_negative_cosine,
    mean_positive_cosine,
    modality_gap,
    temperature_diagnostics,
    tolerance,
    uniformity,
)
from .linear_probe import linear_probe
from .report import read_metrics_log, render_markdown, write_report
from .result_files import write_suite
from .retrieval import retrieval_metrics
from .suite import EvalRequest, SuiteOutput, evaluate_dataset, evaluate_dataset_with_embeddings, run_suite
from .zeroshot import class_embeddings, evaluate_zeroshot, format_template, zeroshot_metrics

__all__ = [
    "ChoiceItem",
    "Embedder",
    "EvalRequest",
    "FeatureCache",
    "PixelEmbedder",
    "SuiteOutput",
    "TextEmbeddingCache",
    "TextStore",
    "alignment",
    "centroid_cosine",
    "class_embeddings",
    "compare_reports",
    "effective_rank",
    "embed_images",
    "evaluate_choices",
    "evaluate_compositional",
    "evaluate_dataset",
    "evaluate_dataset_with_embeddings",
    "evaluate_triples",
    "evaluate_zeroshot",
    "format_comparison",
    "format_template",
    "geometry_metrics",
    "linear_probe",
    "linear_separability",
    "load_report",
    "mean_negative_cosine",
    "mean_positive_cosine",
    "modality_gap",
    "pair_correct",
    "read_aro",
    "read_classnames",
    "read_metrics_log",
    "read_sugarcrepe",
    "read_templates",
    "render_markdown",
    "retrieval_metrics",
    "run_suite",
    "temperature_diagnostics",
    "tolerance",
    "uniformity",
    "write_report",
    "write_suite",
    "zeroshot_metrics",
]
