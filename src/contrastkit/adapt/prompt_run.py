"""``contrastkit adapt prompt``: CoOp, CoCoOp, TOMM-style and GOPro over shots and seeds, with a report.

For every (method, k, seed) the k shots per class are drawn from the train split (with ``seed``), the
learner is fitted with the model frozen, its parameters are saved to ``OUT/prompts/<method>-k<k>-s<seed>
.safetensors`` and it is scored on the test split. ``--protocol base-to-new`` trains on the base half of
the classes and reports base accuracy, new accuracy and their harmonic mean (:mod:`.base_to_new`);
``--protocol all`` trains and scores on every class (the k-shot curve). The zero-shot head (the task's
templates, averaged) is scored the same way. Rows go to ``OUT/prompts.jsonl`` as they are measured; a
rerun with the same arguments measures only what is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..config import apply_overrides, config_from_dict
from ..data.records import Dataset, ZeroShotTask
from ..data.sources import open_source
from ..data.transforms import image_augment
from ..evaluate.benchmark_files import read_classnames
from ..evaluate.linear_probe import fewshot_indices
from ..invocation import command_line
from ..models.dual_encoder import DualEncoder
from ..models.embedder import dual_encoder_embedder
from ..models.load import load_run
from .base_to_new import among, harmonic_mean, split_classes
from .few_shot import check_shots, find_task, head_weights
from .prompt_inputs import PromptInputs, prompt_inputs
from .prompt_report import write_report
from .prompt_selection import Selection, choose_settings
from .prompt_tokens import PromptedText
from .prompt_training import METHODS, PromptSettings, build_learner, prompt_accuracy, train_prompts
from .result_lines import ResultLines

PROTOCOLS = ("base-to-new", "all")


@dataclass
class PromptRequest:
    run: str
    data: str
    task: str
    methods: list[str]
    shots: list[int]
    seeds: list[int]
    protocol: str = "base-to-new"
    max_records: int = 1000  # test images of the task
    eval_split: str = "test"
    settings: PromptSettings = field(default_factory=PromptSettings)
    views: int = 4  # augmented views per shot (GOPro)
    view_augment: str = "shapes_safe"
    classnames: str | None = None  # a file naming the task's classes, line i for class i


@dataclass
class Scene:
    """What every (method, k, seed) shares: the frozen model, the prompts, the task and its test inputs."""

    model: DualEncoder
    text: PromptedText
    task: ZeroShotTask
    train: Dataset
    train_indices: list[int]  # the task's train records (dataset indices)
    train_labels: np.ndarray
    test: PromptInputs
    test_labels: torch.Tensor
    groups: dict[str, torch.Tensor]  # "base"/"new" (or "all") -> class ids
    trained: torch.Tensor  # the classes the shots are drawn from: "base" (or "all")
    zero_shot_head: torch.Tensor  # C x D, the task's templates averaged


def check_request(request: PromptRequest) -> None:
    if request.protocol not in PROTOCOLS:
        raise ValueError(f"--protocol {request.protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    unknown = [m for m in request.methods if m not in METHODS]
    if unknown or not request.methods:
        raise ValueError(f"--methods {','.join(unknown) or '(none)'}: choose from {', '.join(METHODS)}")
    if not request.shots or min(request.shots) < 1:
        raise ValueError(f"--shots: give positive numbers of shots per class, got {request.shots}")
    if "gopro" in request.methods and request.views < 2:
        raise ValueError(f"--views {request.views}: GOPro needs at least 2 augmented views per shot")


def run_prompts(
    request: PromptRequest,
    out: Path,
    *,
    data_overrides: Sequence[str] = (),
    progress: bool = True,
    selection: Selection | None = None,
):
    """Measure what ``out/prompts.jsonl`` lacks, then write the report; returns the report.

    With ``selection`` each (method, k) first gets its lr and steps from a grid scored on another split
    (:mod:`.prompt_selection`); the rows then record the settings they were trained with.
    """
    check_request(request)
    # rows are per (method, k, seed): a rerun may add methods, shots or seeds to the same folder
    spec = {**asdict(request), "data_overrides": list(data_overrides)}
    if selection is not None:
        selection.check(request.eval_split)
        spec["select_on"] = selection.split
    lines = ResultLines(out, "prompts.jsonl", spec, free=("methods", "shots", "seeds"))
    chosen, trials = _choose(request, out, spec, data_overrides, selection) if selection else ({}, [])
    wanted = [(m, k, s) for m in ("zero_shot", *request.methods) for k in request.shots for s in request.seeds]
    rows = [r for r in lines.read() if (r["method"], r["k"], r["seed"]) in set(wanted)]  # the report is the request's
    done = {(r["method"], r["k"], r["seed"]) for r in rows}
    todo = [key for key in wanted if key not in done]
    if todo:
        scene = _scene(request, data_overrides)
        for method, k, seed in tqdm(todo, desc="prompt learning", disable=not progress):
            settings = chosen.get((method, k), request.settings)
            row = _measure(scene, replace(request, settings=settings), method, k, seed, out)
            if method != "zero_shot":
                row.update(lr=settings.lr, steps=settings.steps)
            lines.append(row)
            rows.append(row)
    picked = None
    if selection is not None:
        chosen_rows = [{"method": m, "k": k, "lr": c.lr, "steps": c.steps} for (m, k), c in chosen.items()]
        picked = {"split": selection.split, "seed": request.seeds[0], "chosen": chosen_rows, "trials": trials}
    return write_report(request, rows, out, command_line(), picked)


def _choose(
    request: PromptRequest,
    out: Path,
    spec: dict[str, Any],
    data_overrides: Sequence[str],
    selection: Selection,
) -> tuple[dict[tuple[str, int], PromptSettings], list[dict[str, Any]]]:
    """Each (method, k)'s lr and steps, chosen at the first seed on ``selection.split``; and the trials."""
    seed = request.seeds[0]
    trial_spec = {key: value for key, value in spec.items() if key not in ("seeds", "eval_split")} | {"seed": seed}
    scene: list[Scene] = []  # built on the first trial that needs it

    def measure(method: str, k: int, settings: PromptSettings, trial_out: Path) -> dict[str, Any]:
        if not scene:
            scene.append(_scene(replace(request, eval_split=selection.split), data_overrides))
        trial_out.mkdir(parents=True, exist_ok=True)
        return _measure(scene[0], replace(request, settings=settings), method, k, seed, trial_out)

    return choose_settings(selection, request.methods, request.shots, request.settings, out, trial_spec, measure)


