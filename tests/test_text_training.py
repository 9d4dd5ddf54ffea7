"""Text–text training on the engine: text-pair sources, text models, exact accumulation, the text report,
reloading and evaluating a text model, and bad input named before any work."""

from __future__ import annotations

import json

import pytest
import torch

from contrastkit.cli import main
from contrastkit.config import load_config
from contrastkit.data.batch import collate
from contrastkit.data.pipeline import StepBatchSampler
from contrastkit.data.shapes.similarity import graded_pairs
from contrastkit.data.sources import open_source
from contrastkit.data.splits import split_of
from contrastkit.data.training_set import TrainingSet
from contrastkit.engine.encode import encode_batch
from contrastkit.engine.step import StepContext, forward_backward, grad_cache_backward
from contrastkit.evaluate.sts import evaluate_sts
from contrastkit.models.build import build_model
from contrastkit.models.load import load_model
from contrastkit.objectives import build

TINY_TEXT = [
    "name=text-tiny",
    "model.image_tower=none",
    "model.width=32",
    "model.embed_dim=16",
    "data.source=pairs:shapes",
    "data.train_size=96",
    "data.eval_size=40",
    "data.neg_per_image=1",
    "objective=[{name: simcse}]",
    "train.batch_size=16",
    "train.steps=4",
    "train.warmup_steps=1",
    "train.progress=false",
    "train.log_every=1",
]


def _train(tmp_path, overrides, name="run", expect: int = 0):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: text-tiny\n")
    args = ["train", str(recipe), "--out", str(tmp_path / name), "--no-progress"]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == expect
    return tmp_path / name


def _grads(recipe, accum: int):
    cfg = load_config(None, TINY_TEXT)
    torch.manual_seed(0)
    model = build_model(cfg.model).double()
    objective = build(recipe).double()
    data = open_source(cfg.data.source, "train", cfg.data)
    training = TrainingSet(data, model.image_transform(True), seed=0, neg_per_image=1)
    batch = collate([training[k] for k in next(iter(StepBatchSampler(len(data), 16, 1, 0)))])
    ctx = StepContext(model, objective, frozenset(objective.requires))
    out = forward_backward(ctx, batch) if accum == 1 else grad_cache_backward(ctx, batch.split(accum))
    return float(out.loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "recipe",
    [[{"name": "simcse"}], [{"name": "matryoshka", "dims": [4, 8, 16], "term": "simcse"}, {"name": "uniformity"}]],
)
def test_text_pair_accumulation_equals_one_big_batch(recipe):
    loss_big, big = _grads(recipe, accum=1)
    loss_acc, acc = _grads(recipe, accum=4)
    assert loss_acc == pytest.approx(loss_big, rel=1e-12)
    assert "text_tower.token_embedding.weight" in big or any(n.startswith("text_tower") for n in big)
    assert not any(n.startswith("image_tower") for n in big)  # the anchor went through the text tower
    for name in big:
        torch.testing.assert_close(acc[name], big[name], rtol=1e-9, atol=1e-12, msg=name)


def test_a_text_pair_batch_encodes_the_anchor_with_the_text_tower():
    cfg = load_config(None, TINY_TEXT)
    model = build_model(cfg.model).eval()
    data = open_source(cfg.data.source, "train", cfg.data)
    training = TrainingSet(data, model.image_transform(True), seed=0, neg_per_image=1)
    batch = collate([training[(0, i)] for i in range(4)])
    assert batch.anchors == [data[i].anchor for i in range(4)] and batch.pixels.shape == (4, 0)
    enc = encode_batch(model, batch, requires=("neg_text",))
    with torch.no_grad():
        direct = model.encode_text(model.tokenize(batch.anchors))
    torch.testing.assert_close(enc.image, direct)
    assert enc.neg_text is not None and enc.neg_text.shape == (4, 1, 16)


@pytest.mark.slow
def test_a_text_run_reports_text_tasks_and_reloads_to_the_same_numbers(tmp_path):
    run = _train(tmp_path, TINY_TEXT)
    report = json.loads((run / "report.json").read_text())
    assert set(report["sts"]) == {"shapes-sts"}
    assert 0.0 < report["text_retrieval"]["cosine_mrr@10"] <= 1.0
    assert {"alignment", "uniformity", "anisotropy"} <= set(report["text_geometry"])
    assert "## Semantic textual similarity" in (run / "report.md").read_text()
    model = load_model(str(run))
    again = evaluate_sts(model.embedder.embed_texts, graded_pairs(600, seed=0))
    assert again["spearman_cosine"] == pytest.approx(report["sts"]["shapes-sts"]["spearman_cosine"], abs=1e-6)
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run), "--out", str(out), "--no-progress", "--no-cache"]) == 0
    evaluated = json.loads((out / "report.json").read_text())
    assert evaluated["text_retrieval"] == pytest.approx(report["text_retrieval"])


