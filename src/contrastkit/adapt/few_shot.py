"""The few-shot ladder on one classification task: zero-shot head, linear probe and Tip-Adapter per k and seed.

``contrastkit adapt few-shot RUN --data SPEC --task NAME``: image embeddings of the task's records of the
train split (where the k shots per class are drawn, seeded), the val split (where the linear probe's C and
Tip-Adapter's α, β are chosen) and the test split (scored once); the zero-shot head is the class prompts'
mean text embedding (:func:`~contrastkit.evaluate.zeroshot.class_embeddings`). Methods:

- ``zero_shot``: argmax of f Wᵀ (no shots: the same for every k);
- ``linear_probe``: CLIP's logistic-regression probe on the k shots (:mod:`~contrastkit.evaluate.linear_probe`);
- ``tip_adapter``: the training-free cache model (:mod:`~contrastkit.adapt.tip_adapter`);
- ``ft`` / ``lp_ft``: the image tower fine-tuned on the k shots with the zero-shot head / with the linear
  probe's head (:mod:`~contrastkit.adapt.lp_ft`), when fine-tuning steps are asked for;
- ``lora``: FT with LoRA adapters of rank r on the image side instead of all its weights, when a rank is given.

Rows are appended to ``OUT/ladder.jsonl`` as they are measured; a rerun with the same arguments measures
only the missing ones. A class with fewer training images than k stops the run, naming the class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..config import LoraConfig
from ..data.records import Dataset, ZeroShotTask
from ..evaluate.linear_probe import fewshot_indices, linear_probe
from ..evaluate.verdicts import summarize
from ..evaluate.zeroshot import class_embeddings
from ..models.dual_encoder import DualEncoder
from ..models.embedder import TorchEmbedder
from ..models.lora import trainable_share
from .lp_ft import FineTuneSettings, accuracy, fine_tune, probe_head
from .tip_adapter import choose_alpha_beta, tip_adapter_logits

METHODS = ("zero_shot", "linear_probe", "tip_adapter", "lp_ft", "ft", "lora")


@dataclass
class TaskSplit:
    """Image embeddings (N x D), class labels (N) and the images of one split of the task."""

    features: Tensor
    labels: Tensor
    images: list[Image.Image] = field(default_factory=list)


@dataclass
class Row:
    method: str
    k: int
    seed: int
    acc1: float
    chosen: dict[str, float]  # what validation chose (C; alpha, beta)
    # the adapted weights (probe head; Tip-Adapter cache; the fine-tuned heads and LoRA adapters), saved apart
    weights: dict[str, Tensor] = field(default_factory=dict, repr=False, compare=False)

    def line(self) -> dict[str, Any]:
        """The row as one line of ladder.jsonl (the weights go to their own file)."""
        return {"method": self.method, "k": self.k, "seed": self.seed, "acc1": self.acc1, "chosen": self.chosen}


def find_task(dataset: Dataset, name: str) -> ZeroShotTask:
    tasks = {task.name: task for task in dataset.zeroshot_tasks()}
    if name not in tasks:
        raise ValueError(f"--task {name!r}: the data defines {', '.join(tasks) or 'no classification task'}")
    return tasks[name]


def embed_split(
    dataset: Dataset, task_name: str, embedder: TorchEmbedder, max_records: int | None, seed: int = 0
) -> TaskSplit:
    """Embeddings and labels of (at most ``max_records``, a seeded sample of) the task's records."""
    task = find_task(dataset, task_name)
    order = np.arange(len(task.indices))
    if max_records is not None and len(order) > max_records:
        order = np.sort(np.random.default_rng(seed).choice(len(order), max_records, replace=False))
    images = [dataset[task.indices[i]].load_image() for i in order]
    labels = torch.tensor([task.labels[i] for i in order])
    return TaskSplit(embedder.embed_images(images).float(), labels, images)


def check_shots(
    labels: Tensor, classnames: Sequence[str], shots: Sequence[int], classes: Sequence[int] | None = None
) -> None:
    """Every class (of ``classes``, default all) needs at least max(shots) training images; else name the
    classes that do not have them."""
    counts = torch.bincount(labels, minlength=len(classnames))
    wanted = range(len(classnames)) if classes is None else classes
    short = [f"{classnames[c]} ({int(counts[c])})" for c in wanted if counts[c] < max(shots)]
    if short:
        raise ValueError(
            f"--shots {max(shots)}: these classes have fewer training images: {', '.join(short)}; "
            "lower --shots or give more data"
        )