def _scene(request: PromptRequest, data_overrides: Sequence[str]) -> Scene:
    model, cfg = load_run(request.run)
    model.eval().requires_grad_(False)
    data_cfg = config_from_dict(apply_overrides(cfg.to_dict(), [f"data.source={request.data}", *data_overrides])).data
    train, test = (open_source(request.data, split, data_cfg) for split in ("train", request.eval_split))
    task = _named(find_task(test, request.task), request.classnames)
    train_task = find_task(train, request.task)
    n = len(task.classnames)
    base, new = split_classes(n)
    groups = {"base": base, "new": new} if request.protocol == "base-to-new" else {"all": torch.arange(n)}
    trained = groups["base"] if "base" in groups else groups["all"]
    train_labels = np.array(train_task.labels)
    check_shots(torch.from_numpy(train_labels), task.classnames, request.shots, trained.tolist())
    order = np.arange(len(task.indices))
    if len(order) > request.max_records:
        order = np.sort(np.random.default_rng(0).choice(len(order), request.max_records, replace=False))
    images = [test[task.indices[i]].load_image() for i in order]
    test_inputs = prompt_inputs(model, images, model.image_transform(False))
    text = PromptedText(model, task.classnames, request.settings.n_ctx, request.settings.position)
    labels = torch.tensor([task.labels[i] for i in order])
    head = head_weights(dual_encoder_embedder(model), task)
    return Scene(
        model, text, task, train, list(train_task.indices), train_labels, test_inputs, labels, groups, trained, head
    )


def _named(task: ZeroShotTask, classnames: str | None) -> ZeroShotTask:
    """The task with its classes renamed from ``classnames`` (a file, one name per class, in class order)."""
    if classnames is None:
        return task
    names = read_classnames(classnames)
    if len(names) != len(task.classnames):
        raise ValueError(
            f"--classnames {classnames}: {len(names)} names for the {len(task.classnames)} classes of task "
            f"{task.name!r} ({', '.join(task.classnames)})"
        )
    return replace(task, classnames=names)


def _measure(scene: Scene, request: PromptRequest, method: str, k: int, seed: int, out: Path) -> dict[str, Any]:
    if method == "zero_shot":
        scores = {
            name: _zero_shot(scene.test.features, scene.test_labels, scene.zero_shot_head, classes)
            for name, classes in scene.groups.items()
        }
        return _row(method, k, seed, scores, [])
    pool = np.flatnonzero(np.isin(scene.train_labels, scene.trained.numpy()))
    shots = pool[fewshot_indices(scene.train_labels[pool], k, seed)]
    images = [scene.train[scene.train_indices[i]].load_image() for i in shots]
    shot_inputs = prompt_inputs(scene.model, images, scene.model.image_transform(False))
    views = _views(scene, images, request, seed) if method == "gopro" else []
    learner = build_learner(
        method, scene.text, len(scene.task.classnames), shot_inputs.stats.shape[1], request.settings, seed
    )
    labels = torch.from_numpy(scene.train_labels[shots])
    losses = train_prompts(learner, scene.text, shot_inputs, labels, scene.trained, request.settings, seed, views)
    (out / "prompts").mkdir(exist_ok=True)
    state = {name: value.detach().contiguous() for name, value in learner.state_dict().items()}
    save_file(state, str(out / "prompts" / f"{method}-k{k}-s{seed}.safetensors"))
    scores = {}
    for name, classes in scene.groups.items():
        rows = among(scene.test_labels, classes)
        scores[name] = prompt_accuracy(learner, scene.text, scene.test[rows], scene.test_labels[rows], classes)
    return _row(method, k, seed, scores, losses)


def _views(scene: Scene, images: Sequence[Image.Image], request: PromptRequest, seed: int) -> list[PromptInputs]:
    """``request.views`` augmented views of every shot (seeded), as prompt inputs."""
    size = images[0].size[0]
    augment, transform = image_augment(request.view_augment, size), scene.model.image_transform(False)
    torch.manual_seed(seed)
    return [prompt_inputs(scene.model, [augment(im) for im in images], transform) for _ in range(request.views)]


def _zero_shot(features: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, classes: torch.Tensor) -> float:
    """Accuracy of the zero-shot head over ``classes`` on the images of those classes."""
    rows = among(labels, classes)
    predicted = classes[(features[rows] @ weights[classes].T).argmax(1)]
    return float((predicted == labels[rows]).float().mean())


def _row(method: str, k: int, seed: int, scores: dict[str, float], losses: list[float]) -> dict[str, Any]:
    if "base" in scores:
        scores["harmonic"] = harmonic_mean(scores["base"], scores["new"])
    return {"method": method, "k": k, "seed": seed, **scores, "final_loss": losses[-1] if losses else None}