@pytest.mark.slow
def test_minilm_trains_on_text_pairs_in_its_own_space(tmp_path):
    overrides = [item for item in TINY_TEXT if not item.startswith(("model.width", "model.embed_dim", "objective"))] + [
        "model.text_tower=hf:minilm",
        "model.embed_dim=384",
        "model.context_length=32",
        "objective=[{name: simcse}, {name: hycd, alpha: 0.0}]",
        "train.steps=2",
        "train.batch_size=8",
        "train.lr=2e-5",
        "data.eval_size=16",
    ]
    run = _train(tmp_path, overrides)
    from safetensors import safe_open

    with safe_open(str(run / "checkpoints" / (run / "latest").read_text().strip() / "model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert not any(k.startswith(("text_proj", "image_proj")) for k in keys)  # no projection: MiniLM's own space
    report = json.loads((run / "report.json").read_text())
    assert report["sts"]["shapes-sts"]["spearman_cosine"] > 0.5
    # unsupervised SimCSE's two views of a sentence differ by dropout in training mode, not in eval mode
    model = load_model(str(run)).embedder
    tower = build_model(load_config(None, overrides).model).train()
    tokens = tower.tokenize(["a red circle", "a red circle"])
    with torch.no_grad():
        a, b = tower.encode_text(tokens)
    assert float(a @ b) < 0.9999
    torch.testing.assert_close(model.embed_texts(["a red circle"]), model.embed_texts(["a red circle"]))


def test_text_pairs_need_a_text_model_and_a_text_model_needs_text_pairs(tmp_path, capsys):
    _train(tmp_path, [item for item in TINY_TEXT if item != "model.image_tower=none"], expect=2)
    assert "is text pairs, which train a text model: set model.image_tower=none" in capsys.readouterr().err
    _train(tmp_path, [item for item in TINY_TEXT if not item.startswith("data.source")], expect=2)
    err = capsys.readouterr().err
    assert "model.image_tower=none makes a text model" in err and "synthetic:shapes has images" in err


def test_a_pairs_file_names_a_missing_column_and_counts_skipped_rows(tmp_path, capsys):
    rows = [{"q": f"query {i}", "d": f"document {i}"} for i in range(40)] + [{"q": "", "d": "orphan"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = [i for i in TINY_TEXT if not i.startswith(("data.source", "data.neg_per_image", "objective"))]
    base.append("objective=[{name: simcse, hard_negatives: false}]")  # the file has no negatives
    _train(tmp_path, [*base, f"data.source=pairs:{path}", "data.caption_columns=d"], expect=2)
    assert "no column 'anchor'" in capsys.readouterr().err
    run = _train(
        tmp_path,
        [
            *base,
            f"data.source=pairs:{path}",
            "data.anchor_column=q",
            "data.caption_columns=d",
            "data.on_error=skip",
            "data.test_fraction=0.25",
        ],
        name="file",
    )
    report = json.loads((run / "report.json").read_text())
    assert report["text_retrieval"]["cosine_accuracy@10"] > 0
    skipped = report["training_data"]["skipped_records"]
    in_training_split = split_of("", 0, 0.0, 0.25) == "train"  # the hash split of the empty anchor's row
    assert (skipped.get("empty_caption", 0) > 0) == in_training_split  # counted each time it was drawn


def test_eval_scores_an_sts_file_with_its_columns_named(tmp_path, capsys):
    path = tmp_path / "sts.tsv"
    pairs = graded_pairs(30, seed=1)
    path.write_text("a\tb\tgold\n" + "".join(f"{p.text_a}\t{p.text_b}\t{p.score}\n" for p in pairs))
    run = _train(tmp_path, TINY_TEXT)
    out = tmp_path / "eval"
    args = ["eval", "--checkpoint", str(run), "--task", "sts", "--sts", str(path), "--sts-columns", "a,b,gold"]
    assert main([*args, "--out", str(out), "--no-progress", "--no-cache"]) == 0
    report = json.loads((out / "report.json").read_text())
    expected = evaluate_sts(load_model(str(run)).embedder.embed_texts, pairs)
    assert report["sts"]["sts"]["spearman_cosine"] == pytest.approx(expected["spearman_cosine"], abs=1e-6)
    assert "STS sts" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(run), "--task", "sts", "--sts", str(path), "--out", str(out)]) == 2
    assert "no column 'sentence1'; it has a, b, gold" in capsys.readouterr().err


def test_input_label_contrast_trains_a_text_classifier_from_a_labelled_file(tmp_path):
    from contrastkit.data.shapes import SyntheticShapes

    world = SyntheticShapes("train", size=300, seed=0)
    rows = []
    for i in range(300):  # single-object captions, labelled by their shape
        scene = world.scene(i)
        if len(scene.objects) == 1:
            rows.append({"text": world.describe(i).captions[0], "shape": scene.objects[0].shape})
    rows.append({"text": "a caption without a label", "shape": ""})
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = [i for i in TINY_TEXT if not i.startswith(("data.source", "data.neg_per_image", "objective", "train.steps"))]
    run = _train(
        tmp_path,
        [
            *base,
            f"data.source=pairs:{path}",
            "data.anchor_column=text",
            "data.label_column=shape",
            "data.class_template=the shape {}",
            "data.test_fraction=0.3",
            "data.on_error=skip",
            "objective=[{name: label_contrast}]",
            "train.steps=40",
            "train.lr=3e-3",
        ],
    )
    report = json.loads((run / "report.json").read_text())
    source = open_source(
        f"pairs:{path}",
        "train",
        load_config(
            None,
            [
                f"data.source=pairs:{path}",
                "data.anchor_column=text",
                "data.label_column=shape",
                "data.class_template=the shape {}",
            ],
        ).data,
    )
    assert source.classnames == sorted({r["shape"] for r in rows if r["shape"]})
    first = source[0]
    assert first.captions == [f"the shape {source.classnames[first.label]}"]  # the positive is the class description
    chance = 1 / len(source.classnames)
    assert report["text_classification"]["acc1"] > chance + 0.3  # the shape word decides the class
    assert report["text_classification"]["classes"] == len(source.classnames)