def ladder_rows(
    train: TaskSplit, val: TaskSplit, test: TaskSplit, weights: Tensor, scale: float, k: int, seed: int
) -> list[Row]:
    """The three methods at ``k`` shots per class, shots drawn with ``seed``."""
    zero = float(((test.features @ weights.T).argmax(1) == test.labels).float().mean())
    probe = linear_probe(
        train.features, train.labels, test.features, test.labels, val_x=val.features, val_y=val.labels,
        fewshot_k=k, seed=seed, max_iter=500, keep_head=True,
    )  # fmt: skip
    shots = torch.from_numpy(fewshot_indices(train.labels.numpy(), k, seed))
    keys, key_labels = train.features[shots], train.labels[shots]
    alpha, beta, _ = choose_alpha_beta(val.features, val.labels, weights, keys, key_labels, scale=scale)
    logits = tip_adapter_logits(test.features, weights, keys, key_labels, alpha=alpha, beta=beta, scale=scale)
    tip = float((logits.argmax(1) == test.labels).float().mean())
    return [
        Row("zero_shot", k, seed, zero, {}),
        Row("linear_probe", k, seed, float(probe["acc1"]), {"C": float(probe["C"])}, _head(*probe["head"])),
        Row("tip_adapter", k, seed, tip, {"alpha": alpha, "beta": beta}, {"keys": keys, "key_labels": key_labels}),
    ]


def finetune_rows(
    model: DualEncoder,
    embedder: TorchEmbedder,
    train: TaskSplit,
    test_pixels: Tensor,
    test_labels: Tensor,
    weights: Tensor,
    chosen_c: float,
    settings: FineTuneSettings,
    k: int,
    seed: int,
    lora: LoraConfig | None = None,
    lora_lr: float = 1e-3,
) -> list[Row]:
    """LP-FT, FT (and LoRA, given its settings) on the same k shots per class as the probe (drawn with ``seed``)."""
    shots = torch.from_numpy(fewshot_indices(train.labels.numpy(), k, seed))
    pixels = torch.stack([embedder.preprocess(train.images[i]) for i in shots.tolist()])
    labels = train.labels[shots]
    probe_w, probe_b = probe_head(train.features[shots], labels, len(weights), chosen_c)
    lp_ft = fine_tune(model, probe_w, probe_b, 1.0, pixels, labels, settings, seed)
    scale = float(model.logit_scale.detach())
    ft = fine_tune(model, weights, torch.zeros(len(weights)), scale, pixels, labels, settings, seed)
    knobs = {"steps": float(settings.steps), "lr": settings.lr}
    rows = [  # the fine-tuned image towers are not kept (a full tower per k and seed); their heads are
        Row("lp_ft", k, seed, accuracy(lp_ft, test_pixels, test_labels), {"C": chosen_c, **knobs}, _kept(lp_ft)),
        Row("ft", k, seed, accuracy(ft, test_pixels, test_labels), knobs, _kept(ft)),
    ]
    if lora is not None:
        low_rank = replace(settings, lr=lora_lr)
        adapted = fine_tune(model, weights, torch.zeros(len(weights)), scale, pixels, labels, low_rank, seed, lora)
        trainable, total = trainable_share(adapted.model)
        chosen = {"steps": float(settings.steps), "lr": lora_lr, "rank": float(lora.rank), "share": trainable / total}
        rows.append(Row("lora", k, seed, accuracy(adapted, test_pixels, test_labels), chosen, _kept(adapted)))
    return rows


def _head(weight: Tensor, bias: Tensor) -> dict[str, Tensor]:
    return {"weight": weight, "bias": bias}


def _kept(classifier: torch.nn.Module) -> dict[str, Tensor]:
    """A fine-tuned classifier's head, and its LoRA adapters when it has them."""
    return {
        name: p.detach().clone()
        for name, p in classifier.named_parameters()
        if name in ("weight", "bias") or "lora_" in name
    }


def head_weights(embedder: TorchEmbedder, task: ZeroShotTask) -> Tensor:
    return class_embeddings(task.classnames, task.templates, embedder).float()


def summarise(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Mean and sample sd of acc1 over seeds, per method and k."""
    out = []
    for method in METHODS:
        for k in sorted({r.k for r in rows}):
            values = [r.acc1 for r in rows if r.method == method and r.k == k]
            if values:
                stats = summarize(values)
                out.append({"method": method, "k": k, "mean": stats.mean, "sd": stats.sd, "n": stats.n})
    return out
