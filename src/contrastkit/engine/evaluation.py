"""Evaluate a DualEncoder on a dataset and write the run report."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..data.records import Dataset
from ..evaluate.report import write_report
from ..evaluate.runner import EvaluationOutput, evaluate_dataset_with_embeddings
from ..models.dual_encoder import DualEncoder
from ..models.embedder import ModelEmbedder

SUMMARY_RECALL = ("image_retrieval_recall@1", "text_retrieval_recall@1")


@dataclass
class ModelEvaluation:
    output: EvaluationOutput
    split: str

    def flat(self, prefix: str = "val") -> dict[str, float]:
        """A few headline numbers for the metrics log: zero-shot acc1 per task, recall@1, gap."""
        res = self.output.results
        flat: dict[str, float] = {}
        for task, metrics in res["zeroshot"].items():
            flat[f"{prefix}/zeroshot/{task}/acc1"] = float(metrics["acc1"])
        for key in SUMMARY_RECALL:
            if key in res["retrieval"]:
                flat[f"{prefix}/{key}"] = float(res["retrieval"][key])
        if "modality_gap" in res["geometry"]:
            flat[f"{prefix}/modality_gap"] = float(res["geometry"]["modality_gap"])
        return flat

    def summary(self) -> str:
        """Plain-text lines with the headline numbers, for the terminal."""
        res = self.output.results
        lines = [f"evaluation on {res.get('dataset', '?')} [{self.split}], {res['n_images']} images"]
        for task, metrics in res["zeroshot"].items():
            lines.append(f"  zero-shot {task:<28} acc1 {100 * metrics['acc1']:5.1f}%  "
                         f"mean-per-class recall {100 * metrics['mean_per_class_recall']:5.1f}%")
        for key in SUMMARY_RECALL:
            if key in res["retrieval"]:
                lines.append(f"  {key:<38} {100 * res['retrieval'][key]:5.1f}%")
        for cat, acc in res["compositional"].get("accuracy", {}).items():
            lines.append(f"  compositional {cat:<24} {100 * acc:5.1f}%")
        if "modality_gap" in res["geometry"]:
            lines.append(f"  modality gap (centroid distance)       {res['geometry']['modality_gap']:.3f}")
        return "\n".join(lines)

    def write(self, out_dir: str | Path, *, config: dict[str, Any] | None, timing: dict[str, Any] | None,
              metrics_log: Path | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        results = {**self.output.results, "split": self.split, **(extra or {})}
        report = write_report(out_dir, results, config=config, timing=timing, metrics_log=metrics_log,
                              image_emb=self.output.image_emb, text_emb=self.output.text_emb)
        report["markdown_summary"] = self.summary()
        return report


def evaluate_model(model: DualEncoder, dataset: Dataset, cfg: Config, *, max_records: int | None,
                   progress: bool) -> ModelEvaluation:
    embedder = ModelEmbedder(model, batch_size=cfg.eval.batch_size)
    output = evaluate_dataset_with_embeddings(embedder, dataset, batch_size=cfg.eval.batch_size,
                                              max_records=max_records, progress=progress, seed=cfg.train.seed)
    return ModelEvaluation(output, getattr(dataset, "split", "?"))
